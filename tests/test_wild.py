"""Models as exporters in the wild write them (issue 14): a static batch that the graph hard-codes,
initializers listed as graph inputs (IR < 4), weights in Constant nodes and behind Cast/Reshape
chains, symbolic height and width. Each must prune into a valid model and be counted right."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from builders import INPUT, OUTPUT, _Builder, run
from onnxprune.cli.summary import summary
from onnxprune.errors import ModelError

FAST = dict(max_iter=10, rows_per_layer=512)


MEASUREMENTS = ("eval", "check", "bench", "profile")


def _prune(model, calib, **options):
    """prune(), then the measurements named in ``options`` on the same calibration samples."""
    asked = {k: options.pop(k) for k in MEASUREMENTS if k in options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "GES stopped after 10 iterations"
        pruned, report = onnxprune.prune(model, calib, **{**FAST, **options})
    if asked:
        report = onnxprune.Measurements(**asked).add_to(report, model, pruned, {INPUT: calib})
    return pruned, report


def _head_model(batch, *, reshape_to=None, opset: int = 17, ir: int = 8, size=(8, 8), seed: int = 0):
    """conv1 (3->8, bias) -> relu1 -> conv2 (8->12, bias) -> relu2 -> gap -> Reshape(reshape_to) -> fc (10).

    ``batch`` is the input's first dim (an int fixes it); ``reshape_to`` the Reshape's constant
    target, by default (batch, 12), which hard-codes a fixed batch as exporters at batch 1 do.
    """
    b = _Builder(seed)
    x = b.node("Relu", "relu1", [b.conv("conv1", INPUT, 3, 8, bias=True)])
    x = b.node("Relu", "relu2", [b.conv("conv2", x, 8, 12, bias=True)])
    x = b.node("GlobalAveragePool", "gap", [x])
    target = reshape_to if reshape_to is not None else [batch, 12]
    x = b.node("Reshape", "reshape", [x, b.const("head_shape", np.array(target, dtype=np.int64))])
    b.gemm("fc", x, 12, 10, output=OUTPUT)
    inputs = [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [batch, 3, *size])]
    outputs = [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [batch, 10])]
    initializers = b.initializers
    if ir < 4:  # IR 3: every initializer is a graph input too
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in initializers]
    model = helper.make_model(helper.make_graph(b.nodes, "head", inputs, outputs, initializer=initializers),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.checker.check_model(model, full_check=True)
    return model


def _calib(n: int, size=(8, 8), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, *size)).astype(np.float32)


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


# --- 1. a static batch, honoured by every onnxruntime run ---------------------------------------


def test_static_batch_hard_coded_in_a_reshape_prunes_measures_and_verifies():
    # Batch 3 against 20 samples: every run has 3 rows, the last one padded (20 = 6 * 3 + 2).
    model, x = _head_model(3), _calib(20)
    y = np.random.default_rng(2).integers(0, 10, 20)
    pruned, report = _prune(model, x, eps_l2=2.0, check=True, bench=True, eval=(x, y), profile=True)
    onnx.checker.check_model(pruned, full_check=True)
    assert [i.name for i in pruned.graph.input] == [INPUT] and [o.name for o in pruned.graph.output] == [OUTPUT]
    assert pruned.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    assert report.params_after < report.params_before
    assert run(pruned, x[:3]).shape == (3, 10)
    assert report.check.samples == 20 and report.accuracy.samples == 20
    assert [t.batch for t in report.latency] == [3]
    assert report.timings["forward_once"] >= 0


def test_statistics_do_not_depend_on_the_declared_batch():
    # The same network with a free batch: its runs take 128 rows, the static one's 3; the walk's
    # statistics stream over the same batches either way, so it keeps the same channels.
    x = _calib(20)
    static, _ = _prune(_head_model(3), x, eps_l2=2.0)
    free, _ = _prune(_head_model("batch", reshape_to=[-1, 12]), x, eps_l2=2.0)
    static_w, free_w = _weights(static), _weights(free)
    assert {k: v.shape for k, v in static_w.items() if k != "head_shape"} == \
           {k: v.shape for k, v in free_w.items() if k != "head_shape"}
    assert static_w["conv2.weight"].shape[0] < 12  # something was pruned, so the comparison means something
    for name in ("conv1.weight", "conv2.weight", "fc.weight"):
        np.testing.assert_allclose(static_w[name], free_w[name], rtol=1e-4, atol=1e-5)


def test_inputs_fixing_different_batches_are_refused_before_any_work():
    model = _head_model(3)
    second = helper.make_tensor_value_info("other", TensorProto.FLOAT, [2, 4])
    model.graph.input.append(second)
    with pytest.raises(ModelError, match="fix different batch sizes"):
        onnxprune.prune(model, {INPUT: _calib(6), "other": np.zeros((6, 4), np.float32)})


# --- 2. initializers listed as graph inputs (IR < 4) ---------------------------------------------


@pytest.mark.parametrize("batch, reshape_to", [("batch", [-1, 12]), (1, None)])  # as old zoo models: also batch 1
def test_ir3_initializers_as_inputs_keep_the_interface_and_the_listing(batch, reshape_to):
    model, x = _head_model(batch, reshape_to=reshape_to, opset=8, ir=3), _calib(20)
    pruned, report = _prune(model, x, eps_l2=2.0)
    onnx.checker.check_model(pruned, full_check=True)  # IR 3: fails if an initializer is not listed
    assert pruned.ir_version == 3
    initializers = [t.name for t in pruned.graph.initializer]
    listed = [i.name for i in pruned.graph.input]
    assert listed[0] == INPUT and sorted(listed[1:]) == sorted(initializers)
    assert report.params_after < report.params_before
    # Fed by the real input alone, as the original is.
    n = 20 if batch == "batch" else batch
    assert run(pruned, x[:n]).shape == run(model, x[:n]).shape == (n, 10)


# --- 3. weights in Constant nodes and behind Identity/Cast/Reshape/Squeeze/Transpose chains ------


def _float_elements(model: onnx.ModelProto) -> int:
    """An independent count: elements of the float tensors the file holds, read with numpy."""
    arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
    arrays += [numpy_helper.to_array(a.t) for n in model.graph.node for a in n.attribute if a.HasField("t")]
    return sum(a.size for a in arrays if np.issubdtype(a.dtype, np.floating))


def _half_conv1(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with conv1's weight rounded to float16 precision (the Cast case's reference)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name == "conv1.weight":
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16).astype(np.float32), t.name))
    return out


def _constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every initializer as a Constant node (paddle2onnx's style); conv1's weight stored as float16
    behind a Cast."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for t in out.graph.initializer:
        if t.name == "conv1.weight":
            half = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), "conv1.weight.half")
            nodes.append(helper.make_node("Constant", [], [half.name], value=half))
            nodes.append(helper.make_node("Cast", [half.name], [t.name], to=TensorProto.FLOAT))
        else:
            nodes.append(helper.make_node("Constant", [], [t.name], value=t))
    del out.graph.initializer[:]
    _prepend(out.graph, nodes)
    onnx.checker.check_model(out, full_check=True)
    return out


def _behind_chains(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weights stored in another layout and brought to the layer's by constant-only nodes: fc's
    weight flat behind a Reshape then an Identity, conv2's transposed behind a Transpose, the conv
    biases as (1, C) behind a Squeeze, conv1's bias as (C,) behind Unsqueeze then Squeeze."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    arrays = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    stored, nodes = {}, []

    def chain(name, stored_name, array, *steps):
        """``array`` stored as ``stored_name``, then steps (op, constant second input or None,
        attributes) to ``name``."""
        stored[stored_name], source = array, stored_name
        for k, (op, second, attrs) in enumerate(steps):
            target = name if k == len(steps) - 1 else f"{name}.step{k}"
            inputs = [source]
            if second is not None:
                stored[f"{target}.arg"] = second
                inputs.append(f"{target}.arg")
            nodes.append(helper.make_node(op, inputs, [target], **attrs))
            source = target

    w = arrays.pop("fc.weight")
    chain("fc.weight", "fc.weight.flat", w.reshape(-1),
          ("Reshape", np.array(w.shape, np.int64), {}), ("Identity", None, {}))
    w = arrays.pop("conv2.weight")
    chain("conv2.weight", "conv2.weight.t", w.transpose(1, 0, 2, 3).copy(), ("Transpose", None, {"perm": [1, 0, 2, 3]}))
    b = arrays.pop("conv2.bias")
    chain("conv2.bias", "conv2.bias.row", b[None], ("Squeeze", np.array([0], np.int64), {}))
    b = arrays.pop("conv1.bias")
    chain("conv1.bias", "conv1.bias.flat", b, ("Unsqueeze", np.array([1], np.int64), {}),
          ("Squeeze", np.array([1], np.int64), {}))
    del out.graph.initializer[:]
    out.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in {**arrays, **stored}.items())
    _prepend(out.graph, nodes)
    onnx.checker.check_model(out, full_check=True)
    return out


def _prepend(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)


@pytest.mark.parametrize("restyle, reference", [(_constant_nodes, _half_conv1), (_behind_chains, lambda m: m)])
def test_weights_behind_constant_nodes_and_chains_are_counted_and_pruned(restyle, reference):
    base, x = _head_model("batch", reshape_to=[-1, 12]), _calib(40)
    model, plain = restyle(base), reference(base)
    np.testing.assert_allclose(run(model, x), run(plain, x), rtol=1e-6, atol=1e-6)  # the same network
    pruned, report = _prune(model, x, eps_l2=2.0)
    expected, expected_report = _prune(plain, x, eps_l2=2.0)
    # Counted as the file holds them, each once; equal to the plain model's count.
    assert report.params_before == _float_elements(model) == expected_report.params_before > 0
    assert report.params_after == expected_report.params_after < report.params_before
    assert [(l.name, l.channels_after, l.in_channels_after) for l in report.layers] == \
           [(l.name, l.channels_after, l.in_channels_after) for l in expected_report.layers]
    # Pruned and rewritten as initializers, with the same values as the plain model's.
    got, want = _weights(pruned), _weights(expected)
    for name in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight", "fc.bias"):
        np.testing.assert_array_equal(got[name], want[name])
    assert not any(n.op_type in ("Constant", "Cast", "Transpose", "Squeeze", "Unsqueeze") for n in pruned.graph.node)


# --- 4. symbolic height and width: counted at the calibration data's size -------------------------


def _checked_model(b: _Builder, name: str, input_shape: list, output_shape: list) -> onnx.ModelProto:
    """The builder's nodes as an opset-17 model with the given interface shapes, checked."""
    inputs = [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, input_shape)]
    outputs = [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, output_shape)]
    model = helper.make_model(helper.make_graph(b.nodes, name, inputs, outputs, initializer=b.initializers),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _symbolic_hw_model(seed: int = 0) -> onnx.ModelProto:
    """conv1 (3->8, 3x3, pad 1) -> relu1 -> conv2 (8->12, 3x3, pad 1, stride 2) -> relu2 -> gap ->
    flatten -> fc (12->10); input ["batch", 3, "height", "width"]."""
    b = _Builder(seed)
    x = b.node("Relu", "relu1", [b.conv("conv1", INPUT, 3, 8, bias=True)])
    x = b.node("Relu", "relu2", [b.conv("conv2", x, 8, 12, bias=True, stride=2)])
    x = b.node("Flatten", "flatten", [b.node("GlobalAveragePool", "gap", [x])], axis=1)
    b.gemm("fc", x, 12, 10, output=OUTPUT)
    return _checked_model(b, "symbolic_hw", ["batch", 3, "height", "width"], ["batch", 10])


def test_symbolic_height_and_width_are_counted_at_the_calibration_size():
    x = _calib(24, size=(10, 14))
    pruned, report = _prune(_symbolic_hw_model(), x, eps_l2=2.0)
    layers = {layer.name: layer for layer in report.layers}

    def macs(c_out, c_in, pixels):  # a 3x3 conv: one MAC per weight per output pixel
        return c_out * c_in * 9 * pixels

    full, half = 10 * 14, 5 * 7  # conv2's stride 2 halves 10x14
    assert layers["conv1"].macs_before == macs(8, 3, full)
    assert layers["conv2"].macs_before == macs(12, 8, half)
    assert report.macs_before == macs(8, 3, full) + macs(12, 8, half) + 12 * 10
    c1, c2 = layers["conv1"].channels_after, layers["conv2"].channels_after
    assert c2 < 12  # pruned, so the after count is tested too
    assert report.macs_after == macs(c1, 3, full) + macs(c2, c1, half) + c2 * 10
    assert report.input_shapes == {INPUT: ["batch", 3, 10, 14]}
    assert "counted at: input [batch, 3, 10, 14]" in summary(report)
    # The written model keeps its symbolic sizes, and a model that fixes them reports no input size.
    assert [d.dim_param for d in pruned.graph.input[0].type.tensor_type.shape.dim] == ["batch", "", "height", "width"]
    _, fixed = _prune(_head_model("batch", reshape_to=[-1, 12]), _calib(24), eps_l2=2.0)
    assert fixed.input_shapes == {} and "counted at" not in summary(fixed)


# --- 5. peak memory covers the measurements --------------------------------------------------------


def test_peak_memory_is_read_after_the_measurements(monkeypatch):
    import onnxprune.measure.measurements as api

    measured = []
    real_difference = api.output_difference

    def output_difference(*args, **kwargs):
        measured.append(True)
        return real_difference(*args, **kwargs)

    # The peak this process reaches is a high-water mark: reading it before --check runs would miss
    # what --check takes. Reported as 2.0 once the check has run, 1.0 before.
    monkeypatch.setattr(api, "output_difference", output_difference)
    monkeypatch.setattr(api, "peak_memory_mb", lambda: 2.0 if measured else 1.0)
    _, report = _prune(_head_model("batch", reshape_to=[-1, 12]), _calib(20), eps_l2=2.0, check=True)
    assert measured and report.peak_memory_mb == 2.0


# --- shapes that only a run knows (corpus: YOLO's C2f, torch's chunk) -----------------------------


def _computed_slice_model(seed: int = 0) -> onnx.ModelProto:
    """conv1 (3->8) -> relu1 -> Slice of the top half of H, its end computed as Shape(x)[2] / 2 (torch's
    ``chunk``: shape inference cannot follow the Div) -> conv2 (8->12) -> relu2 -> gap -> flatten -> fc."""
    b = _Builder(seed)
    x = b.node("Relu", "relu1", [b.conv("conv1", INPUT, 3, 8, bias=True)])
    h = b.node("Gather", "h", [b.node("Shape", "shape", [x]), b.const("two", np.array([2], dtype=np.int64))])
    half = b.node("Div", "half", [h, b.const("halver", np.array([2], dtype=np.int64))])
    x = b.node("Slice", "top", [x, b.const("zero", np.array([0], dtype=np.int64)), half,
                                b.const("axis_h", np.array([2], dtype=np.int64))])
    x = b.node("Relu", "relu2", [b.conv("conv2", x, 8, 12, bias=True)])
    x = b.node("Flatten", "flatten", [b.node("GlobalAveragePool", "gap", [x])], axis=1)
    b.gemm("fc", x, 12, 10, output=OUTPUT)
    return _checked_model(b, "computed_slice", [1, 3, 8, 8], [1, 10])


def test_shapes_that_inference_cannot_follow_are_read_from_one_run():
    from onnxprune.graph.io import to_graph
    from onnxprune.graph.shapes import tensor_shapes
    from onnxprune.ops import node_macs

    model = onnx.shape_inference.infer_shapes(_computed_slice_model())
    known = {vi.name: vi for vi in model.graph.value_info}
    dims = known["conv2_out"].type.tensor_type.shape.dim if "conv2_out" in known else []
    assert not all(d.HasField("dim_value") for d in dims)  # the premise: inference leaves H unknown
    shapes = tensor_shapes(model)
    assert shapes["top_out"] == (1, 8, 4, 8) and shapes["conv2_out"] == (1, 12, 4, 8)
    conv2 = next(n for n in to_graph(model).nodes if n.name == "conv2")
    assert node_macs(conv2, shapes) == 12 * 8 * 9 * 4 * 8
    _, report = _prune(model, _calib(16), eps_l2=2.0)
    assert report.macs_before == 8 * 3 * 9 * 64 + 12 * 8 * 9 * 32 + 12 * 10


def _resize_by_sizes_model(kind: str):
    """conv1 (3->8) -> Resize x2 by sizes -> conv2 (8->12) -> gap -> Reshape -> fc, batch 1.
    kind: "all" (constant sizes of every axis, opset 17), "axes" (sizes of H, W only: opset 18's
    ``axes``), "computed" (sizes from Shape)."""
    b = _Builder(0)
    x = b.node("Relu", "relu1", [b.conv("conv1", INPUT, 3, 8, bias=True)])
    if kind == "computed":
        hw = b.node("Slice", "hw", [b.node("Shape", "shape", [INPUT]), b.const("from", np.array([2])),
                                    b.const("to", np.array([4]))])
        hw = b.node("Mul", "double", [hw, b.const("twice", np.array([2, 2], dtype=np.int64))])
        sizes = b.node("Concat", "sizes", [b.const("nc", np.array([1, 8], dtype=np.int64)), hw], axis=0)
        x = b.node("Resize", "resize", [x, "", "", sizes], mode="nearest")
    elif kind == "axes":
        x = b.node("Resize", "resize", [x, "", "", b.const("sizes", np.array([16, 16], dtype=np.int64))],
                   mode="nearest", axes=[2, 3])
    else:
        x = b.node("Resize", "resize", [x, "", "", b.const("sizes", np.array([1, 8, 16, 16], dtype=np.int64))],
                   mode="nearest")
    x = b.node("Relu", "relu2", [b.conv("conv2", x, 8, 12, bias=True)])
    x = b.node("Reshape", "reshape", [b.node("GlobalAveragePool", "gap", [x]),
                                      b.const("head_shape", np.array([1, 12], dtype=np.int64))])
    b.gemm("fc", x, 12, 10, output=OUTPUT)
    hw = ["h", "w"] if kind == "computed" else [8, 8]  # a symbolic size keeps Shape from folding to a constant
    return b.model_io("resize", [1, 3, *hw], [1, 10], opset=18 if kind == "axes" else 17)


@pytest.mark.parametrize("kind", ["all", "axes"])
def test_resize_by_sizes_passes_channels_and_its_sizes_follow_a_removal(kind):
    from onnxprune.graph.io import export
    from onnxprune.pruning.rewrite import remove_classes
    from test_branches import _analysed
    model, graph, channels = _analysed(_resize_by_sizes_model(kind))
    unit = next(u for u in channels.units() if [layer.name for layer in u.consumers] == ["conv2"])
    chosen = unit.classes[[1, 4, 6]]
    conv2 = next(layer for layer in channels.layers if layer.name == "conv2")
    weight = np.array(conv2.weight_tensor.values)
    weight[:, [1, 4, 6]] = 0.0  # conv2 reads nothing from those channels: removing them changes nothing
    conv2.weight_tensor.values = weight
    reference = export(graph, model)
    remove_classes(channels, graph, chosen)
    pruned = export(graph, model)
    onnx.checker.check_model(pruned, full_check=True)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(pruned, x), run(reference, x), rtol=1e-4, atol=1e-5)
    sizes = next(node for node in graph.nodes if node.op == "Resize").inputs[3].values
    assert list(sizes) == ([1, 5, 16, 16] if kind == "all" else [16, 16])


