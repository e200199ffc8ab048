"""Fold inference-mode BatchNormalization into the Conv that feeds it (numpy + onnx only).

onnxsim's structured pruning expects BatchNormalization already fused into the preceding Conv
(its chain matcher does not step over BN), so the benchmark folds it first:

    s = gamma / sqrt(var + eps);  W' = W * s (per output channel);  b' = (b - mean) * s + beta

A BN is folded only when its input comes from a Conv with a constant weight, that Conv's output
feeds nothing else, and all four BN vectors are constants (initializers, Constant nodes, or an
Identity of either, as PyTorch's exporter emits for shared values). Anything else is left as is.

    python tools/bnfold.py IN.onnx OUT.onnx
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import numpy_helper


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    for node in graph.node:  # Identity of a constant (after the others: its source may be a Constant node)
        if node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def fold_batchnorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every foldable Conv -> BatchNormalization pair fused; (model, pairs folded)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    constants = _constants(graph)
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    graph_outputs = {o.name for o in graph.output}
    new_initializers: list[onnx.TensorProto] = []
    drop: set[int] = set()
    folded = 0
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        conv = producer.get(bn.input[0])
        if (conv is None or conv.op_type != "Conv" or readers.get(bn.input[0], 0) != 1
                or bn.input[0] in graph_outputs or conv.input[1] not in constants
                or not all(name in constants for name in bn.input[1:5])):
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (constants[name].astype(np.float64) for name in bn.input[1:5])
        weight = constants[conv.input[1]]
        has_bias = len(conv.input) > 2 and conv.input[2] != ""
        if has_bias and conv.input[2] not in constants:
            continue
        bias = constants[conv.input[2]].astype(np.float64) if has_bias else np.zeros(weight.shape[0])
        scale = gamma / np.sqrt(var + eps)
        new_weight = (weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))).astype(weight.dtype)
        new_bias = ((bias - mean) * scale + beta).astype(weight.dtype)
        # Fresh names: the originals may be read by other nodes too.
        w_name, b_name = f"{conv.name or conv.output[0]}.folded_weight", f"{conv.name or conv.output[0]}.folded_bias"
        new_initializers += [numpy_helper.from_array(new_weight, w_name), numpy_helper.from_array(new_bias, b_name)]
        data_input = conv.input[0]
        del conv.input[:]
        conv.input.extend([data_input, w_name, b_name])
        conv.output[0] = bn.output[0]
        drop.add(id(bn))
        folded += 1
    kept = [node for node in graph.node if id(node) not in drop]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_initializers)
    _drop_unused(graph)
    return model, folded


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove initializers and constant-producing nodes nothing reads any more."""
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [node for node in graph.node if node.op_type in ("Identity", "Constant")
                and all(out not in used for out in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    value_info = [vi for vi in graph.value_info if vi.name in used or vi.name in
                  {out for node in graph.node for out in node.output}]
    del graph.value_info[:]
    graph.value_info.extend(value_info)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    model, folded = fold_batchnorm(onnx.load(argv[0]))
    onnx.checker.check_model(model)
    onnx.save(model, argv[1])
    print(f"folded {folded} BatchNormalization node(s) into their Conv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
