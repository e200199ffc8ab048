"""Where does ResNet-18 lose its accuracy? Prune parts of it and measure (issue 3 diagnostics).

A *unit* is a set of tied channels with all the layers that read them (docs/method.md). In
ResNet-18 the units with one reader are the insides of the basic blocks (conv1 -> conv2), the
units with several readers are the residual streams of the four stages. Each mode prunes with
the library's defaults (or the given options) except:

    all           nothing changed
    chain_only    the residual streams are not pruned (their eps_l2 set to ~0)
    residual_only only the residual streams are pruned
    streamN       only the residual stream with N channels is pruned (stream512, stream256, ...)
    scaleF        the residual streams' eps_l2 multiplied by F (scale0.15)
    classifier    no pruning of the network: GES on the final Gemm alone (its 512 pooled
                  features), refit, top-1 with the original features (is it the classifier?)

    python tools/resnet_study.py chain_only eps_l2=2
    python tools/resnet_study.py all samples=4096     # more calibration images (default 1,024)
    python tools/resnet_study.py all max_iter=60      # any prune() option, as name=value

After the top-1 it prints the logits' relative error and class agreement with the original on
the calibration images and on 4,096 other training images: a much smaller error on the first
means the refits fit the calibration data's noise (variance); about the same error means bias.

Run single-threaded BLAS on a shared machine (OPENBLAS_NUM_THREADS=1): with more threads than
free cores, OpenBLAS spins and a run takes several times longer. It prices each unit's eps_l2
itself, through prune_once's ``unit_eps`` hook (the allocation a study may change; the CLI cannot).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]
from datasets import DATASETS, calibration_indices, calibration_subset, shared_dir  # noqa: E402
from evaluate import top1  # noqa: E402
from onnxprune import PruneConfig, calibration_feeds  # noqa: E402
from onnxprune.graph.io import load_model  # noqa: E402
from onnxprune.pruning.allocation import unit_eps_l2  # noqa: E402
from onnxprune.pruning.once import prune_once  # noqa: E402

MODEL = "resnet18_cifar10"


def is_stream(unit) -> bool:
    return len(unit.consumers) > 1


def silenced(mode: str, unit) -> bool:
    """Whether the mode leaves this unit unpruned."""
    if mode == "chain_only":
        return is_stream(unit)
    if mode == "residual_only":
        return not is_stream(unit)
    if mode.startswith("stream"):
        return not (is_stream(unit) and len(unit.classes) + len(unit.frozen_classes) == int(mode[6:]))
    return False


def unit_eps(mode: str):
    """The study's ε_L2 per unit: the default allocation, with some units silenced or scaled."""
    def eps_of_units(channels, units, config):
        eps = unit_eps_l2(channels, units, config)
        factor = float(mode[5:]) if mode.startswith("scale") else 1.0
        return {u.index: 1e-9 if silenced(mode, u) else eps[u.index] * (factor if is_stream(u) else 1.0) for u in units}
    return eps_of_units


