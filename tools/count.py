"""Independent count of an ONNX model's parameters and MACs (only ``onnx`` and ``numpy``).

This is the yardstick that ``onnxprune``'s own report is checked against (issue 14,
``tools/corpus.py``); it deliberately shares no code with ``onnxprune``.

Definition (per sample, at batch 1, for one concrete input shape):

parameters
    The number of elements of every floating-point tensor the model holds: every floating-point
    initializer (float, float16, bfloat16, double) plus every floating-point tensor held in a
    ``Constant`` node's ``value`` attribute that some node reads (or that is a graph output): an
    initializer nothing reads (Caffe2's leftover ``imagenet1k_blobs_queue`` scalar in the zoo's
    ResNet-50 and ZFNet) is dead data, not a parameter. Each tensor is counted once (by name),
    including initializers that IR<4 models also list as graph inputs. Integer tensors (shapes, indices,
    axes) are not parameters. Tensors inside subgraphs (If/Loop/Scan bodies) are counted too.

MACs (multiply-accumulates of one sample)
    * ``Conv``: weight elements x output spatial pixels (product of the output's dims after
      N, C);
    * ``ConvTranspose``: weight elements x input spatial pixels (product of the input's dims
      after N, C);
    * ``Gemm`` / ``MatMul`` whose second input is a constant (an initializer or a ``Constant``
      node's output, possibly behind a chain of ``Identity`` / ``Cast`` / ``Reshape`` / ``Flatten`` /
      ``Squeeze`` / ``Unsqueeze`` / ``Transpose`` nodes, which keep its elements: the zoo's
      Inception-v1 reshapes its classifier weight before the Gemm): weight elements x
      the product of the output's dims between the batch axis and the last axis (1 for a 2-D
      output; e.g. T for a [1, T, N] output);
    * every other op (LSTM, GRU, element-wise ops, pooling, a MatMul of two activations...): 0.

Shapes come from ``onnx.shape_inference.infer_shapes`` (with data propagation) after every graph
input's symbolic or unknown dims are fixed to the given sizes; a symbolic first (batch) dim is
fixed to 1 when no size is given. Where inference leaves a needed shape unknown (a Slice whose
bounds are computed from Shape ops, as torch writes ``chunk``), the model is run once on zeros with
``onnx.reference.ReferenceEvaluator`` to read it. Nodes whose shapes stay unknown add 0 MACs and
are listed in ``unresolved``.

Usage::

    python tools/count.py MODEL.onnx [--shape NAME=1,3,224,224 | --shape 1,3,224,224] [--per-node]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

# Ops that pass a constant's elements on unchanged in number (a weight behind them is still that weight).
ELEMENT_KEEPING = frozenset({"Identity", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"})
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE})


def _graphs(graph: onnx.GraphProto) -> Iterable[onnx.GraphProto]:
    """The graph and, recursively, every subgraph held in a node attribute."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def _constant_tensor(node: onnx.NodeProto) -> TensorProto | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            return attr.t
    return None


def count_params(model: onnx.ModelProto) -> int:
    """Elements of every floating-point initializer and Constant-node tensor, each counted once."""
    seen: set[str] = set()
    total = 0
    read = {o.name for g in _graphs(model.graph) for o in g.output}
    read |= {i for g in _graphs(model.graph) for n in g.node for i in n.input}
    for graph in _graphs(model.graph):
        for init in graph.initializer:
            if init.data_type in FLOAT_TYPES and init.name not in seen and init.name in read:
                seen.add(init.name)
                total += int(np.prod(init.dims, dtype=np.int64))
        for node in graph.node:
            if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
                continue
            t = _constant_tensor(node)
            key = node.output[0] if node.output else id(node)
            if t is not None and t.data_type in FLOAT_TYPES and key not in seen and key in read:
                seen.add(key)
                total += int(np.prod(t.dims, dtype=np.int64))
    return total


def _parse_shape(text: str) -> tuple[str | None, list[int]]:
    name, _, dims = text.rpartition("=")
    return (name or None), [int(d) for d in dims.replace("x", ",").split(",") if d]


