"""Variants at a matched MAC fraction, on tools/bench.py's calibration draw for a seed.

    PYTHONPATH=. python docs/experiments/matched_macs_variants.py resnet18_cifar10 SEED 0.7071
        GES's ranking at a uniform keep fraction (0.7071 removes 50 % of ResNet-18's MACs, as for
        L1/LASSO in tools/bench.py)
    PYTHONPATH=. python docs/experiments/matched_macs_variants.py resnet18_cifar10 SEED 0.5 \
        '{"selector": "lasso", "keep_fraction": 0.7071}' budget
        prune_to_budget(target_macs=0.5) with LASSO's ranking: the ladders recorded at LASSO's
        uniform fraction, the counts allocated from them

The optional JSON holds PruneConfig overrides. Prints one JSON line.
"""
import json, sys, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "tools"))
import numpy as np, onnx
import onnxprune
from datasets import DATASETS, calibration_subset, shared_dir
from evaluate import top1
model_name, seed, frac = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
budget = len(sys.argv) > 5 and sys.argv[5] == "budget"
path = shared_dir(None) / "models" / f"{model_name}.onnx"
x_train, _ = DATASETS[model_name]("train")
calib = calibration_subset(x_train, 1024, seed); del x_train
x_test, y_test = DATASETS[model_name]("test")
t = time.time()
if budget:
    pruned, report = onnxprune.prune_to_budget(str(path), calib, seed=seed, max_samples=1024, holdout=0,
                                               target_macs=frac, **extra)
else:
    pruned, report = onnxprune.prune(str(path), calib, seed=seed, max_samples=1024, holdout=0, keep_fraction=frac,
                                     **extra)
secs = time.time() - t
out = f"/tmp/{model_name}-{seed}-{frac}-variant.onnx"
onnx.save(pruned, out)
before, after = top1(path, x_test, y_test), top1(out, x_test, y_test)
res = {"model": model_name, "seed": seed, ("target_macs" if budget else "keep_fraction"): frac, **extra, "params_removed": report.params_removed,
       "macs_removed": report.macs_removed, "top1_before": before, "top1_after": after,
       "loss_pt": round(before - after, 2), "seconds": round(secs, 1)}
print(json.dumps(res), flush=True)
