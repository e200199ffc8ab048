"""Reading, checking and writing ONNX models; the only place that touches files of models."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import external_data_helper, helper

from onnxprune.errors import ModelError, OutputError, first_line
from onnxprune.ops.constants import FOLDABLE_HINTS, constant_result

log = logging.getLogger(__name__)


# protobuf cannot serialise a message of 2 GiB or more; the margin is for the graph's own messages
# beside the tensors, which the size estimate below does not count.
PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_DATA_ABOVE = PROTOBUF_LIMIT - 2**26
# Tensors loaded before shape inference, which reads the values of shape-like inputs (Reshape
# targets, Slice bounds, Resize scales); weights are loaded after it.
_SMALL_TENSOR = 4096


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load and check a model file, with one-line errors for anything that is not a usable model.

    Tensors stored in external data files (models over protobuf's 2 GB limit must use them) are
    read from the model's directory. The checker and shape inference never see the weights then,
    so that they work at any model size.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types for a garbage file
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {first_line(exc)})") from None
    if not any(external_data_helper.uses_external_data(t) for t in _tensors(model.graph)):
        return check_model(model, str(path))
    _check_graph(model, str(path))
    for location in sorted({external_data_helper.ExternalDataInfo(t).location for t in _external(model)}):
        if not (path.parent / location).is_file():
            raise ModelError(f"{path}: its external data file '{location}' is missing; "
                             f"it must be in {path.parent} beside the model")
    _checked(onnx.checker.check_model, str(path), f"{path}: fails onnx.checker")  # by path: reads no weights
    for tensor in _external(model):
        if int(np.prod(tensor.dims)) <= _SMALL_TENSOR:
            _load_tensor(tensor, path)
    model = _checked(onnx.shape_inference.infer_shapes, model, f"{path}: shape inference failed")
    for tensor in _external(model):
        _load_tensor(tensor, path)
    return model


def check_model(model: onnx.ModelProto, where: str = "model") -> onnx.ModelProto:
    """Run onnx.checker and ONNX shape inference; return the model with value_info filled in."""
    _check_graph(model, where)
    _checked(onnx.checker.check_model, model, f"{where}: fails onnx.checker")
    return _checked(onnx.shape_inference.infer_shapes, model, f"{where}: shape inference failed")


def _check_graph(model: onnx.ModelProto, where: str) -> None:
    if not isinstance(model, onnx.ModelProto) or len(model.graph.node) == 0:
        raise ModelError(f"{where}: not an ONNX model with a graph (no nodes found)")


def _checked(check, argument, failure: str):
    """``check(argument)``, with any failure turned into a one-line ModelError."""
    try:
        return check(argument)
    except Exception as exc:
        raise ModelError(f"{failure}: {first_line(exc)}") from None


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph holds: initializers, Constant values and those of subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _tensors(subgraph)


def _external(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in _tensors(model.graph) if external_data_helper.uses_external_data(t)]


def _load_tensor(tensor: onnx.TensorProto, path: Path) -> None:
    """Read one tensor's bytes from its external file into the message, checking their count."""
    try:
        external_data_helper.load_external_data_for_tensor(tensor, str(path.parent))
    except Exception as exc:  # onnx refuses locations outside the directory and short files
        raise ModelError(f"{path}: cannot read external data of tensor '{tensor.name}' ({first_line(exc)})") from None
    tensor.ClearField("data_location")  # unset, not DEFAULT: the bytes then equal the one-file model's
    del tensor.external_data[:]
    if tensor.data_type != onnx.TensorProto.STRING:
        expected = int(np.prod(tensor.dims)) * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        if len(tensor.raw_data) != expected:
            raise ModelError(f"{path}: external data of tensor '{tensor.name}' has {len(tensor.raw_data)} bytes, "
                             f"its shape needs {expected} (truncated data file?)")


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
    foldable = any(node.op in FOLDABLE_HINTS for node in graph.nodes)  # before inlining takes some away
    _inline_constants(graph)
    # Fold what depends only on constants (an unoptimised dynamo export computes a zero bias from
    # Shape(weight)): parameters must be plain constants for a layer to be prunable.
    if foldable:
        graph.fold_constants(error_ok=True, size_threshold=1 << 24).cleanup(remove_unused_graph_inputs=False)
        _inline_constants(graph)
    return graph


