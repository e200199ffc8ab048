"""Run the CLI over the "models from the wild" corpus (issue 14) and check it independently.

    python tools/corpus_models.py                    # build the corpus (once; cached)
    python tools/corpus.py [--models a,b] [--timeout 300] [--timeout-for vgg19=900,...] [--samples 8]
                           [--corpus /tmp/onnxprune-corpus] [--src CHECKOUT]
                           [--md docs/corpus.md] [--json docs/results/corpus.json]

For every model of the corpus's manifest it runs, in a subprocess,
``python -m onnxprune MODEL OUT --calib CALIB --report R.json --quiet`` and records:

* the exit code, the first line of stderr and (on failure) its last line, the wall time;
* whether the pruned model passes ``onnx.checker`` (full check) and runs in onnxruntime on one
  calibration sample with the original's input and output names and output shapes;
* the report's params/MACs before and after against ``tools/count.py``'s independent count of the
  original and the pruned model at the same concrete input shape (MATCH / MISMATCH);
* the layers whose input channels were frozen and why (report ``layers[i].frozen``) and the linear
  nodes that were skipped (report ``skipped``), with the reasons grouped (node names stripped).

Writes a markdown table (``--md``) and the raw rows (``--json``); both are rewritten after every
model, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import count as count_tool  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _first(lines: list[str]) -> str:
    return next((ln.strip() for ln in lines if ln.strip()), "")


def _reason_kind(reason: str) -> str:
    """A frozen/skipped reason with node and tensor names removed, to group them."""
    r = re.sub(r"'[^']*'", "'…'", reason)
    r = re.sub(r'"[^"]*"', "'…'", r)
    r = re.sub(r"\b\d+\b", "N", r)
    return r


def _check_output_model(orig_path: str, pruned_path: str, calib: np.ndarray, input_name: str) -> dict:
    import onnxruntime as ort

    res: dict = {"checker": None, "ort": None, "same_io": None, "same_output_shapes": None}
    try:
        onnx.checker.check_model(pruned_path, full_check=True)
        res["checker"] = "ok"
    except Exception as e:  # noqa: BLE001
        res["checker"] = f"{type(e).__name__}: {_first(str(e).splitlines())}"[:300]
    try:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        a = ort.InferenceSession(orig_path, so, providers=["CPUExecutionProvider"])
        b = ort.InferenceSession(pruned_path, so, providers=["CPUExecutionProvider"])
        ins_a, ins_b = [i.name for i in a.get_inputs()], [i.name for i in b.get_inputs()]
        outs_a, outs_b = [o.name for o in a.get_outputs()], [o.name for o in b.get_outputs()]
        res["same_io"] = ins_a == ins_b and outs_a == outs_b
        if not res["same_io"]:
            res["io_detail"] = {"inputs": [ins_a, ins_b], "outputs": [outs_a, outs_b]}
        feed = {input_name: calib[:1]}
        ya, yb = a.run(None, feed), b.run(None, {input_name: calib[:1]} if input_name in ins_b else feed)
        res["ort"] = "ok"
        res["same_output_shapes"] = [y.shape for y in ya] == [y.shape for y in yb]
        res["finite"] = bool(all(np.isfinite(y).all() for y in yb))
    except Exception as e:  # noqa: BLE001
        res["ort"] = f"{type(e).__name__}: {_first(str(e).splitlines())}"[:300]
    return res


def symbolic_batch_copy(src: str, dst: Path) -> str:
    """A copy of ``src`` whose real inputs' and outputs' first dim is the symbolic ``N`` (value_info dropped).

    A diagnostic workaround, not part of the corpus: it shows what the pruner does past a static
    batch 1 (Reshape targets that hard-code the 1 still fail at run time).
    """
    m = onnx.load(src)
    inits = {i.name for i in m.graph.initializer}
    for vi in [i for i in m.graph.input if i.name not in inits] + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "N"
    del m.graph.value_info[:]
    onnx.save(m, str(dst))
    return str(dst)


def fewer_samples(calib: str, n: int, dst: Path) -> str:
    """The first ``n`` calibration samples of ``calib`` written to ``dst`` (``calib`` itself when it has <= n)."""
    data = np.load(calib, mmap_mode="r")
    if len(data) <= n:
        return calib
    np.save(dst, np.ascontiguousarray(data[:n]))
    return str(dst)


def timeouts_for(spec: str) -> dict[str, float]:
    """``'vgg19=900,resnet=600'`` -> {substring: seconds}; a model takes the first substring its name contains."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, _, secs = part.partition("=")
        out[key] = float(secs)
    return out


