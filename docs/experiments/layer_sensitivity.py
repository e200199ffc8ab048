"""Per-layer sensitivity: relative logit error per relative error injected after each Conv/Gemm (+BN).

    python docs/experiments/layer_sensitivity.py MODEL.onnx CALIB.npy OUT.json [feat|white]

'feat' (as in docs/budgets.md): the injected error is another image's centred activation; 'white':
Gaussian noise with each channel's standard deviation. A layer whose output is a graph output
(the classifier) gets 1 by definition. The weights are read by
docs/experiments/sensitivity-weighted-ladders.patch from the file named in $SENS.
"""
import json, sys
import numpy as np, onnx, onnxruntime as ort
from onnx import helper, TensorProto

model_path, calib_path, out_path = sys.argv[1:4]
mode = sys.argv[4] if len(sys.argv) > 4 else "white"
N = 256
x = np.load(calib_path)[:N].astype(np.float32)
m = onnx.load(model_path)
g = m.graph
consumers = {}
for n in g.node:
    for i in n.input:
        consumers.setdefault(i, []).append(n)
inp = g.input[0].name
outname = g.output[0].name
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
def run(model, feeds):
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)
# clean run with all tap tensors as outputs
taps = {}
for n in g.node:
    if n.op_type in ("Conv", "Gemm", "MatMul"):
        t = n.output[0]
        c = consumers.get(t, [])
        if len(c) == 1 and c[0].op_type == "BatchNormalization":
            t = c[0].output[0]
        taps[n.name] = t
mc = onnx.ModelProto(); mc.CopyFrom(m)
for t in taps.values():
    mc.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
outs = run(mc, {inp: x})
logits = outs[0]
acts = dict(zip([o.name for o in mc.graph.output], outs))
lv = float(np.sum((logits - logits.mean(0)) ** 2))
rng = np.random.default_rng(0)
r = 0.1
result = {}
for name, t in taps.items():
    if t in {o.name for o in g.output}:
        result[name] = 1.0
        continue
    a = acts[t]
    axes = (0,) + tuple(range(2, a.ndim))
    sd = a.std(axis=axes, keepdims=True)
    if mode == "white":
        noise = rng.standard_normal(a.shape).astype(np.float32) * sd
    else:  # feature-like: another sample's centred activation
        cen = a - a.mean(axis=0, keepdims=True)
        noise = cen[rng.permutation(len(a))]
    noise *= r * np.sqrt(np.sum((a - a.mean(0)) ** 2) / np.sum(noise ** 2))
    mm = onnx.ModelProto(); mm.CopyFrom(m)
    newt = t + "__noisy"
    for n in mm.graph.node:
        for k, i in enumerate(n.input):
            if i == t:
                n.input[k] = newt
    mm.graph.node.append(helper.make_node("Add", [t, "__noise"], [newt], name="__inject"))
    mm.graph.input.append(helper.make_tensor_value_info("__noise", TensorProto.FLOAT, list(a.shape)))
    # topological order: put the Add right after the producer
    nodes = list(mm.graph.node)
    add = nodes.pop()
    idx = next(i for i, n in enumerate(nodes) if t in n.output)
    nodes.insert(idx + 1, add)
    del mm.graph.node[:]; mm.graph.node.extend(nodes)
    y = run(mm, {inp: x, "__noise": noise})[0]
    s = float(np.sum((y - logits) ** 2) / lv) / r ** 2
    agree = float(np.mean(y.argmax(1) == logits.argmax(1)))
    result[name] = s
    print(f"{name:50s} {t:30s} sens {s:8.4f} agree {agree:.3f}", flush=True)
json.dump(result, open(out_path, "w"), indent=1)
