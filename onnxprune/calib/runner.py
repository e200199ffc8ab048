"""Run a graph segment by segment with onnxruntime, keeping only the tensors later nodes need.

Pruning walks the layers in topological order and each regression needs the activations at one
layer's input. Instead of re-running the network from its inputs for every layer, the runner
executes only the nodes between the previous stop and the next one, feeding them the cached
tensors of the previous stop: over a whole pruning run every node executes once per model.
The graph may be edited between stops (that is the point: the pruned network is rewritten as it
goes); each segment is exported from the graph as it is when the segment runs. The cached
tensors go through an ActivationStore (calib/store.py), which keeps them on disk once they
outgrow its memory budget; the segments read and write them one batch at a time.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import onnx
import onnx_graphsurgeon as gs

import onnxruntime as ort

from onnxprune.calib.store import ActivationStore, StoredTensor
from onnxprune.ops.constants import SHAPE_OPS
from onnxprune.runtime import declared_batch, make_session, run_batches

log = logging.getLogger(__name__)


def segment_model(graph: gs.Graph, node_names: set[str], input_names: list[str],
                  output_names: list[str], dtypes: dict[str, np.dtype]) -> onnx.ModelProto:
    """The sub-graph made of ``node_names``, cut at the given tensors.

    Only the segment's nodes and the tensors they touch are copied (copying the whole graph for
    every segment cost about 5 % of a MobileNetV3 prune); constants share their values, and
    subgraph attributes (If, Loop) are shared, since they name the outer tensors they read.
    Variables lose their shapes: channel counts change as the graph is pruned.
    """
    nodes = [node for node in graph.nodes if node.name in node_names]
    copies: dict[str, gs.Tensor] = {}

    def copy_of(tensor: gs.Tensor) -> gs.Tensor:
        if not tensor.name:
            return gs.Variable.empty()
        if tensor.name not in copies:
            copies[tensor.name] = (gs.Constant(tensor.name, tensor.values) if isinstance(tensor, gs.Constant)
                                   else gs.Variable(tensor.name, dtype=tensor.dtype))
        return copies[tensor.name]

    segment_nodes = [gs.Node(node.op, node.name, dict(node.attrs), [copy_of(t) for t in node.inputs],
                             [copy_of(t) for t in node.outputs], domain=node.domain) for node in nodes]
    for name in output_names:
        if copies[name].dtype is None:
            copies[name].dtype = np.float32
    for name in input_names:
        copies[name].dtype = dtypes[name]
    segment = gs.Graph(nodes=segment_nodes, inputs=[copies[name] for name in input_names],
                       outputs=[copies[name] for name in output_names], opset=graph.opset,
                       import_domains=graph.import_domains, functions=graph.functions)
    return gs.export_onnx(segment, do_type_check=False)


class SegmentRunner:
    """Advance a graph's execution from stop to stop over the whole calibration set.

    ``cache`` holds, for every sample, each tensor that is produced before the current position
    and read at or after it: the live frontier of the network, in ``store`` (memory or disk).
    ``per_run`` holds the frontier's tensors that do not depend on the sample (shapes), whole.
    """

    def __init__(self, graph: gs.Graph, inputs: dict[str, StoredTensor], store: ActivationStore, *,
                 batch_size: int = 128) -> None:
        self.graph, self.store = graph, store
        self.order = [node.name for node in graph.nodes]
        self.position = 0
        self.batch_size = batch_size
        self.cache: dict[str, StoredTensor] = dict(inputs)
        self.per_run: dict[str, np.ndarray] = {}
        self.n = next(iter(inputs.values())).n
        outputs = {t.name for t in graph.outputs}
        self.last_use: dict[str, float] = {}
        for index, node in enumerate(graph.nodes):
            for tensor in node.inputs:
                if isinstance(tensor, gs.Variable):
                    self.last_use[tensor.name] = index
        for name in outputs:
            self.last_use[name] = math.inf
        self.unbatched = unbatched_tensors(graph)
        # Every segment runs at the batch the model's inputs fix, if they fix one (shapes inside
        # the model may hard-code it); the segments' own inputs declare no shapes.
        self.fixed_batch = declared_batch(t.shape for t in graph.inputs)
        self.seconds = 0.0

    def advance_to(self, node_name: str) -> None:
        """Execute every node before ``node_name`` not yet executed."""
        stop = self.order.index(node_name)
        if stop < self.position:
            raise ValueError(f"node '{node_name}' was already passed")
        if stop == self.position:
            return
        start_time = time.perf_counter()
        names = set(self.order[self.position:stop])
        nodes = [n for n in self.graph.nodes if n.name in names]
        produced = {t.name for n in nodes for t in n.outputs if t.name}
        inputs = sorted({t.name for n in nodes for t in n.inputs
                         if isinstance(t, gs.Variable) and t.name and t.name not in produced})
        outputs = sorted(name for name in produced if self.last_use.get(name, -1) >= stop)
        dtypes = {name: self.per_run[name].dtype if name in self.per_run else self.cache[name].dtype for name in inputs}
        session = make_session(segment_model(self.graph, names, inputs, outputs, dtypes))
        self._run(session, inputs, outputs)
        for name in [k for k in self.cache if self.last_use.get(k, -1) < stop]:
            self.cache.pop(name).release()
        self.per_run = {k: v for k, v in self.per_run.items() if self.last_use.get(k, -1) >= stop}
        self.position = stop
        self.seconds += time.perf_counter() - start_time
        log.debug("ran %d nodes up to '%s' in %.2fs", len(nodes), node_name, time.perf_counter() - start_time)

    def drop_channels(self, name: str, mask: np.ndarray) -> None:
        """Slice a frontier tensor after its channels were removed from the graph (no-op if not live)."""
        if name in self.cache:
            self.cache[name] = self.cache[name].drop_channels(mask)
        elif name in self.per_run:
            self.per_run[name] = np.ascontiguousarray(self.per_run[name][:, mask])

    def _run(self, session: ort.InferenceSession, inputs: list[str], outputs: list[str]) -> None:
        if not inputs:
            raise ValueError("a segment with outputs but no inputs")
        if all(name in self.unbatched for name in inputs):
            raise ValueError("a segment whose inputs do not depend on the calibration data")
        written: dict[str, StoredTensor] = {}

        def read(begin: int, end: int) -> dict[str, np.ndarray]:
            return {name: self.per_run[name] if name in self.unbatched else self.cache[name].read(begin, end)
                    for name in inputs}

        for begin, values in run_batches(session, outputs, self.n, read, self.batch_size, self.fixed_batch,
                                         whole=self.unbatched):
            for name, value in zip(outputs, values):
                if name in self.unbatched:
                    self.per_run.setdefault(name, value)  # the same for every batch
                    continue
                if name not in written:
                    written[name] = self.store.create(self.n, value.shape[1:], value.dtype)
                written[name].write(begin, value)
        self.cache.update(written)


def unbatched_tensors(graph: gs.Graph) -> set[str]:
    """Tensors computed per run rather than per sample: shapes and what is computed from shapes
    and constants alone. They cross segment boundaries whole instead of batch by batch."""
    unbatched: set[str] = set()
    for node in graph.nodes:
        data = [t for t in node.inputs if isinstance(t, gs.Variable) and t.name]
        if node.op in SHAPE_OPS or all(t.name in unbatched for t in data):
            unbatched.update(t.name for t in node.outputs)
    return unbatched