def run_model(name: str, entry: dict, work: Path, timeout: float, src: Path = ROOT) -> dict:
    row: dict = {"timeout_s": timeout, "samples": int(np.load(entry["calib"], mmap_mode="r").shape[0]),
                 "model": name, "source": entry.get("source", ""), "opset": entry.get("opset"),
                 "ir_version": entry.get("ir_version"), "shape": entry["shape"], "symbolic": entry.get("symbolic", {})}
    out = work / f"{name}_pruned.onnx"
    rep = work / f"{name}_report.json"
    for p in (out, rep):
        if p.exists():
            p.unlink()
    cmd = [sys.executable, "-m", "onnxprune", entry["model"], str(out), "--calib", entry["calib"],
           "--report", str(rep), "--quiet"]
    t0 = time.time()
    try:
        env = dict(os.environ, PYTHONPATH=str(src) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(src), env=env)
        row["exit"] = proc.returncode
        err = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Warning" not in ln]
        row["stderr_first"] = _first(err)[:300]
        row["stderr_last"] = (err[-1].strip() if err else "")[:300]
        row["stdout"] = proc.stdout.strip()[-300:]
    except subprocess.TimeoutExpired:
        row["exit"] = "timeout"
        row["stderr_first"] = f"timed out after {timeout:.0f}s"
        row["stderr_last"] = ""
    row["wall_s"] = round(time.time() - t0, 1)

    shapes = {entry["input"]: entry["shape"]}
    try:
        row["count_before"] = count_tool.count(entry["model"], shapes)
    except Exception as e:  # noqa: BLE001
        row["count_before"] = {"error": f"{type(e).__name__}: {e}"[:300]}

    if row["exit"] == 0 and out.exists():
        calib = np.load(entry["calib"], mmap_mode="r")
        row["output"] = _check_output_model(entry["model"], str(out), np.ascontiguousarray(calib[:1]), entry["input"])
        try:
            row["count_after"] = count_tool.count(str(out), shapes)
        except Exception as e:  # noqa: BLE001
            row["count_after"] = {"error": f"{type(e).__name__}: {e}"[:300]}
    if rep.exists():
        r = json.loads(rep.read_text())
        row["report"] = {k: r.get(k) for k in ("params_before", "params_after", "macs_before", "macs_after",
                                                 "params_removed", "macs_removed", "seconds", "peak_memory_mb")}
        layers = r.get("layers", [])
        row["layers"] = len(layers)
        row["frozen"] = {ly["name"]: ly["frozen"] for ly in layers if ly.get("frozen")}
        row["skipped"] = r.get("skipped", {})
        row["channels"] = [sum(ly["channels_before"] for ly in layers), sum(ly["channels_after"] for ly in layers)]
        row["frozen_kinds"] = dict(Counter(_reason_kind(v) for v in row["frozen"].values()).most_common())
        row["skipped_kinds"] = dict(Counter(_reason_kind(v) for v in row["skipped"].values()).most_common())
        cmp = {}
        for key, side, field in (("params_before", "count_before", "params"), ("macs_before", "count_before", "macs"),
                                 ("params_after", "count_after", "params"), ("macs_after", "count_after", "macs")):
            mine = row.get(side, {}).get(field)
            theirs = r.get(key)
            if mine is None or theirs is None:
                cmp[key] = {"report": theirs, "count": mine, "status": "n/a"}
            else:
                cmp[key] = {"report": theirs, "count": mine, "status": "MATCH" if mine == theirs else "MISMATCH",
                            "diff": theirs - mine, "rel": (theirs - mine) / mine if mine else None}
        row["compare"] = cmp
    row["status"] = _status(row)
    return row


def _status(row: dict) -> str:
    if row["exit"] == "timeout":
        return "TIMEOUT"
    if row["exit"] != 0:
        if row["exit"] in (1, 2) and "internal error" not in (row.get("stderr_last") or ""):
            return f"REFUSED (exit {row['exit']})"
        return f"CRASH (exit {row['exit']})"
    o = row.get("output", {})
    bad = [k for k in ("checker", "ort") if o.get(k) != "ok"]
    if o.get("same_io") is False:
        bad.append("io names")
    if o.get("same_output_shapes") is False:
        bad.append("output shapes")
    return "ok" if not bad else "BROKEN OUTPUT (" + ", ".join(bad) + ")"