def forward(model: Path | bytes, x: np.ndarray) -> list[np.ndarray]:
    """Every graph output of the model (a path or serialised bytes) on x, in batches of 256."""
    session = onnxruntime.InferenceSession(model if isinstance(model, bytes) else str(model),
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batches = [session.run(None, {name: x[i:i + 256]}) for i in range(0, len(x), 256)]
    return [np.concatenate(outputs) for outputs in zip(*batches)]


def classifier_only(path: Path, calib: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> None:
    """GES on the classifier's own regression, with the original network's pooled features."""
    from onnx import numpy_helper

    from onnxprune.calib.stats import Moments
    from onnxprune.solve.ges import GesOptions, select_channels, solve_ges
    from onnxprune.solve.problem import normalise
    from onnxprune.solve.refit import refit

    model = onnx.load(path)
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    model.graph.output.append(onnx.helper.make_tensor_value_info(gemm.input[0], onnx.TensorProto.FLOAT, None))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weight = weights[gemm.input[1]]
    (logits, features), (test_logits, test_features) = (forward(model.SerializeToString(), x) for x in (calib, x_test))
    baseline = 100 * float((test_logits.argmax(1) == y_test).mean())
    moments = Moments(weight.shape[1], weight.shape[0])
    moments.add(features, logits)
    problem = moments.problem(np.arange(weight.shape[1]), weight.shape[1])
    for eps in (0.5, 1, 2, 4, 8, 16):
        keep = select_channels(solve_ges([normalise(problem)], GesOptions(eps_l2=eps, max_iter=20)).weights,
                               threshold=0.5)
        w, b = refit(problem, keep, ridge=1e-3, prior=weight)
        accuracy = 100 * float(((test_features[:, keep] @ w.T + b).argmax(1) == y_test).mean())
        print(f"classifier eps_l2 {eps}: keeps {keep.sum()} of {keep.size} features, "
              f"top-1 {accuracy:.2f} (loss {baseline - accuracy:.2f} pt)")


def heldout_check(original: Path, pruned: Path, x_train: np.ndarray, samples: int) -> None:
    """Logit error on the calibration images against 4,096 training images not among them.

    A refit that fits the calibration data's noise has a much smaller error on the first; an
    error that is about the same on both is bias (information the kept channels lack), which
    more data or a stronger ridge cannot remove.
    """
    chosen = np.zeros(len(x_train), dtype=bool)
    chosen[calibration_indices(len(x_train), samples, 0)] = True
    others = np.random.default_rng(1).choice(np.flatnonzero(~chosen), 4096, replace=False)
    x = np.concatenate([x_train[chosen], x_train[np.sort(others)]])  # one session and pass per model
    both = forward(original, x)[0], forward(pruned, x)[0]
    for name, part in (("calibration", slice(0, samples)), ("held-out", slice(samples, None))):
        before, after = both[0][part], both[1][part]
        error = np.linalg.norm(after - before) / np.linalg.norm(before - before.mean(0))
        agree = 100 * float((after.argmax(1) == before.argmax(1)).mean())
        print(f"  {name} images: logits' relative error {error:.4f}, same class as the original {agree:.2f} %")


def main() -> None:
    mode, options = sys.argv[1], {k: int(v) if v.isdigit() else float(v) for k, v in (a.split("=") for a in sys.argv[2:])}
    samples = int(options.pop("samples", 1024))
    if "max_samples" not in options:
        options["max_samples"] = samples
    options.setdefault("holdout", 0)  # all `samples` images to the statistics (the study's own checks follow)
    load = DATASETS[MODEL]
    x_train = load("train")[0]
    calib = calibration_subset(x_train, samples, 0)
    x_test, y_test = load("test")
    path = shared_dir(None) / "models" / f"{MODEL}.onnx"
    if mode == "classifier":
        classifier_only(path, calib, x_test, y_test)
        return
    baseline = top1(path, x_test, y_test)
    start = time.time()
    config = PruneConfig(**options)
    model = load_model(path)
    model, report = prune_once(model, calibration_feeds(model, calib, config), config, lambda line: None,
                               unit_eps=unit_eps(mode))
    out = Path(f"/tmp/resnet_study_{mode}.onnx")
    onnx.save(model, out)
    accuracy = top1(out, x_test, y_test)
    print(f"RESULT {mode} {options} top1={accuracy:.2f} loss={baseline - accuracy:.2f} "
          f"params_removed={report.params_removed:.3f} macs_removed={report.macs_removed:.3f} "
          f"{time.time() - start:.0f}s")
    heldout_check(path, out, x_train, samples)
    for layer in report.layers:
        print(f"  {layer.name} in {layer.in_channels_before}->{layer.in_channels_after} "
              f"out {layer.channels_before}->{layer.channels_after}")


if __name__ == "__main__":
    main()
