"""Property-based: any plain CNN assembled from the supported pieces prunes into a valid model."""

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import onnxprune
from builders import INPUT, OUTPUT, random_chain, random_inputs, run

block = st.tuples(
    st.integers(2, 8),                               # output channels
    st.sampled_from([1, 3]),                         # kernel
    st.sampled_from([1, 2]),                         # stride
    st.booleans(),                                   # BatchNormalization
    st.sampled_from([None, "Relu", "Sigmoid", "LeakyRelu"]),
    st.booleans(),                                   # MaxPool 2
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(block, min_size=1, max_size=3), head=st.sampled_from(["flatten", "gap"]),
       hidden=st.sampled_from([None, 12]), eps_l2=st.floats(1e-3, 10.0), seed=st.integers(0, 3))
def test_any_pruning_gives_a_valid_model(blocks, head, hidden, eps_l2, seed):
    model = random_chain(blocks, head, hidden, seed=seed)
    calib = random_inputs(model, 24, seed=seed)
    pruned, report = onnxprune.prune(model, calib, eps_l2=eps_l2, max_iter=5, rows_per_layer=256, seed=seed)

    onnx.checker.check_model(pruned, full_check=True)
    assert [i.name for i in pruned.graph.input] == [INPUT]
    assert [o.name for o in pruned.graph.output] == [OUTPUT]
    x = random_inputs(model, 5, seed=seed + 100)
    out = run(pruned, x)
    assert out.shape == run(model, x).shape == (5, 10)
    assert np.all(np.isfinite(out))
    assert report.params_after <= report.params_before + sum(b[0] for b in blocks if b[3])  # intercepts only
    for layer in report.layers:
        assert 1 <= layer.channels_after <= layer.channels_before
