"""Dataset loaders for the shared reference data (MNIST, CIFAR-10).

The shared read-only folder is located, in order of precedence, from the
``--shared`` CLI option, the ``ONNXPRUNE_SHARED`` environment variable, or
``../shared`` relative to the repository root.  Preprocessing follows
``shared/data/README.md`` exactly.

CLI::

    python tools/datasets.py mnist --split test
    python tools/datasets.py cifar10 --split train   # decodes and caches once
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATASETS",
    "LOADERS",
    "MNIST_MEAN",
    "MNIST_STD",
    "cache_dir",
    "calibration_subset",
    "cifar10",
    "cifar10_uint8",
    "mnist",
    "shared_dir",
]

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
_SPLITS = ("train", "test")


def shared_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the shared read-only folder (``data/`` and ``models/`` live there).

    Precedence: ``override`` argument, ``$ONNXPRUNE_SHARED``, then
    ``<repo root>/../shared``.
    """
    if override is not None:
        return Path(override).expanduser().resolve()
    env = os.environ.get("ONNXPRUNE_SHARED")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[1].parent / "shared"


def cache_dir() -> Path:
    """Return (and create) the decoded-data cache folder ``~/.cache/onnxprune``."""
    path = Path.home() / ".cache" / "onnxprune"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


def mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST ``split`` ("train" or "test") from ``shared/data/mnist.npz``.

    Returns ``x`` float32 (N, 1, 28, 28) normalised as ``(x/255 - 0.1307)/0.3081``
    and ``y`` int64 (N,).
    """
    _check_split(split)
    with np.load(shared_dir() / "data" / "mnist.npz") as f:
        x = f[f"x_{split}"]
        y = f[f"y_{split}"]
    xf = (x.astype(np.float32) / np.float32(255.0) - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    return xf[:, None, :, :].astype(np.float32, copy=False), y.astype(np.int64)


def _decode_cifar10(zip_path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode every JPEG of ``split`` in the zip to uint8 NHWC RGB (sorted by class, then name)."""
    from PIL import Image  # imported lazily: only needed for the first decode

    images: list[np.ndarray] = []
    labels: list[int] = []
    with zipfile.ZipFile(zip_path) as zf:
        names = [n for n in zf.namelist() if n.startswith(f"{split}/") and n.lower().endswith(".jpg")]
        index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
        entries = sorted((index[n.split("/")[1]], n) for n in names)
        for label, name in entries:
            with Image.open(io.BytesIO(zf.read(name))) as im:
                images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def cifar10_uint8(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return CIFAR-10 ``split`` as raw uint8 NHWC RGB images and int64 labels.

    The first call decodes ``shared/data/cifar10-jpeg.zip`` (~15 s) and caches
    the arrays as ``~/.cache/onnxprune/cifar10-<split>-<zipsize>.npz``.
    """
    _check_split(split)
    zip_path = shared_dir() / "data" / "cifar10-jpeg.zip"
    cache = cache_dir() / f"cifar10-{split}-{zip_path.stat().st_size}.npz"
    if cache.exists():
        try:
            with np.load(cache) as f:
                return f["x"], f["y"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            cache.unlink(missing_ok=True)  # corrupt cache: decode again
    x, y = _decode_cifar10(zip_path, split)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=cache.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, x=x, y=y)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, cache)  # atomic: concurrent readers never see a partial file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return x, y


def cifar10(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load CIFAR-10 ``split`` ("train" or "test").

    Returns ``x`` float32 NCHW (N, 3, 32, 32) normalised per channel with
    mean (0.4914, 0.4822, 0.4465) and std (0.2470, 0.2435, 0.2616), and ``y`` int64.
    """
    x, y = cifar10_uint8(split)
    mean = np.asarray(CIFAR10_MEAN, dtype=np.float32)
    std = np.asarray(CIFAR10_STD, dtype=np.float32)
    xf = (x.astype(np.float32) / np.float32(255.0) - mean) / std
    return np.ascontiguousarray(xf.transpose(0, 3, 1, 2), dtype=np.float32), y


def calibration_subset(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Return ``n`` rows of ``x`` drawn without replacement, in ascending index order.

    Uses ``np.random.default_rng(seed).choice(len(x), n, replace=False)`` so the
    draw is reproducible; the shared files are ordered by class, so never take
    the first N instead.
    """
    return x[calibration_indices(len(x), n, seed)]


def calibration_indices(n_total: int, n: int, seed: int = 0) -> np.ndarray:
    """The sorted row indices :func:`calibration_subset` takes out of ``n_total`` rows."""
    if not 0 < n <= n_total:
        raise ValueError(f"n must be in [1, {n_total}], got {n}")
    return np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))


LOADERS: dict[str, Callable[[str], tuple[np.ndarray, np.ndarray]]] = {
    "mnist": mnist,
    "cifar10": cifar10,
}

#: Model file stem (as in shared/models/) -> dataset loader.
DATASETS: dict[str, Callable[[str], tuple[np.ndarray, np.ndarray]]] = {
    "lenet5_mnist": mnist,
    "vgg16_cifar10": cifar10,
    "resnet18_cifar10": cifar10,
}


def main(argv: list[str] | None = None) -> int:
    """CLI: load a split (filling the cache) and print its shape and label counts."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", choices=sorted(LOADERS))
    ap.add_argument("--split", choices=_SPLITS, default="test")
    ap.add_argument("--shared", help="shared folder (default: $ONNXPRUNE_SHARED or ../shared)")
    args = ap.parse_args(argv)
    if args.shared:
        os.environ["ONNXPRUNE_SHARED"] = args.shared
    x, y = LOADERS[args.data](args.split)
    print(f"{args.data}/{args.split}: x {x.dtype}{tuple(x.shape)} "
          f"mean {x.mean():.4f} std {x.std():.4f}; y counts {np.bincount(y).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