def test_resize_by_computed_sizes_is_frozen_with_its_reason():
    from test_branches import _analysed
    _, graph, channels = _analysed(_resize_by_sizes_model("computed"))
    resize = next(node for node in graph.nodes if node.op == "Resize")
    reasons = {channels.frozen.get(int(c)) for c in channels.classes(resize.inputs[0].name)}
    assert reasons == {"Resize 'resize': Resize by computed sizes (their channel entry is not known to follow a removal)"}


def _view_flatten_model(keep_channels: bool = False):
    """conv1 (3->8) -> Relu -> Reshape by a target computed from Shape -> fc. By default the target is
    (x.size(0), -1): PyTorch's ``x.view(x.size(0), -1)`` with a dynamic batch (Shape -> Gather ->
    Unsqueeze -> Concat). With ``keep_channels`` it is (x.size(0), x.size(1), -1), then a mean over
    the last axis: the Shape's channel entry is read."""
    b = _Builder(0)
    x = b.node("Relu", "relu1", [b.conv("conv1", INPUT, 3, 8, bias=True)])
    shape = b.node("Shape", "shape", [x])
    if keep_channels:
        sizes = b.node("Gather", "size", [shape, b.const("entries", np.array([0, 1], dtype=np.int64))])
    else:
        b.initializers.append(numpy_helper.from_array(np.array(0, dtype=np.int64), "entry"))  # a scalar index
        sizes = b.node("Unsqueeze", "unsqueeze", [b.node("Gather", "size", [shape, "entry"]), b.const("zero", np.array([0]))])
    target = b.node("Concat", "target", [sizes, b.const("rest", np.array([-1], dtype=np.int64))], axis=0)
    x = b.node("Reshape", "view", [x, target])
    if keep_channels:
        x = b.node("ReduceMean", "mean", [x], axes=[2], keepdims=0)
    b.gemm("fc", x, 8 if keep_channels else 8 * 16, 10, output=OUTPUT)
    return b.model_io("view", ["n", 3, 4, 4], ["n", 10], opset=13)


