"""Batch-1 onnxruntime latency of a model as given against the same model with its channel shuffles as Gathers.

    python docs/experiments/shuffle_gather_latency.py MODEL.onnx
"""
import time, numpy as np, onnx, onnx_graphsurgeon as gs, onnxruntime as ort, sys
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from onnxprune.graph.io import to_graph, export
from onnxprune.graph.shapes import tensor_shapes
from onnxprune.graph.shuffle import shuffles_as_gathers
path = sys.argv[1]
model = onnx.load(path)
g = to_graph(model); n = shuffles_as_gathers(g, tensor_shapes(model)); rewritten = export(g, model)
so = ort.SessionOptions(); so.intra_op_num_threads = 1
sa = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
sb = ort.InferenceSession(rewritten.SerializeToString(), so, providers=["CPUExecutionProvider"])
name = sa.get_inputs()[0].name; shape = [d if isinstance(d, int) else 1 for d in sa.get_inputs()[0].shape]
x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
np.testing.assert_allclose(sa.run(None, {name: x})[0], sb.run(None, {name: x})[0], rtol=1e-4, atol=1e-4)
ta, tb = [], []
for _ in range(10): sa.run(None, {name: x}); sb.run(None, {name: x})
for _ in range(200):
    t = time.perf_counter(); sa.run(None, {name: x}); ta.append(time.perf_counter() - t)
    t = time.perf_counter(); sb.run(None, {name: x}); tb.append(time.perf_counter() - t)
print(f"{path.split('/')[-1]}: {n} shuffles; batch 1, 1 thread, median of 200 interleaved runs: reshape/transpose {1e3*np.median(ta):.3f} ms, gather {1e3*np.median(tb):.3f} ms")
