"""GES ranking, uniform keep fraction per unit (no allocation), at a matched MAC fraction.

    PYTHONPATH=. python docs/experiments/ges_uniform_fraction.py resnet18_cifar10 SEED 0.7071

keep_fraction 0.7071 removes 50 % of ResNet-18's MACs (as for L1/LASSO in tools/bench.py); the
calibration draw is tools/bench.py's for that seed. Prints one JSON line.
"""
import json, sys, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "tools"))
import numpy as np, onnx
import onnxprune
from datasets import DATASETS, calibration_subset, shared_dir
from evaluate import top1
model_name, seed, frac = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
path = shared_dir(None) / "models" / f"{model_name}.onnx"
x_train, _ = DATASETS[model_name]("train")
calib = calibration_subset(x_train, 1024, seed); del x_train
x_test, y_test = DATASETS[model_name]("test")
t = time.time()
pruned, report = onnxprune.prune(str(path), calib, seed=seed, max_samples=1024, holdout=0, keep_fraction=frac, **extra)
secs = time.time() - t
out = f"/tmp/{model_name}-{seed}-{frac}-uniform.onnx"
onnx.save(pruned, out)
before, after = top1(path, x_test, y_test), top1(out, x_test, y_test)
res = {"model": model_name, "seed": seed, "keep_fraction": frac, **extra, "params_removed": report.params_removed,
       "macs_removed": report.macs_removed, "top1_before": before, "top1_after": after,
       "loss_pt": round(before - after, 2), "seconds": round(secs, 1)}
print(json.dumps(res), flush=True)
