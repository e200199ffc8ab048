"""Unpack CIFAR-10 JPEGs from the shared zip as image folders, next to the equivalent .npy, for
the image-folder acceptance check in docs/evaluation.md.

    python tools/image_folders.py OUT_DIR [--split test] [--calib 1024] [--seed 0]

Writes (the JPEG files byte for byte as in the zip):

- ``OUT_DIR/calib/``: ``--calib`` random images of the split (``calibration_subset``, seed
  ``--seed``), flat, named ``<class>_<file>.jpg`` so that sorted by name they are in the order of
  ``tools/datasets.py``'s arrays (classes in label order, then file name);
- ``OUT_DIR/calib.npy``: the same images preprocessed by ``tools/datasets.py`` (float32 NCHW);
- ``OUT_DIR/<split>/<class>/*.jpg``: the whole split, one sub-folder per class, which
  ``onnxprune --eval`` labels by sorted folder name: the CIFAR-10 label order.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import CIFAR10_CLASSES, calibration_subset, cifar10, shared_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--split", choices=("train", "test"), default="test")
    ap.add_argument("--calib", type=int, default=1024, help="calibration images to draw")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    index = {name: label for label, name in enumerate(CIFAR10_CLASSES)}
    with zipfile.ZipFile(shared_dir() / "data" / "cifar10-jpeg.zip") as zf:
        names = [n for n in zf.namelist() if n.startswith(f"{args.split}/") and n.lower().endswith(".jpg")]
        # The order of tools/datasets.py's decoded arrays: by label, then by path.
        entries = [name for _, name in sorted((index[n.split("/")[1]], n) for n in names)]
        rows = calibration_subset(np.arange(len(entries)), args.calib, args.seed)
        (args.out / "calib").mkdir(parents=True, exist_ok=True)
        for row in rows:
            _, cls, file = entries[row].split("/")
            (args.out / "calib" / f"{cls}_{file}").write_bytes(zf.read(entries[row]))
        for name in entries:
            _, cls, file = name.split("/")
            (args.out / args.split / cls).mkdir(parents=True, exist_ok=True)
            (args.out / args.split / cls / file).write_bytes(zf.read(name))
    x, _ = cifar10(args.split)
    np.save(args.out / "calib.npy", x[rows])
    print(f"{args.out}: calib/ and calib.npy ({len(rows)} images), {args.split}/ ({len(entries)} images in "
          f"{len(CIFAR10_CLASSES)} class folders)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
