"""Tensor shapes for counting MACs and reading layer geometry, at the size the model is really run.

Exporters often leave height and width symbolic ([batch, 3, "h", "w"]); shape inference then
knows no spatial size, and a Conv's MACs (weights times output pixels) cannot be counted. The
calibration data says what size the model is run at, so those dims are set to its sizes before
inference. The batch dim stays as declared: everything is counted per sample.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper

from onnxprune.ops.constants import constant_proto_value
from onnxprune.calib.data import input_specs

log = logging.getLogger(__name__)

Shape = tuple  # ints for known dims, None for unknown ones (the batch, when it is free)


def input_sizes(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, list]:
    """The graph inputs that have a symbolic (or unknown) dim besides the batch, each with the shape
    that counting uses: the calibration data's sizes, the batch dim as declared (its name or size).

    Empty for a model whose inputs are fixed apart from the batch (the usual export).
    """
    declared = {vi.name: vi.type.tensor_type.shape.dim for vi in model.graph.input}
    sizes = {}
    for spec in input_specs(model):
        if spec.name in feeds and any(d is None for d in spec.shape[1:]):
            batch = declared[spec.name][0]
            first = batch.dim_value if batch.HasField("dim_value") else (batch.dim_param or None)
            sizes[spec.name] = [first] + [int(d) for d in feeds[spec.name].shape[1:]]
    return sizes


def tensor_shapes(model: onnx.ModelProto, sizes: Mapping[str, list] | None = None) -> dict[str, Shape]:
    """Shapes known after shape inference: ints for fixed dims, None for symbolic ones.

    ``sizes`` (from :func:`input_sizes`) sets inputs' symbolic dims first and infers again, with
    data propagation so that shapes computed from Shape (Reshape targets, Resize sizes) follow; without
    it the model's own value_info is read as it is (check_model filled it in).

    Where inference still leaves a node's input or output without a full shape (past its batch
    dim) — a Slice whose bounds are computed from Shape, as torch writes ``chunk``; a Reshape to a
    computed target — the model is run once on one sample of zeros at the size counted and those
    tensors' shapes are read from the run (:func:`_measured_shapes`), so that no layer counts 0 MACs
    for want of a shape that a run knows.
    """
    weighted = model
    if sizes:
        model = _inferred_at(model, sizes)
    shapes = {}
    for info in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                      for d in info.type.tensor_type.shape.dim)
    initializers = {t.name for t in weighted.graph.initializer}
    unknown = sorted({name for node in weighted.graph.node for name in list(node.input) + list(node.output)
                      if name and name not in initializers and _incomplete(shapes.get(name))})
    if unknown:
        shapes.update(_measured_shapes(weighted, sizes or {}, unknown, shapes))
    return shapes


def _incomplete(shape: Shape | None) -> bool:
    """No shape, or a dim past the first (the batch, free by design) that is not known."""
    return shape is None or any(d is None for d in shape[1:])


def _measured_shapes(model: onnx.ModelProto, sizes: Mapping[str, list], names: list[str],
                     known: Mapping[str, Shape]) -> dict[str, Shape]:
    """The shapes of tensors ``names`` in one onnxruntime run on zeros, one sample (or the declared
    batch), the inputs at ``sizes`` or as declared. When the model's batch is free, a first dim that
    inference left free stays None (the batch). Empty when the model cannot be run so (then the unknown shapes count 0, as before)."""
    from onnxprune.runtime import make_session  # runtime imports graph.io; this module is imported by it

    feeds = {}
    batch_free = False
    initializers = {t.name for t in model.graph.initializer}
    elem_to_np = onnx.helper.tensor_dtype_to_np_dtype
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        tt = vi.type.tensor_type
        dims = list(sizes.get(vi.name) or [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim])
        batch_free = batch_free or bool(dims) and not (isinstance(dims[0], (int, np.integer)) and dims[0] > 0)
        dims = [d if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in dims]
        feeds[vi.name] = np.zeros(dims, dtype=elem_to_np(tt.elem_type))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph_outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in graph_outputs
                              and name not in feeds)
    try:
        session = make_session(probe, threads=1)
        wanted = [o.name for o in session.get_outputs() if o.name in set(names)]
        values = session.run(wanted, feeds)
    except Exception as exc:  # noqa: BLE001  a model that does not run on zeros: count what inference knows
        log.debug("shapes by one run failed: %s", exc)
        return {}
    measured = {}
    for name, value in zip(wanted, values):
        shape = tuple(int(d) for d in np.shape(value))
        inferred = known.get(name)
        if batch_free and shape and inferred is not None and len(inferred) == len(shape) and inferred[0] is None:
            shape = (None,) + shape[1:]  # the free batch stays free
        measured[name] = shape
    return measured


# Initializers up to this many elements keep their values for inference (shape-like tensors that
# data propagation reads); larger ones (weights) are passed as inputs of their type and shape only.
_SMALL_TENSOR = 4096


def _inferred_at(model: onnx.ModelProto, sizes: Mapping[str, list]) -> onnx.ModelProto:
    """A weight-free copy of the model with the inputs at ``sizes``, its shapes inferred again."""
    graph = model.graph
    large = [t for t in graph.initializer if int(np.prod(t.dims)) > _SMALL_TENSOR]
    large_names = {t.name for t in large}
    inputs = []
    for vi in graph.input:
        if vi.name in sizes:
            vi = helper.make_tensor_value_info(vi.name, vi.type.tensor_type.elem_type, sizes[vi.name])
        if vi.name not in large_names:
            inputs.append(vi)
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in large]
    nodes = []
    for node in graph.node:  # paddle2onnx's weights are Constant nodes: they become inputs too
        value = constant_proto_value(node)
        if value is not None and int(np.prod(value.dims)) > _SMALL_TENSOR:
            inputs.append(helper.make_tensor_value_info(node.output[0], value.data_type, value.dims))
        else:
            nodes.append(node)
    skeleton = helper.make_graph(nodes, graph.name, inputs, list(graph.output),
                                 initializer=[t for t in graph.initializer if t.name not in large_names])
    # Output shapes are inferred afresh too: a declared symbolic dim would only be merged.
    for output in skeleton.output:
        output.type.tensor_type.ClearField("shape")
    skeleton = helper.make_model(skeleton, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    skeleton.functions.extend(model.functions)
    for data_prop in (True, False):
        try:
            return onnx.shape_inference.infer_shapes(skeleton, data_prop=data_prop)
        except Exception as exc:  # a model ONNX cannot infer at this size: count what is known
            log.debug("shape inference at %s (data_prop=%s) failed: %s", dict(sizes), data_prop, exc)
    return model
