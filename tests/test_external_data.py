"""Models whose weights live in external data files: loading, pruning, writing (issue 6, item 3).

A real >2 GB model is not built here: the size at which save_model switches to external data is a
parameter, and the loader takes the same path for any model that has external data.
"""

from __future__ import annotations

import contextlib
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import onnxprune
from builders import INPUT, OUTPUT, lenet_like, random_inputs, run, save_inputs
from onnxprune import runtime
from onnxprune.cli import main
from onnxprune.errors import OutputError
from onnxprune.graph import io
from onnxprune.graph.io import load_model, save_model
from topologies import build

EXTERNAL = {"save_as_external_data": True, "location": "m.onnx.data", "size_threshold": 0}


def _session_from_path(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_load_matches_inline(tmp_path):
    """Every tensor external, a Reshape's target shape included (shape inference needs its values)."""
    model = build(["shuffle"])  # a channel shuffle: Reshape -> Transpose -> Reshape with constant shapes
    inline = tmp_path / "inline.onnx"
    onnx.save(model, inline)
    path, _ = save_inputs(tmp_path, model, **EXTERNAL)
    stored = onnx.load(str(path), load_external_data=False).graph.initializer
    assert all(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in stored)
    loaded, expected = load_model(path), load_model(inline)
    assert loaded.SerializeToString() == expected.SerializeToString()
    assert any(vi.type.tensor_type.shape.dim for vi in loaded.graph.value_info)


def test_save_decision_by_size(tmp_path):
    model = load_model(save_inputs(tmp_path)[0])
    before = model.SerializeToString()
    assert save_model(model, tmp_path / "small.onnx") is None  # far below the 2 GB limit: one file
    assert save_model(model, tmp_path / "big.onnx", limit=1000) == tmp_path / "big.onnx.data"
    assert save_model(model, tmp_path / "asked.onnx", external_data=True) == tmp_path / "asked.onnx.data"
    assert model.SerializeToString() == before  # the caller's model is left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asked.onnx", "asked.onnx.data", "big.onnx",
                                                           "big.onnx.data", "in", "small.onnx"]
    onnx.checker.check_model(str(tmp_path / "big.onnx"))
    assert load_model(tmp_path / "big.onnx").SerializeToString() == load_model(tmp_path / "small.onnx").SerializeToString()
    x = random_inputs(model, 4)
    np.testing.assert_array_equal(_session_from_path(tmp_path / "big.onnx").run([OUTPUT], {INPUT: x})[0], run(model, x))


def test_save_failure_restores_model_and_leaves_nothing(tmp_path, monkeypatch):
    model = load_model(save_inputs(tmp_path)[0])
    before = model.SerializeToString()
    (tmp_path / "out").mkdir()

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", fail)
    with pytest.raises(OutputError, match="cannot write"):
        save_model(model, tmp_path / "out" / "m.onnx", external_data=True)
    assert model.SerializeToString() == before
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_external_in_and_out(tmp_path):
    """An external-data model prunes (onnxruntime verification included) and --external-data writes
    OUT.onnx + OUT.onnx.data that load from their directory and compute what the one-file output does."""
    path, calib = save_inputs(tmp_path, **EXTERNAL)
    (tmp_path / "out").mkdir()
    one_file, split = tmp_path / "out" / "one.onnx", tmp_path / "out" / "split.onnx"
    for out, extra in ((one_file, []), (split, ["--external-data"])):
        result = CliRunner().invoke(main, [str(path), str(out), "--calib", str(calib), *extra])
        assert result.exit_code == 0, result.output
    assert f"written: {split}, weights: {split}.data" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one.onnx", "split.onnx", "split.onnx.data"]
    onnx.checker.check_model(str(split), full_check=True)
    session = _session_from_path(split)
    assert [i.name for i in session.get_inputs()] == [INPUT] and [o.name for o in session.get_outputs()] == [OUTPUT]
    x = random_inputs(lenet_like(), 4)
    np.testing.assert_array_equal(session.run([OUTPUT], {INPUT: x})[0], run(onnx.load(str(one_file)), x))


def test_models_past_the_message_limit_prune_through_files(tmp_path, monkeypatch):
    """Past protobuf's 2 GB limit no model can be handed to onnxruntime or onnx.checker as bytes.

    With the limit lowered to 1 kB every session (graph segments, the look-ahead pass, the check)
    and the final checker go through a temporary file with external data: the result must be the
    same model, and the temporary files must be gone.
    """
    model = build(["residual", ("residual", {"stride": 2, "c_out": 12})], seed=3)
    x = random_inputs(model, 32)
    expected, _ = onnxprune.prune(model, x, rows_per_layer=2048)
    monkeypatch.setattr(io, "EXTERNAL_DATA_ABOVE", 1000)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    written = []
    as_file = io.as_file

    @contextlib.contextmanager
    def counting(m):
        with as_file(m) as path:
            written.append(path)
            yield path

    monkeypatch.setattr(io, "as_file", counting)
    monkeypatch.setattr(runtime, "as_file", counting)
    pruned, _ = onnxprune.prune(model, x, rows_per_layer=2048)
    assert len(written) > 3  # segments of both networks, the look-ahead pass, the checker
    assert pruned.SerializeToString() == expected.SerializeToString()
    assert list(tmp_path.iterdir()) == []