def test_a_view_by_the_batch_size_leaves_the_channels_prunable():
    from onnxprune.graph.io import export
    from onnxprune.pruning.rewrite import remove_classes
    from test_branches import _analysed
    model, graph, channels = _analysed(_view_flatten_model())
    unit = next(u for u in channels.units() if [layer.name for layer in u.consumers] == ["fc"])
    assert len(unit.classes) == 8  # conv1's channels: the Shape reads only the batch entry
    fc = next(layer for layer in channels.layers if layer.name == "fc")
    weight = np.array(fc.weight_tensor.values)  # (10, 8*16): channel c is features c*16 .. c*16+15
    for c in (2, 5):
        weight[:, c * 16:(c + 1) * 16] = 0.0
    fc.weight_tensor.values = weight
    reference = export(graph, model)
    remove_classes(channels, graph, unit.classes[[2, 5]])
    pruned = export(graph, model)
    onnx.checker.check_model(pruned, full_check=True)
    x = np.random.default_rng(1).standard_normal((3, 3, 4, 4)).astype(np.float32)  # any batch size
    np.testing.assert_allclose(run(pruned, x), run(reference, x), rtol=1e-4, atol=1e-5)


def test_a_shape_whose_channel_entry_is_read_freezes_the_channels():
    from test_branches import _analysed
    _, graph, channels = _analysed(_view_flatten_model(keep_channels=True))
    shape = next(node for node in graph.nodes if node.op == "Shape")
    reasons = {channels.frozen.get(int(c)) for c in channels.classes(shape.inputs[0].name)}
    assert reasons == {"Shape 'shape': the channel count it gives is read by Gather 'size'"}
