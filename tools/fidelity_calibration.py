"""Calibrate the fidelity guard: held-out calibration disagreement against the true top-1 loss.

For each (model, calibration draw, ε_L2): draw ``--samples`` + ``--holdout`` random *training*
images (seed = draw), prune with onnxprune.prune (the statistics on ``--samples`` of them, the rest
held out, as the CLI does), and record the held-out fidelity the report gives beside the top-1
of the original and the pruned model on the full test set, and their disagreement there. One JSON
object per line is appended to ``--out`` as each point finishes, so an interrupted run keeps its
points and a rerun skips them.

    python tools/fidelity_calibration.py --models lenet5_mnist --eps-l2 0.2,0.8,3.2,12.8 --draws 0,1,2
    python tools/train_small.py --arch mlp_mnist --out /tmp/mlp_mnist.onnx --epochs 2
    python tools/fidelity_calibration.py --models mlp_mnist=/tmp/mlp_mnist.onnx --eps-l2 0.2,0.8,3.2 --draws 0,1
    python tools/fidelity_calibration.py --summary docs/results/fidelity-calibration.jsonl --plot docs/fidelity.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
from datasets import DATASETS, LOADERS, calibration_subset, shared_dir  # noqa: E402
from evaluate import predict  # noqa: E402

import onnxprune  # noqa: E402

OUT = ROOT / "docs" / "results" / "fidelity-calibration.jsonl"


def done(out: Path) -> set[tuple]:
    if not out.exists():
        return set()
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {(r["model"], r["draw"], r["eps_l2"], r["samples"], r["holdout"]) for r in rows}


def run(model_name: str, draws: list[int], eps_values: list[float], samples: int, holdout: int,
        out: Path, shared: str | None) -> None:
    if "=" in model_name:  # NAME_DATA=PATH: a model of one's own (tools/train_small.py), on dataset DATA
        model_name, path = model_name.split("=", 1)
        model_path, load = Path(path), LOADERS[model_name.rsplit("_", 1)[1]]
    else:
        model_path, load = shared_dir(shared) / "models" / f"{model_name}.onnx", DATASETS[model_name]
    x_train, _ = load("train")
    x_test, y_test = load("test")
    original_logits = predict(model_path, x_test)
    before = float(np.mean(original_logits.argmax(1) == y_test))
    skip = done(out)
    with TemporaryModel() as pruned_path:
        for draw in draws:
            calib = calibration_subset(x_train, samples + holdout, seed=draw)
            for eps in eps_values:
                if (model_name, draw, eps, samples, holdout) in skip:
                    continue
                started = time.perf_counter()
                result = onnxprune.prune(str(model_path), calib, eps_l2=eps, seed=draw, max_samples=samples,
                                         holdout=holdout)
                seconds = time.perf_counter() - started
                onnxprune_save(result.model, pruned_path)
                logits = predict(pruned_path, x_test)
                fidelity = result.report.fidelity
                row = {
                    "model": model_name, "draw": draw, "eps_l2": eps, "samples": samples, "holdout": holdout,
                    "params_removed": round(result.report.params_removed, 5),
                    "macs_removed": round(result.report.macs_removed, 5),
                    "held_disagreement": fidelity.disagreement, "held_relative_error": round(fidelity.relative_error, 5),
                    "held_samples": fidelity.samples, "held_loss_estimate": fidelity.loss_estimate,
                    "test_loss_estimate": loss_estimate(original_logits, logits),
                    "test_top1_before": before, "test_top1_after": float(np.mean(logits.argmax(1) == y_test)),
                    "test_disagreement": float(np.mean(logits.argmax(1) != original_logits.argmax(1))),
                    "test_relative_error": float(np.linalg.norm(logits - original_logits)
                                                 / np.linalg.norm(original_logits)),
                    "seconds": round(seconds, 1),
                }
                row["loss_pt"] = round(100 * (row["test_top1_before"] - row["test_top1_after"]), 3)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{model_name} draw {draw} eps {eps:g}: {row['params_removed']:.1%} params, held-out "
                      f"disagreement {row['held_disagreement']:.2%} rel {row['held_relative_error']:.3f} est. loss "
                      f"{100 * row['held_loss_estimate']:.2f} pt (test {100 * row['test_loss_estimate']:.2f}); test "
                      f"loss {row['loss_pt']:.2f} pt, disagreement {row['test_disagreement']:.2%} ({seconds:.0f}s)",
                      flush=True)


def loss_estimate(original: np.ndarray, pruned: np.ndarray) -> float:
    """The estimated top-1 loss of measure/fidelity.py, on the test set's logits."""
    p = np.exp(original - original.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    rows = np.arange(len(p))
    return float(np.mean(p[rows, original.argmax(1)] - p[rows, pruned.argmax(1)]))


class TemporaryModel:
    def __enter__(self) -> Path:
        import tempfile
        self.dir = tempfile.TemporaryDirectory()
        return Path(self.dir.name) / "pruned.onnx"

    def __exit__(self, *exc) -> None:
        self.dir.cleanup()


def onnxprune_save(model, path: Path) -> None:
    import onnx
    onnx.save(model, str(path))


def summary(out: Path) -> None:
    """Per (model, hold-out, ε_L2): mean ± sd over draws of each measure (rows from before the
    loss estimate was recorded show '—' there)."""
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    keys = sorted({(r["model"], r["holdout"], r["eps_l2"]) for r in rows})
    print("| model | held out | eps_l2 | draws | params removed | held-out est. loss (pt) | held-out disagreement | "
          "test est. loss (pt) | true top-1 loss (pt) | test disagreement |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model, holdout, eps in keys:
        sel = [r for r in rows if r["model"] == model and r["eps_l2"] == eps and r["holdout"] == holdout]

        def ms(field: str, scale: float = 1.0, fmt: str = ".2f") -> str:
            if any(r.get(field) is None for r in sel):
                return "—"
            v = np.array([r[field] for r in sel], dtype=float) * scale
            return f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt}}" if len(v) > 1 else f"{v.mean():{fmt}}"

        print(f"| {model} | {holdout} | {eps:g} | {len(sel)} | {ms('params_removed', 100, '.1f')} % | "
              f"{ms('held_loss_estimate', 100)} | {ms('held_disagreement', 100)} % | {ms('test_loss_estimate', 100)} | "
              f"{ms('loss_pt')} | {ms('test_disagreement', 100)} % |")


