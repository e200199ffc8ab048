"""Acceptance benchmark: prune the reference models through the real CLI and measure what it cost.

For each model: draw ``--samples`` + ``--holdout`` random *training* images (seed ``--seed``), run
``python -m onnxprune MODEL OUT --calib calib.npy --samples S --holdout H --seed SEED --report r.json``
in a subprocess (the statistics on S images, the fidelity check on the other H; a subprocess so
that wall time and peak memory are those a user sees), then evaluate top-1 of the original and the pruned model
on the full test set. With ``--eps-l2 a,b,c`` it sweeps the main knob and also reports the
sparsest setting within ``--max-loss`` points.

    python tools/acceptance.py                              # defaults, LeNet-5 and VGG-16
    python tools/acceptance.py --models resnet18_cifar10 --seed 1 --out docs/results/guard-resnet18-seed1.json
    python tools/acceptance.py --models vgg16_cifar10 --eps-l2 0.5,1,2 --out docs/results/vgg-sweep.json
    python tools/acceptance.py --models vgg16_cifar10 --eps-l2 0.5,1 --extra "--param-weighting 0"
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import DATASETS, calibration_subset, shared_dir  # noqa: E402
from evaluate import top1  # noqa: E402


def prune_and_measure(model: Path, calib: Path, out: Path, extra: list[str]) -> dict:
    report_path = out.with_suffix(".json")
    cmd = [sys.executable, "-m", "onnxprune", str(model), str(out), "--calib", str(calib),
           "--report", str(report_path), "--quiet", *extra]
    subprocess.run(cmd, check=True)
    return json.loads(report_path.read_text())


def run(model_name: str, settings: list[list[str]], samples: int, seed: int, shared: Path | None,
        holdout: int = 0) -> list[dict]:
    model = shared_dir(shared) / "models" / f"{model_name}.onnx"
    load = DATASETS[model_name]
    x_train, _ = load("train")
    x_test, y_test = load("test")
    baseline = top1(model, x_test, y_test)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(tmp) / "calib.npy"
        # The statistics take ``samples`` of them, the CLI holds out the other ``holdout`` (--holdout).
        np.save(calib, calibration_subset(x_train, samples + holdout, seed))
        del x_train
        for extra in settings:
            out = Path(tmp) / "pruned.onnx"
            report = prune_and_measure(model, calib, out,
                                       ["--samples", str(samples), "--holdout", str(holdout), "--seed", str(seed)] + extra)
            accuracy = top1(out, x_test, y_test)
            rows.append({
                "model": model_name, "options": " ".join(extra) or "(defaults)", "samples": samples, "seed": seed,
                "top1_before": baseline, "top1_after": accuracy, "loss_pt": round(baseline - accuracy, 2),
                "params_before": report["params_before"], "params_after": report["params_after"],
                "params_removed": round(report["params_removed"], 4), "macs_removed": round(report["macs_removed"], 4),
                "seconds": report["seconds"], "peak_memory_mb": report["peak_memory_mb"],
                "timings": report["timings"], "fidelity": report.get("fidelity"), "guard": report.get("guard"),
            })
            print(_row(rows[-1]), flush=True)
    return rows


def _row(r: dict) -> str:
    return (f"| {r['model']} | {r['options']} | {r['top1_before']:.2f} | {r['top1_after']:.2f} | {r['loss_pt']:+.2f} "
            f"| {r['params_removed']:.1%} | {r['macs_removed']:.1%} | {r['seconds']:.0f} s | {r['peak_memory_mb']:.0f} MB |")


HEADER = ("| model | options | top-1 before | top-1 after | loss (pt) | params removed | MACs removed "
          "| wall time | peak memory |\n|---|---|---|---|---|---|---|---|---|")


def guard_table(paths: list[Path]) -> None:
    """The default runs' table (docs/fidelity.md): what the strength search chose, its held-out
    fidelity beside the true loss, and its wall time against the chosen trial's own."""
    print("| model | seed | eps_l2 chosen (trials) | params removed | MACs removed | held-out est. loss | "
          "held-out disagreement | true top-1 loss | wall time | chosen trial alone | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        for r in json.loads(path.read_text()):
            guard, fidelity = r["guard"], r["fidelity"]
            chosen = next(t for t in guard["trials"] if t["eps_l2"] == guard["eps_l2"])
            print(f"| {r['model']} | {r['seed']} | {guard['eps_l2']:g} ({len(guard['trials'])}"
                  f"{'' if guard['met'] else ', none within'}) | {r['params_removed']:.1%} | {r['macs_removed']:.1%} | "
                  f"{100 * fidelity['loss_estimate']:.2f} pt | {fidelity['disagreement']:.2%} | {r['loss_pt']:.2f} pt | "
                  f"{r['seconds']:.0f} s | {chosen['seconds']:.0f} s | {r['seconds'] / chosen['seconds']:.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["lenet5_mnist", "vgg16_cifar10"], choices=sorted(DATASETS))
    parser.add_argument("--eps-l2", default="", help="comma-separated --eps-l2 values to sweep (default: defaults only)")
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", type=int, default=1024,
                        help="more training images in the calibration file, held out by the CLI for its fidelity check")
    parser.add_argument("--max-loss", type=float, default=0.5, help="accuracy loss (pt) allowed for 'best sparsity'")
    parser.add_argument("--shared", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write all rows as JSON here")
    parser.add_argument("--extra", default="", help="more onnxprune options for every run, e.g. '--param-weighting 0'")
    parser.add_argument("--guard-table", type=Path, nargs="+", metavar="JSON",
                        help="print the table of default (strength-searched) runs from these --out files and exit")
    args = parser.parse_args()
    if args.guard_table:
        guard_table(args.guard_table)
        return
    extra = args.extra.split()
    settings = [extra] + [extra + ["--eps-l2", v] for v in args.eps_l2.split(",") if v]
    print(HEADER, flush=True)
    rows = [row for name in args.models
            for row in run(name, settings, args.samples, args.seed, args.shared, args.holdout)]
    for name in args.models:
        ok = [r for r in rows if r["model"] == name and r["loss_pt"] <= args.max_loss]
        if ok:
            best = max(ok, key=lambda r: r["params_removed"])
            print(f"best at <= {args.max_loss} pt loss, {name}: {best['params_removed']:.1%} params removed "
                  f"({best['options']}, {best['loss_pt']:+.2f} pt, {best['macs_removed']:.1%} MACs removed)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
