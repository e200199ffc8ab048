"""Regenerate the small quick-start files committed under ``models/``.

Writes
- ``models/lenet5_mnist.onnx``: a byte copy of ``shared/models/lenet5_mnist.onnx``;
- ``models/mnist_calib.npy``: 512 preprocessed MNIST training images, float32
  (512, 1, 28, 28), drawn with ``calibration_subset(x_train, 512, seed=0)``;
- ``models/README.md``: provenance note.

CLI::

    python tools/make_quickstart.py [--shared DIR] [--out models]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np

try:
    from tools.datasets import calibration_subset, mnist, shared_dir
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from datasets import calibration_subset, mnist, shared_dir  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
N_CALIB = 512
SEED = 0

README = """\
# Quick-start files

Small files committed so that the examples and tests run without the shared data folder.
Regenerate them (byte-identical) with:

```
python tools/make_quickstart.py          # reads ../shared (or $ONNXPRUNE_SHARED / --shared DIR)
```

| file | size | sha256 | what |
|---|---|---|---|
| `lenet5_mnist.onnx` | {model_size:,} B | `{model_sha}` | byte copy of the reference model `shared/models/lenet5_mnist.onnx` |
| `mnist_calib.npy` | {calib_size:,} B | `{calib_sha}` | {n} preprocessed MNIST **training** images, float32, shape ({n}, 1, 28, 28) |

## Model

LeNet-5 (conv 20@5x5, ReLU, maxpool 2, conv 50@5x5, ReLU, maxpool 2, flatten 800, fc 500, ReLU,
fc 10; 431,080 parameters), ONNX opset 17, input `input` (batch x 1 x 28 x 28, float32),
output `logits` (batch x 10). Top-1 on the full MNIST test set: 99.27 %
(`python tools/evaluate.py models/lenet5_mnist.onnx --data mnist`).
The model was trained and exported by the provider of the reference models
(`shared/models/`, see its README); it is copied here unchanged.

## Calibration images

Taken from `shared/data/mnist.npz` (`x_train`, a lossless copy of the original MNIST IDX files).
The training arrays are ordered by label, so the images are a random subset:
indices `np.sort(np.random.default_rng({seed}).choice(60000, {n}, replace=False))`
(`tools.datasets.calibration_subset(x, {n}, seed={seed})`). Preprocessing, exactly as the model
expects: `x = (x / 255 - 0.1307) / 0.3081`, as float32, shape N x 1 x 28 x 28.
Labels of the subset (not stored): {counts} images of digits 0-9.

## Licence

MNIST is by Yann LeCun, Corinna Cortes and Christopher J.C. Burges
(http://yann.lecun.com/exdb/mnist/), made available under the Creative Commons
Attribution-Share Alike 3.0 licence (CC BY-SA 3.0); `mnist_calib.npy` is a derived subset under the
same terms. The LeNet-5 weights were trained on MNIST by the reference-model provider.
"""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_quickstart(out_dir: Path) -> list[Path]:
    """Write the quick-start model, calibration array and README into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = out_dir / "lenet5_mnist.onnx"
    shutil.copyfile(shared_dir() / "models" / "lenet5_mnist.onnx", model)

    x, y = mnist("train")
    idx = calibration_subset(np.arange(len(x)), N_CALIB, seed=SEED)
    calib = np.ascontiguousarray(x[idx], dtype=np.float32)
    assert np.array_equal(calib, calibration_subset(x, N_CALIB, seed=SEED))
    calib_path = out_dir / "mnist_calib.npy"
    np.save(calib_path, calib, allow_pickle=False)

    readme = out_dir / "README.md"
    readme.write_text(README.format(
        model_size=model.stat().st_size, model_sha=_sha256(model),
        calib_size=calib_path.stat().st_size, calib_sha=_sha256(calib_path),
        n=N_CALIB, seed=SEED, counts=np.bincount(y[idx], minlength=10).tolist(),
    ), encoding="utf-8")
    return [model, calib_path, readme]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description="Regenerate models/ quick-start files.")
    ap.add_argument("--shared", help="shared folder (default: $ONNXPRUNE_SHARED or ../shared)")
    ap.add_argument("--out", type=Path, default=REPO / "models", help="output folder")
    args = ap.parse_args(argv)
    if args.shared:
        os.environ["ONNXPRUNE_SHARED"] = args.shared
    for path in make_quickstart(args.out):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
