"""Reading, checking and writing ONNX models; the only place that touches files of models."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.errors import ModelError, OutputError, first_line

log = logging.getLogger(__name__)


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load and check a model file, with one-line errors for anything that is not a usable model."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types for a garbage file
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {first_line(exc)})") from None
    return check_model(model, str(path))


def check_model(model: onnx.ModelProto, where: str = "model") -> onnx.ModelProto:
    """Run onnx.checker and ONNX shape inference; return the model with value_info filled in."""
    if not isinstance(model, onnx.ModelProto) or len(model.graph.node) == 0:
        raise ModelError(f"{where}: not an ONNX model with a graph (no nodes found)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"{where}: fails onnx.checker: {first_line(exc)}") from None
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        raise ModelError(f"{where}: shape inference failed: {first_line(exc)}") from None


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    """Import into onnx-graphsurgeon, the one IR used while rewriting."""
    graph = gs.import_onnx(model)
    graph.toposort()
    # Segments and reports refer to nodes by name, so every node needs a unique one.
    seen: set[str] = set()
    for index, node in enumerate(graph.nodes):
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op}_{index}"
        seen.add(node.name)
    _inline_constants(graph)
    # Fold what depends only on constants (an unoptimised dynamo export computes a zero bias from
    # Shape(weight)): parameters must be plain constants for a layer to be prunable.
    if any(node.op in _FOLDABLE_HINTS for node in graph.nodes):
        graph.fold_constants(error_ok=True, size_threshold=1 << 24).cleanup(remove_unused_graph_inputs=False)
        _inline_constants(graph)
    return graph


_FOLDABLE_HINTS = {"Shape", "Expand", "CastLike", "ConstantOfShape", "Cast"}


def _inline_constants(graph: gs.Graph) -> None:
    """Turn Constant nodes, and Identity/CastLike nodes applied to an initializer, into initializers.

    Exporters emit both (the dynamo exporter's Constant nodes; the TorchScript exporter's
    Identity on a BatchNormalization bias it shares between two layers). As plain constants,
    each reader's parameters can be sliced with its channels.
    """
    outputs = {t.name for t in graph.outputs}
    changed = False
    for node in graph.nodes:
        if len(node.outputs) != 1 or node.outputs[0].name in outputs:
            continue
        if node.op == "Constant" and isinstance(node.attrs.get("value"), gs.Constant):
            values = np.asarray(node.attrs["value"].values)
        elif node.op == "Identity" and isinstance(node.inputs[0], gs.Constant):
            values = np.array(node.inputs[0].values)  # a copy: each reader gets its own
        elif node.op == "CastLike" and isinstance(node.inputs[0], gs.Constant) and node.inputs[1].dtype is not None:
            values = np.asarray(node.inputs[0].values).astype(node.inputs[1].dtype)
        else:
            continue
        variable = node.outputs[0]
        for k, reader in enumerate(list(variable.outputs)):
            # One copy per reader, named after the tensor it replaces.
            constant = gs.Constant(variable.name if k == 0 else f"{variable.name}_{k}", values.copy())
            for i, tensor in enumerate(reader.inputs):
                if tensor is variable:
                    reader.inputs[i] = constant
        node.outputs.clear()
        changed = True
    if changed:
        graph.cleanup(remove_unused_graph_inputs=False)


def export(graph: gs.Graph, template: onnx.ModelProto) -> onnx.ModelProto:
    """Export a graph with the template's opsets, IR version and metadata.

    Shapes of intermediate tensors are dropped (pruning changed their channel counts) and
    inferred again, so the file carries no stale value_info.
    """
    graph = graph.copy()
    io_names = {t.name for t in graph.inputs + graph.outputs}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor.name not in io_names:
            tensor.shape = None
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    model = gs.export_onnx(graph, do_type_check=False)
    del model.opset_import[:]
    model.opset_import.extend(template.opset_import)
    model.ir_version = template.ir_version
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(model, field, getattr(template, field))
    del model.metadata_props[:]
    model.metadata_props.extend(template.metadata_props)
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is a nicety for viewers; the checker below is the real test
        return model


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write the model atomically (see :func:`write_atomic`)."""
    write_atomic(model.SerializeToString(), path)


def write_text(text: str, path: str | os.PathLike) -> None:
    write_atomic(text.encode(), path)


def write_atomic(data: bytes, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same directory, renamed over the target at the end.

    An interrupted or failed write never leaves a partial file and never touches an existing one.
    """
    path = Path(path)
    check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"{path}: cannot write ({exc.strerror})") from None
        raise


def check_writable(path: str | os.PathLike) -> None:
    """Fail early, before any work, when the output cannot be written."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give the path of the .onnx file to write")
    if not directory.is_dir():
        raise OutputError(f"{path}: output directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise OutputError(f"{path}: output directory {directory} is not writable")


def constant_values(tensor: gs.Tensor) -> np.ndarray | None:
    """The array behind a Constant tensor (or a Constant node's output), else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        value = tensor.inputs[0].attrs.get("value")
        return np.asarray(value.values) if value is not None else None
    return None