def fix_input_shapes(model: onnx.ModelProto, shapes: dict[str | None, Sequence[int]] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` whose (non-initializer) graph inputs have the given concrete shapes.

    ``shapes`` maps an input name to its dims; the key ``None`` means the only real input. Dims
    not given: a symbolic/unknown first dim becomes 1; another symbolic dim is an error.
    """
    shapes = dict(shapes or {})
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name for i in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in inits]
    if None in shapes:
        if len(real) != 1:
            raise ValueError(f"an unnamed shape needs a model with one input, this one has {[i.name for i in real]}")
        shapes[real[0].name] = shapes.pop(None)
    for vi in real:
        tt = vi.type.tensor_type
        given = shapes.get(vi.name)
        if given is not None:
            if tt.HasField("shape") and len(tt.shape.dim) not in (0, len(given)):
                raise ValueError(f"input {vi.name!r} has rank {len(tt.shape.dim)}, shape given {list(given)}")
            tt.shape.Clear()
            for d in given:
                tt.shape.dim.add().dim_value = int(d)
            continue
        for i, dim in enumerate(tt.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if i == 0:
                dim.Clear()
                dim.dim_value = 1
            else:
                raise ValueError(f"input {vi.name!r} dim {i} is symbolic ({dim.dim_param or '?'}): give --shape")
    return model


def _constants_as_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Main-graph Constant nodes (``value``) as initializers, so shape inference reads their values
    (e.g. a Split's sizes); only for inferring shapes, the counts above come from the model as given."""
    g = model.graph
    keep = []
    for node in g.node:
        t = _constant_tensor(node) if node.op_type == "Constant" and node.domain in ("", "ai.onnx") else None
        if t is not None and len(node.attribute) == 1:
            init = g.initializer.add()
            init.CopyFrom(t)
            init.name = node.output[0]
        else:
            keep.append(node)
    del g.node[:]
    g.node.extend(keep)
    if model.ir_version < 4:
        model.ir_version = 4  # initializers need not be graph inputs from IR 4 on
    return model


def _evaluated_shapes(model: onnx.ModelProto, names: list[str]) -> dict[str, list[int]]:
    """Shapes of ``names`` from one run of the reference evaluator on zero inputs (shapes fixed)."""
    from onnx.reference import ReferenceEvaluator

    m = onnx.ModelProto.FromString(model.SerializeToString())
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.add().name = n
    inits = {i.name for i in m.graph.initializer}
    feeds = {}
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[vi.name] = np.zeros([d.dim_value for d in tt.shape.dim], dtype)
    try:
        outs = ReferenceEvaluator(m).run(None, feeds)
    except Exception:  # noqa: BLE001 - leave them unresolved
        return {}
    return {o.name: list(np.shape(v)) for o, v in zip(m.graph.output, outs) if o.name in names}


def _dims(vi: onnx.ValueInfoProto) -> list[int] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    out = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value"):
            return None
        out.append(d.dim_value)
    return out


def count(model: onnx.ModelProto | str, shapes: dict[str | None, Sequence[int]] | None = None,
          per_node: bool = False, evaluate: bool = True) -> dict:
    """``{"params", "macs", "unresolved", ["nodes"]}`` of ``model`` at the given input shapes.

    Where shape inference leaves a needed shape unknown (e.g. a Slice whose bounds are computed
    from Shape ops) and ``evaluate`` is set, the model is run once on zeros with
    ``onnx.reference.ReferenceEvaluator`` to read the missing shapes.
    """
    if isinstance(model, str):
        model = onnx.load(model)
    params = count_params(model)
    fixed = _constants_as_initializers(fix_input_shapes(model, shapes))
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:  # noqa: BLE001 - fall back to no data propagation
        inferred = onnx.shape_inference.infer_shapes(fixed)
    g = inferred.graph
    known: dict[str, list[int]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        d = _dims(vi)
        if d is not None:
            known[vi.name] = d
    consts: dict[str, list[int]] = {i.name: list(i.dims) for i in g.initializer}
    producer: dict[str, onnx.NodeProto] = {}
    for node in g.node:
        for o in node.output:
            producer[o] = node
        if node.op_type == "Constant":
            t = _constant_tensor(node)
            if t is not None:
                consts[node.output[0]] = list(t.dims)

    def const_dims(name: str) -> list[int] | None:
        for _ in range(64):
            if name in consts:
                return consts[name]
            node = producer.get(name)
            if node is None or node.op_type not in ELEMENT_KEEPING:
                return None
            name = node.input[0]
        return None

    def shape_of(name: str) -> list[int] | None:
        return known.get(name, consts.get(name))

    def tally():
        macs, unresolved, nodes, needed = 0, [], {}, set()
        for idx, node in enumerate(g.node):
            label = node.name or f"{node.op_type}_{idx}"
            op = node.op_type if node.domain in ("", "ai.onnx") else None
            m = None
            if op in ("Conv", "ConvTranspose"):
                w = shape_of(node.input[1])
                ref_name = node.output[0] if op == "Conv" else node.input[0]
                ref = shape_of(ref_name)
                if w is None or ref is None:
                    unresolved.append(label)
                    needed.update(n for n, d in ((node.input[1], w), (ref_name, ref)) if d is None)
                    continue
                m = int(np.prod(w, dtype=np.int64)) * int(np.prod(ref[2:], dtype=np.int64))
            elif op in ("Gemm", "MatMul") and len(node.input) > 1:
                w = const_dims(node.input[1])
                if w is None:
                    continue  # a product of two activations: 0 by definition
                out = shape_of(node.output[0])
                if out is None:
                    unresolved.append(label)
                    needed.add(node.output[0])
                    continue
                m = int(np.prod(w, dtype=np.int64)) * (int(np.prod(out[1:-1], dtype=np.int64)) if len(out) > 2 else 1)
            if m is not None:
                macs += m
                nodes[label] = m
        return macs, unresolved, nodes, needed

    macs, unresolved, nodes, needed = tally()
    if needed and evaluate:
        known.update(_evaluated_shapes(inferred, sorted(needed)))
        macs, unresolved, nodes, needed = tally()
    result = {"params": params, "macs": macs, "unresolved": unresolved}
    if per_node:
        result["nodes"] = nodes
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--shape", action="append", default=[],
                    help="NAME=d0,d1,... or d0,d1,... for a single-input model (repeatable)")
    ap.add_argument("--per-node", action="store_true", help="also list the MACs of every counted node")
    args = ap.parse_args(argv)
    shapes = dict(_parse_shape(s) for s in args.shape)
    res = count(args.model, shapes, per_node=args.per_node)
    print(json.dumps(res, indent=2))
    if res["unresolved"]:
        print(f"warning: {len(res['unresolved'])} nodes with unknown shapes counted as 0 MACs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["count", "count_params", "fix_input_shapes"]
