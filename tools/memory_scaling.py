"""Memory and time against the calibration count: prune VGG-16 / CIFAR-10 at several sample counts.

For each count N: N random *training* images (seed 0, tools/datasets.py) are written to a .npy,
and ``python -m onnxprune vgg16_cifar10.onnx OUT --calib calib.npy --samples N -v --report r.json``
runs in a child process; its peak resident memory is the child's own high-water mark (VmHWM, as the
report gives it; the kernel's ru_maxrss of the child, from os.wait4, is recorded too: it cannot be
below the parent's peak, so the calibration files are written by another child and this process
stays small), the wall time is the clock around it, the time breakdown comes from the report.
With ``--activation-memory inf`` the activations never leave memory (the cache before the store).

    nice -n 10 python tools/memory_scaling.py --samples 512,2048,8192 --out docs/results/memory-scaling.json

``--store-speed R`` instead times what the disk costs: the segmented forward of the original
network over the first count's images plus one read of every layer's input (as the statistics
read it), all in memory and all on disk (budget 0) alternately, R times each, no solver.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import shared_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Run in a child: the 50,000 decoded training images (614 MB) would raise every later child's ru_maxrss.
WRITE_CALIBRATION = """
import sys
import numpy as np
from datasets import calibration_subset, cifar10
x, _ = cifar10("train")
for n in sys.argv[3].split(","):
    np.save(f"{sys.argv[1]}/calib{n}.npy", calibration_subset(x, int(n), int(sys.argv[2])))
"""


def prune_child(model: Path, calib: Path, samples: int, out: Path, extra: list[str]) -> dict:
    """One CLI run in a child process: wall time, the child's peak RSS, its report and its output."""
    report_path = out.with_suffix(".json")
    cmd = [sys.executable, "-m", "onnxprune", str(model), str(out), "--calib", str(calib), "--samples", str(samples),
           "--report", str(report_path), "--verbose", "--quiet", *extra]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with open(out.with_suffix(".log"), "w+") as log:
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        log.seek(0)
        output = log.read()
    if child.returncode != 0:
        raise SystemExit(f"memory_scaling: {' '.join(cmd)} failed:\n{output}")
    report = json.loads(report_path.read_text())
    return {
        "samples": samples, "options": " ".join(extra) or "(defaults)",
        "wall_seconds": round(seconds, 1), "peak_rss_mb": round(report["peak_memory_mb"], 1),
        "ru_maxrss_mb": round(usage.ru_maxrss / 1024, 1), "report_seconds": report["seconds"],  # Linux: KB
        "timings": report["timings"], "activations": report["activations"],
        "params_removed": round(report["params_removed"], 4), "macs_removed": round(report["macs_removed"], 4),
        "model_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "verbose": output.strip().splitlines(),
    }


STORE_SPEED = """
import sys, time
import numpy as np
from onnxprune.calib.runner import SegmentRunner
from onnxprune.calib.store import MB, ActivationStore
from onnxprune.graph.io import load_model, to_graph
model, x = load_model(sys.argv[1]), np.load(sys.argv[2])
for budget in (float("inf"), 0.0) * int(sys.argv[3]):
    graph, start = to_graph(model), time.perf_counter()
    with ActivationStore(memory_limit=budget * MB) as store:
        runner = SegmentRunner(graph, {graph.inputs[0].name: store.wrap(x)}, store)
        for node in [node for node in graph.nodes if node.op in ("Conv", "Gemm")]:
            runner.advance_to(node.name)
            for batch in runner.cache[node.inputs[0].name].batches(128):
                pass
        print(f"| {len(x):,} | {'memory' if budget else 'disk'} | {time.perf_counter() - start:.1f} s "
              f"| {store.io_seconds:.1f} s | {store.bytes_written / MB:,.0f} MB |", flush=True)
"""


def row(r: dict) -> str:
    t = r["timings"]
    solver = t["solve"] + t["refit"]
    once = t["forward_once"]
    return (f"| {r['samples']:,} | {r['options']} | {r['wall_seconds']:.0f} s | {r['peak_rss_mb']:,.0f} MB "
            f"| {r['activations']['written_mb']:,.0f} MB | {t['forward']:.0f} / {t['statistics']:.0f} / {solver:.0f} "
            f"/ {t['store_io']:.1f} s | {once:.1f} s | {(r['report_seconds'] - t.get('measure', 0) - solver) / once:.1f} |")


HEADER = ("| samples | options | wall time | peak RSS | written to disk | forward / statistics / solver / disk I/O "
          "| one forward pass | (total − solver) / pass |\n|---|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default="512,2048,8192", help="comma-separated calibration counts")
    parser.add_argument("--activation-memory", help="passed to the CLI (e.g. inf: the in-memory cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store-speed", type=int, metavar="R", help="time the store on disk against memory instead")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here (after every run)")
    parser.add_argument("--shared", help="shared folder (default: $ONNXPRUNE_SHARED or ../shared)")
    args = parser.parse_args()
    if args.shared:
        os.environ["ONNXPRUNE_SHARED"] = args.shared  # where the dataset loaders look too
    model = shared_dir() / "models" / "vgg16_cifar10.onnx"
    extra = ["--activation-memory", args.activation_memory] if args.activation_memory else []
    counts = [int(n) for n in args.samples.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-c", WRITE_CALIBRATION, tmp, str(args.seed), ",".join(map(str, counts))],
                       cwd=Path(__file__).resolve().parent, check=True)
        if args.store_speed:
            print("| samples | activations | forward + reads | of which disk I/O | written |\n|---|---|---|---|---|",
                  flush=True)
            subprocess.run([sys.executable, "-c", STORE_SPEED, str(model), f"{tmp}/calib{counts[0]}.npy",
                            str(args.store_speed)], cwd=ROOT, check=True)
            return
        print(HEADER, flush=True)
        for n in counts:
            calib = Path(tmp) / f"calib{n}.npy"
            rows.append(prune_child(model, calib, n, Path(tmp) / f"pruned{n}.onnx", extra))
            calib.unlink()
            if args.out:
                args.out.write_text(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                                                "rows": rows}, indent=2) + "\n")
            print(row(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
