"""segment_model over every layer stop of a model, the copy-the-whole-graph version against the current one.

    git show 8723d9a:onnxprune/calib/runner.py > /tmp/old_runner.py
    python docs/experiments/segment_copy_bench.py MODEL.onnx [MODEL.onnx ...]
"""
import sys, time, importlib.util
import numpy as np, onnx, onnx_graphsurgeon as gs
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from onnxprune.calib.runner import segment_model as new
spec = importlib.util.spec_from_file_location("old_runner", "/tmp/old_runner.py"); old_mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(old_mod)
for name in sys.argv[1:]:
    graph = gs.import_onnx(onnx.load(name))
    order = [n for n in graph.nodes]
    stops = [i for i, n in enumerate(order) if n.op in ("Conv", "Gemm")] + [len(order)]
    for label, fn in (("old", old_mod.segment_model), ("new", new)):
        t = time.perf_counter(); count = 0
        prev = 0
        for stop in stops[1:]:
            nodes = order[prev:stop]
            names = {n.name for n in nodes}
            produced = {t.name for n in nodes for t in n.outputs}
            inputs = sorted({t.name for n in nodes for t in n.inputs if isinstance(t, gs.Variable) and t.name and t.name not in produced})
            outputs = sorted(produced)
            fn(graph, names, inputs, outputs, {i: np.float32 for i in inputs}); count += 1
            prev = stop
        print(name.split('/')[-1], label, f"{count} segments, {len(order)} nodes: {time.perf_counter()-t:.2f}s")
