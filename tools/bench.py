"""Benchmarks against the paper and the peers, side by side: one command regenerates docs/benchmarks.md.

For LeNet-5/MNIST, VGG-16/CIFAR-10 and ResNet-18/CIFAR-10 (from ../shared/models), at several
budgets (GES's eps_l2), every method prunes the same model with the same calibration draws:

  ges            onnxprune: GES channel selection + least-squares reconstruction (the method)
  l1             onnxprune, selector "l1": L1-norm filter ranking (Li et al. 2017) + the same reconstruction
  lasso          onnxprune, selector "lasso": LASSO channel selection (He et al. 2017) + the same reconstruction
  onnxsim-l2     onnxsim.apply_structured_pruning (L2 filter norms, no reconstruction), BN folded first
  onnxsim-wanda  onnxsim.apply_structured_wanda_pruning (|W| x |X| on the calibration images), BN folded first

Matched sparsity: GES at each budget on draw 0 (seed 0) removes some fraction P of the parameters;
each peer's own ratio knob (onnxsim's ``sparsity``, onnxprune's ``keep_fraction`` for l1/lasso) is
bisected until its parameters removed is within +-1 pt of P (the channel counts a peer keeps do
not depend on the data, so one search serves every draw). Matched MACs: at each MAC target T
(VGG-16 60 %, ResNet-18 50 %) GES runs ``prune_to_budget(target_macs=T)`` (the CLI's
``--target-macs``, its defaults) and each peer's knob is bisected to T +-1 pt of the MACs removed. Each pruning runs in a fresh
subprocess (wall time and peak RSS are its own); top-1 is measured on the full test set and
latency with onnxruntime at batch 1 and 64 (onnxprune.benchmark: original and pruned
interleaved, one thread). Calibration draws: seeds 0, 1, 2 of 1,024 random training images.

Results are cached per run in docs/results/bench-<model>.json; a rerun computes only what is
missing, then rewrites docs/benchmarks.md, docs/bench-accuracy.png and the README's block
between <!-- bench:start --> and <!-- bench:end --> from all cached results.

    python tools/bench.py                                   # everything (hours on a 2-core machine)
    python tools/bench.py --models lenet5_mnist             # one model, its default budgets, 3 draws
    python tools/bench.py --models vgg16_cifar10 --budgets 0.4,0.8 --draws 1 --methods ges,l1
    python tools/bench.py --models resnet18_cifar10 --points macs          # only the MAC-matched point
    python tools/bench.py --render-only                     # just regenerate the docs from the cache
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib.cache import RESULTS, load_all  # noqa: E402
from benchlib.plan import DRAWS, MATCHES, METHODS, MODELS, planned_points  # noqa: E402
from benchlib.render import render  # noqa: E402
from benchlib.run import Bench, worker  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--budgets", default="", help="comma-separated eps_l2 values (default: each model's three)")
    parser.add_argument("--mac-targets", default="",
                        help="comma-separated fractions of the MACs to remove (default: each model's)")
    parser.add_argument("--points", default=",".join(MATCHES),
                        help="which matched points to run: params (at GES's eps_l2 budgets), macs (at the MAC targets)")
    parser.add_argument("--draws", type=int, default=DRAWS, help=f"calibration draws, seeds 0..N-1 (at most {DRAWS})")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated, of: " + ", ".join(METHODS))
    parser.add_argument("--shared", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the per-run cache is (default: docs/results)")
    parser.add_argument("--render-only", action="store_true", help="only regenerate the docs from the cached results")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README's block")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    points = [p for p in args.points.split(",") if p]
    if unknown:
        parser.error(f"unknown methods {unknown}")
    if not set(points) <= set(MATCHES):
        parser.error(f"--points must be of {', '.join(MATCHES)}")
    if not 1 <= args.draws <= DRAWS:
        parser.error(f"--draws must be 1..{DRAWS}")
    if args.shared:  # the dataset loaders read it from the environment
        os.environ["ONNXPRUNE_SHARED"] = str(args.shared)
    if not args.render_only:
        with tempfile.TemporaryDirectory(prefix="onnxprune-bench-") as tmp:
            for name in args.models:
                budgets = [float(b) for b in args.budgets.split(",") if b] or list(MODELS[name]["budgets"])
                targets = [float(t) for t in args.mac_targets.split(",") if t] or list(MODELS[name]["mac_targets"])
                plan = [(match, b) for match, b in planned_points({"budgets": budgets, "mac_targets": targets})
                        if match in points]
                bench = Bench(name, args.shared, args.results, Path(tmp))
                bench.baseline()
                for match, budget in plan:
                    for draw in range(args.draws):
                        for method in methods:
                            bench.run(method, budget, draw, match)
    print(render(load_all(), readme=not args.no_readme))
    return 0


if __name__ == "__main__":
    sys.exit(main())