def _inline_constants(graph: gs.Graph) -> None:
    """Turn Constant nodes, and the nodes that only re-type or rearrange a constant, into initializers.

    Exporters put weights behind all of them: the dynamo exporter's and paddle2onnx's Constant
    nodes; the TorchScript exporter's Identity on a BatchNormalization bias it shares between two
    layers; Cast of a float16 weight, Reshape/Unsqueeze/Squeeze/Transpose of a stored weight to the
    layout a layer reads (tf2onnx and old converters). As plain constants, each reader's parameters
    can be sliced with its channels. The nodes are in topological order, so a chain of them folds
    in this one pass: each one's readers see a constant when their turn comes.
    """
    outputs = {t.name for t in graph.outputs}
    changed = False
    for node in graph.nodes:
        if len(node.outputs) != 1 or node.outputs[0].name in outputs:
            continue
        values = constant_result(node)
        if values is None:
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
    """Export a graph with the template's opsets, IR version, metadata and way of listing inputs.

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
    initializers = {t.name for t in template.graph.initializer}
    if template.ir_version < 4 or any(i.name in initializers for i in template.graph.input):
        # IR < 4 requires every initializer to be a graph input too, and old exporters list them so
        # at any IR. The surviving weights are listed again after the real inputs, rather than the
        # IR version raised: the model keeps the IR that whatever reads it was built for.
        model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims)
                                 for t in model.graph.initializer)
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


def save_model(model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool = False,
               limit: int | None = None) -> Path | None:
    """Write the model atomically; return the path of its external data file if one was written.

    The tensors go to ``PATH.data`` beside the model when ``external_data`` is asked for, or when
    they add up to more than ``limit`` bytes (default: just under protobuf's 2 GB limit, which a single
    file cannot pass).
    """
    path = Path(path)
    if not external_data and fits_in_one_message(model, limit):
        write_atomic(model.SerializeToString(), path)
        return None
    data_path = path.with_name(path.name + ".data")
    with _staged(data_path) as data_tmp, _staged(path) as model_tmp:
        moved: list[tuple[onnx.TensorProto, int, int]] = []
        try:
            _move_out(model, data_tmp, data_path.name, moved)
            model_tmp.write_bytes(model.SerializeToString())
        finally:
            _move_back(moved, data_tmp)
        os.replace(data_tmp, data_path)  # the data first: the new model never refers to old data
        os.replace(model_tmp, path)
    return data_path


def fits_in_one_message(model: onnx.ModelProto, limit: int | None = None) -> bool:
    """Whether the model's tensors add up to at most ``limit`` bytes (default: just under protobuf's
    2 GB limit, read at call time so that a test can lower it to exercise the paths past it)."""
    return sum(t.ByteSize() for t in _tensors(model.graph)) <= (EXTERNAL_DATA_ABOVE if limit is None else limit)


@contextmanager
def as_file(model: onnx.ModelProto) -> Iterator[Path]:
    """The model written with external data to a temporary directory, removed afterwards: how
    onnxruntime and onnx.checker take a model too large to pass as bytes."""
    with tempfile.TemporaryDirectory(prefix="onnxprune-model-") as directory:
        path = Path(directory) / "model.onnx"
        save_model(model, path, external_data=True)
        yield path


def check_any_size(model: onnx.ModelProto) -> None:
    """onnx.checker on the model, by path when it is too large to pass as one message."""
    if fits_in_one_message(model):
        onnx.checker.check_model(model)
        return
    with as_file(model) as path:
        onnx.checker.check_model(str(path))


_EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay in the model file, as onnx.save does


def _move_out(model: onnx.ModelProto, file: Path, location: str, moved: list) -> None:
    """Write the tensors' bytes to ``file`` and make the tensors refer to it as ``location``.

    ``moved`` collects (tensor, offset, length) as each tensor's bytes are safely on disk, so that
    :func:`_move_back` can restore the caller's model whatever happens. Writing ourselves rather
    than with onnx.save(save_as_external_data=True) keeps the data in a temporary file while the
    message names the final one, and holds a second copy of one tensor at a time, not of the model.
    """
    with open(file, "wb") as handle:
        for tensor in _tensors(model.graph):
            if not tensor.HasField("raw_data") or len(tensor.raw_data) < _EXTERNAL_MIN_BYTES:
                continue
            raw, offset = tensor.raw_data, handle.tell()
            handle.write(raw)
            handle.flush()  # a write error surfaces here, before the message loses the bytes
            moved.append((tensor, offset, len(raw)))
            external_data_helper.set_external_data(tensor, location, offset, len(raw))
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.ClearField("raw_data")


def _move_back(moved: list, file: Path) -> None:
    with open(file, "rb") as handle:
        for tensor, offset, length in moved:
            handle.seek(offset)
            tensor.raw_data = handle.read(length)
            tensor.ClearField("data_location")  # unset, as in a model that never had external data
            del tensor.external_data[:]


def write_text(text: str, path: str | os.PathLike) -> None:
    write_atomic(text.encode(), path)


def write_atomic(data: bytes, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same directory, renamed over the target at the end.

    An interrupted or failed write never leaves a partial file and never touches an existing one.
    """
    path = Path(path)
    with _staged(path) as tmp:
        tmp.write_bytes(data)
        os.replace(tmp, path)


@contextmanager
def _staged(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write and then rename onto it; removed if not renamed.

    Any OSError on the way (including creating the file) becomes a one-line OutputError.
    """
    check_writable(path)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make the model private to us
        yield tmp
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or first_line(exc)})") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike) -> None:
    """Fail early, before any work, when the output cannot be written."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give the path of a file to write")
    if not directory.is_dir():
        raise OutputError(f"{path}: output directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise OutputError(f"{path}: output directory {directory} is not writable")
