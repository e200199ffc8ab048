"""onnxruntime sessions, made one way for every stage (calibration, verification, measurement)."""

from __future__ import annotations

import onnx
import onnxruntime as ort

from onnxprune.graph.io import as_file, fits_in_one_message


def make_session(model: onnx.ModelProto, threads: int = 0) -> ort.InferenceSession:
    """A CPU session of the model: from its bytes, or, past protobuf's 2 GB limit, from a
    temporary file with external data (onnxruntime has read the weights when it returns)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # our graphs carry no stale shapes, warnings would only be noise
    options.intra_op_num_threads = threads
    if fits_in_one_message(model):
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    with as_file(model) as path:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
