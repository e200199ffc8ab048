#!/usr/bin/env bash
# Same bytes out: prune the reference models with the onnxprune package in SRC_DIR (a checkout or
# worktree of some commit) and print the SHA-256 of each result, to compare two commits.
#   bash tools/same_bytes.sh /path/to/old-worktree /tmp/before
#   bash tools/same_bytes.sh .                     /tmp/after
# Single-threaded BLAS: with several threads the float sums' order, and so the bytes, may change.
# Needs ../shared (models, CIFAR-10) and Pillow; about 30 min on a loaded 2-core machine.
set -euo pipefail
src=$(cd "$1" && pwd); out=$2; mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
shared=$(cd "$here/../../shared" && pwd)
export PYTHONPATH=$src OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
calib=$out/cifar_calib256.npy
[ -f "$calib" ] || python - "$here" "$calib" <<'PY'
import sys; sys.path.insert(0, sys.argv[1])
import numpy as np
from datasets import cifar10, calibration_subset
np.save(sys.argv[2], calibration_subset(cifar10("train")[0], 256, 0))
PY
M=$shared/models
python -m onnxprune "$M/lenet5_mnist.onnx" "$out/lenet5.onnx" --calib "$here/../models/mnist_calib.npy" --quiet
python -m onnxprune "$M/lenet5_mnist.onnx" "$out/lenet5_macs.onnx" --calib "$here/../models/mnist_calib.npy" --target-macs 0.5 --quiet
python -m onnxprune "$M/vgg16_cifar10.onnx" "$out/vgg16.onnx" --calib "$calib" --quiet
python -m onnxprune "$M/resnet18_cifar10.onnx" "$out/resnet18.onnx" --calib "$calib" --quiet
python -m onnxprune "$M/resnet18_cifar10.onnx" "$out/resnet18_macs.onnx" --calib "$calib" --target-macs 0.5 --quiet
sha256sum "$out"/*.onnx