def _fmt(n) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.3f}M" if abs(n) >= 1e5 else str(n)


def _cmp_cell(c: dict | None) -> str:
    if not c or c.get("status") == "n/a":
        return "–"
    if c["status"] == "MATCH":
        return f"✓ {_fmt(c['report'])}"
    rel = f", {c['rel']:+.2%}" if c.get("rel") is not None else ""
    return f"**✗ {c['report']:,} vs {c['count']:,}** ({c['report'] - c['count']:+,}{rel})"


def write_markdown(rows: list[dict], path: Path, cmdline: str, code: str = "") -> None:
    lines = [
        "# Corpus of models from the wild (issue 14)",
        "",
        "Built by `python tools/corpus_models.py` (ONNX model-zoo light graphs with random weights; torchvision",
        "and hand-written PyTorch exports at static batch 1, opsets 9–20), run by `" + cmdline + "`:",
        "each model through `python -m onnxprune MODEL OUT --calib CALIB --report R.json --quiet` at the defaults,",
        "random calibration samples (32 unless the 'samples' column says fewer). Counts: the report's figure vs `tools/count.py`'s independent count",
        "(✓ equal; ✗ report vs count, relative difference). 'frozen' = layers whose input channels were not",
        "pruned / all layers of the report." + (f" Code: {code}." if code else ""),
        "",
        "| model | opset | status | params before | params after | MACs before | MACs after | removed (params / MACs) | frozen | skipped | samples | wall (limit) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r.get("compare", {})
        rep = r.get("report") or {}
        removed = (f"{rep['params_removed']:.1%} / {rep['macs_removed']:.1%}" if rep.get("params_removed") is not None
                   else "–")
        status = r["status"]
        if r["exit"] != 0:
            status += f": `{(r.get('stderr_last') or r.get('stderr_first'))[:140]}`"
        frozen = f"{len(r.get('frozen', {}))}/{r.get('layers', '–')}" if "layers" in r else "–"
        lines.append(f"| {r['model']} | {r.get('opset')} | {status} | {_cmp_cell(c.get('params_before'))} | "
                     f"{_cmp_cell(c.get('params_after'))} | {_cmp_cell(c.get('macs_before'))} | "
                     f"{_cmp_cell(c.get('macs_after'))} | {removed} | {frozen} | {len(r.get('skipped', {}))} | "
                     f"{r.get('samples', 32)} | {r['wall_s']:.0f}s ({r.get('timeout_s', 300):.0f}s) |")
    lines += ["", "## Why layers froze or were skipped", ""]
    if not any(r.get("frozen_kinds") or r.get("skipped_kinds") for r in rows):
        lines.append("(no report: no model finished)")
    for r in rows:
        kinds = list(r.get("frozen_kinds", {}).items())
        skinds = list(r.get("skipped_kinds", {}).items())
        if not kinds and not skinds:
            continue
        lines.append(f"* **{r['model']}**: " + "; ".join(
            [f"frozen ×{n}: {k}" for k, n in kinds] + [f"skipped ×{n}: {k}" for k, n in skinds]))
    failures = [r for r in rows if r["status"] != "ok"]
    if failures:
        lines += ["", "## Failures", ""]
        for r in failures:
            detail = r.get("stderr_last") or r.get("stderr_first")
            if r["exit"] == 0:
                detail = json.dumps(r.get("output"))
            lines.append(f"* **{r['model']}** ({r['status']}): `{detail}`")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def render(json_paths: list[str], md: Path) -> None:
    """Rewrite the markdown from saved results; a second file's table becomes a second section."""
    parts = []
    for i, jp in enumerate(json_paths):
        data = json.loads(Path(jp).read_text())
        for r in data["rows"]:
            r["status"] = _status(r)
        tmp = md.with_suffix(f".part{i}.md")
        write_markdown(data["rows"], tmp, data.get("cmdline", "python tools/corpus.py"), data.get("code", ""))
        text = tmp.read_text()
        tmp.unlink()
        if i:
            text = text.replace("# Corpus of models from the wild (issue 14)", "# " + data.get("title", jp), 1)
            text = "\n".join(("#" + ln) if ln.startswith("#") else ln for ln in text.splitlines()) + "\n"
        parts.append(text)
    md.write_text("\n".join(parts))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="/tmp/onnxprune-corpus")
    ap.add_argument("--models", default="", help="comma-separated names (default: all in the manifest)")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--timeout-for", default="",
                    help="per-model timeouts: comma-separated NAME_SUBSTRING=SECONDS (e.g. vgg19=900,zfnet=900)")
    ap.add_argument("--samples", type=int, default=0,
                    help="use only the first N calibration samples of every model (0: all; the big zoo models "
                         "on 2 shared cores: 8)")
    ap.add_argument("--samples-for", default="",
                    help="per-model sample counts: NAME_SUBSTRING=N,... (overrides --samples for those models)")
    ap.add_argument("--symbolic-batch", action="store_true",
                    help="diagnostic: prune a copy of each model whose batch dim is symbolic (N) instead")
    ap.add_argument("--src", default=str(ROOT),
                    help="checkout whose onnxprune package is run (PYTHONPATH); default this one. A frozen "
                         "copy of a commit: mkdir D && git archive HEAD | tar -x -C D")
    ap.add_argument("--md", default=str(ROOT / "docs" / "corpus.md"))
    ap.add_argument("--json", default=str(ROOT / "docs" / "results" / "corpus.json"))
    ap.add_argument("--render", metavar="JSON", action="append", default=[],
                    help="only rewrite --md from earlier --json results (repeatable: one section each)")
    args = ap.parse_args(argv)
    if args.render:
        render(args.render, Path(args.md))
        return 0
    corpus = Path(args.corpus)
    manifest = json.loads((corpus / "manifest.json").read_text())
    names = [m for m in args.models.split(",") if m] or list(manifest["models"])
    work = corpus / ("runs-N" if args.symbolic_batch else "runs")
    work.mkdir(exist_ok=True)
    rows = []
    code = args.src if args.src != str(ROOT) else "this checkout"
    if (Path(args.src) / "COMMIT").exists():
        code = "commit " + (Path(args.src) / "COMMIT").read_text().strip()[:12]
    cmdline = "python tools/corpus.py" + (f" --models {args.models}" if args.models else "") + \
        (f" --timeout {args.timeout:g}" if args.timeout != 300 else "") + \
        (f" --timeout-for {args.timeout_for}" if args.timeout_for else "") + \
        (f" --samples {args.samples}" if args.samples else "") + \
        (f" --samples-for {args.samples_for}" if args.samples_for else "") + \
        (" --symbolic-batch" if args.symbolic_batch else "")
    per_timeout = timeouts_for(args.timeout_for)
    per_samples = {k: int(v) for k, v in timeouts_for(args.samples_for).items()}
    for name in names:
        if name not in manifest["models"]:
            print(f"{name}: not in the corpus ({manifest.get('skipped', {}).get(name, 'unknown name')})")
            continue
        entry = manifest["models"][name]
        if args.symbolic_batch:
            entry = dict(entry, model=symbolic_batch_copy(entry["model"], work / f"{name}_N.onnx"),
                         source=entry.get("source", "") + "; batch dim made symbolic (--symbolic-batch)")
        n_samples = next((v for k, v in per_samples.items() if k in name), args.samples)
        if n_samples:
            entry = dict(entry, calib=fewer_samples(entry["calib"], n_samples, work / f"{name}_calib{n_samples}.npy"))
        timeout = next((v for k, v in per_timeout.items() if k in name), args.timeout)
        row = run_model(name, entry, work, timeout, Path(args.src))
        rows.append(row)
        c = row.get("compare", {})
        cmp = " ".join(f"{k}={v['status']}" + (f"({v['report']} vs {v['count']})" if v["status"] == "MISMATCH" else "")
                       for k, v in c.items())
        print(f"{name:<24} {row['status']:<28} {row['wall_s']:>6.1f}s {cmp} frozen {len(row.get('frozen', {}))}"
              f"/{row.get('layers', '-')}" + (f"  | {row['stderr_last']}" if row["exit"] != 0 else ""), flush=True)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"code": code, "cmdline": cmdline, "title": (
            "Diagnostic: the same corpus with the batch dim made symbolic" if args.symbolic_batch else
            "Corpus of models from the wild (issue 14)"), "skipped_models": manifest.get("skipped", {}), "rows": rows},
                                              indent=2, default=str))
        write_markdown(rows, Path(args.md), cmdline, code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
