"""Top-1 accuracy of an ONNX classifier with onnxruntime (CPU).

CLI::

    python tools/evaluate.py MODEL.onnx --data mnist|cifar10 [--limit N] [--shared DIR]

``--data`` defaults to the dataset of the model file stem (e.g. ``lenet5_mnist``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

try:  # imported as part of the repo (tools/ on a package path)
    from tools.datasets import DATASETS, LOADERS, calibration_subset
except ImportError:  # run as a script: tools/ itself is on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from datasets import DATASETS, LOADERS, calibration_subset  # type: ignore[no-redef]

__all__ = ["predict", "top1"]


def _session(model_path: str | os.PathLike[str]) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])


def predict(model_path: str | os.PathLike[str], x: np.ndarray, batch: int = 500) -> np.ndarray:
    """Return the logits (output 0) of the model on ``x``, computed in batches of ``batch``."""
    sess = _session(model_path)
    name = sess.get_inputs()[0].name
    outs = [
        sess.run(None, {name: np.ascontiguousarray(x[i:i + batch], dtype=np.float32)})[0]
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(outs, axis=0)


def top1(model_path: str | os.PathLike[str], x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    """Return the top-1 accuracy in percent of the model on ``(x, y)``."""
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length ({len(x)} vs {len(y)})")
    logits = predict(model_path, x, batch)
    return float(np.mean(logits.argmax(axis=1) == np.asarray(y)) * 100.0)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: print the top-1 accuracy on the test split."""
    ap = argparse.ArgumentParser(description="Top-1 accuracy of an ONNX classifier (onnxruntime CPU).")
    ap.add_argument("model", help="path to the .onnx model")
    ap.add_argument("--data", choices=sorted(LOADERS), help="dataset (default: from the model name)")
    ap.add_argument("--split", choices=("train", "test"), default="test")
    ap.add_argument("--limit", type=int, help="evaluate on a random subset of this size (seed 0)")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--shared", help="shared folder (default: $ONNXPRUNE_SHARED or ../shared)")
    args = ap.parse_args(argv)
    if args.shared:
        os.environ["ONNXPRUNE_SHARED"] = args.shared
    if args.data:
        loader = LOADERS[args.data]
    else:
        stem = Path(args.model).stem
        key = next((k for k in DATASETS if stem.startswith(k)), None)
        if key is None:
            ap.error(f"cannot infer the dataset from {stem!r}; pass --data")
        loader = DATASETS[key]
    x, y = loader(args.split)
    if args.limit:
        idx = calibration_subset(np.arange(len(x)), args.limit, seed=0)
        x, y = x[idx], y[idx]
    t0 = time.perf_counter()
    acc = top1(args.model, x, y, batch=args.batch)
    dt = time.perf_counter() - t0
    print(f"{acc:.2f}")
    print(f"# {Path(args.model).name}: top-1 {acc:.2f}% on {len(y)} {args.split} images "
          f"({dt:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