def plot(out: Path, path: Path) -> None:
    """True top-1 loss against the two held-out measures, one point per (model, draw, ε_L2)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("held_loss_estimate") is not None and r["holdout"] == 1024]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for model, marker in (("lenet5_mnist", "o"), ("vgg16_cifar10", "s"), ("resnet18_cifar10", "^"),
                          ("mlp_mnist", "D")):
        sel = [r for r in rows if r["model"] == model]
        for ax, field in zip(axes, ("held_disagreement", "held_loss_estimate")):
            ax.scatter([100 * r[field] for r in sel], [r["loss_pt"] for r in sel], marker=marker, label=model)
    for ax, title, bound in zip(axes, ("held-out top-1 disagreement (%)", "held-out estimated top-1 loss (pt)"),
                                (2.0, 0.5)):
        ax.set_xscale("log"), ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.axvline(bound, color="grey", linestyle="--", linewidth=1)
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel(title + f"; default bound {bound:g}")
        ax.set_ylabel("true top-1 loss on the full test set (pt)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle("Label-free fidelity on 1,024 held-out calibration (training) images against the true loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet5_mnist,vgg16_cifar10,resnet18_cifar10")
    ap.add_argument("--eps-l2", default="0.2,0.8,3.2")
    ap.add_argument("--draws", default="0")
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--holdout", type=int, default=256)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--shared")
    ap.add_argument("--summary", type=Path, help="print the table of a results file and exit")
    ap.add_argument("--plot", type=Path, help="with --summary: also draw the loss against the measures here")
    args = ap.parse_args()
    if args.summary:
        summary(args.summary)
        if args.plot:
            plot(args.summary, args.plot)
        return 0
    for model in args.models.split(","):
        run(model, [int(d) for d in args.draws.split(",")], [float(e) for e in args.eps_l2.split(",")],
            args.samples, args.holdout, args.out, args.shared)
    return 0


if __name__ == "__main__":
    sys.exit(main())
