"""Run a graph segment by segment with onnxruntime, keeping only the tensors later nodes need.

Pruning walks the layers in topological order and each regression needs the activations at one
layer's input. Instead of re-running the network from its inputs for every layer, the runner
executes only the nodes between the previous stop and the next one, feeding them the cached
tensors of the previous stop: over a whole pruning run every node executes once per model.
The graph may be edited between stops (that is the point: the pruned network is rewritten as it
goes); each segment is exported from the graph as it is when the segment runs.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort

log = logging.getLogger(__name__)


def make_session(model_bytes: bytes, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # our graphs carry no stale shapes, warnings would only be noise
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def segment_bytes(graph: gs.Graph, node_names: set[str], input_names: list[str],
                  output_names: list[str], dtypes: dict[str, np.dtype]) -> bytes:
    """Serialise the sub-graph made of ``node_names``, cut at the given tensors."""
    segment = graph.copy()
    tensors = segment.tensors()
    segment.nodes = [node for node in segment.nodes if node.name in node_names]
    for tensor in tensors.values():
        if isinstance(tensor, gs.Variable):
            tensor.shape = None  # channel counts change as the graph is pruned
    for name in output_names:
        if tensors[name].dtype is None:
            tensors[name].dtype = np.float32
    segment.inputs = [tensors[name] for name in input_names]
    for name in input_names:
        tensors[name].dtype = dtypes[name]
    segment.outputs = [tensors[name] for name in output_names]
    return gs.export_onnx(segment, do_type_check=False).SerializeToString()


class SegmentRunner:
    """Advance a graph's execution from stop to stop over the whole calibration set.

    ``cache`` holds, for every sample, each tensor that is produced before the current position
    and read at or after it: the live frontier of the network.
    """

    def __init__(self, graph: gs.Graph, feeds: dict[str, np.ndarray], *, batch_size: int = 128) -> None:
        self.graph = graph
        self.order = [node.name for node in graph.nodes]
        self.position = 0
        self.batch_size = batch_size
        self.cache: dict[str, np.ndarray] = dict(feeds)
        outputs = {t.name for t in graph.outputs}
        self.last_use: dict[str, float] = {}
        for index, node in enumerate(graph.nodes):
            for tensor in node.inputs:
                if isinstance(tensor, gs.Variable):
                    self.last_use[tensor.name] = index
        for name in outputs:
            self.last_use[name] = math.inf
        self.unbatched = unbatched_tensors(graph)
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
        dtypes = {name: self.cache[name].dtype for name in inputs}
        session = make_session(segment_bytes(self.graph, names, inputs, outputs, dtypes))
        results = self._run(session, inputs, outputs)
        self.cache.update(results)
        self.cache = {k: v for k, v in self.cache.items() if self.last_use.get(k, -1) >= stop}
        self.position = stop
        self.seconds += time.perf_counter() - start_time
        log.debug("ran %d nodes up to '%s' in %.2fs", len(nodes), node_name, time.perf_counter() - start_time)

    def _run(self, session: ort.InferenceSession, inputs: list[str], outputs: list[str]) -> dict[str, np.ndarray]:
        if not inputs:
            raise ValueError("a segment with outputs but no inputs")
        batched = [name for name in inputs if name not in self.unbatched]
        if not batched:
            raise ValueError("a segment whose inputs do not depend on the calibration data")
        n = len(self.cache[batched[0]])
        collected: dict[str, np.ndarray] = {}
        for begin in range(0, n, self.batch_size):
            feed = {name: self.cache[name] if name in self.unbatched else self.cache[name][begin:begin + self.batch_size]
                    for name in inputs}
            for name, value in zip(outputs, session.run(outputs, feed)):
                if name in self.unbatched:
                    collected.setdefault(name, value)  # the same for every batch
                elif name not in collected:
                    collected[name] = np.empty((n,) + value.shape[1:], dtype=value.dtype)
                collected[name][begin:begin + len(value)] = value
        return collected


def unbatched_tensors(graph: gs.Graph) -> set[str]:
    """Tensors computed per run rather than per sample: shapes and what is computed from shapes
    and constants alone. They cross segment boundaries whole instead of batch by batch."""
    unbatched: set[str] = set()
    for node in graph.nodes:
        data = [t for t in node.inputs if isinstance(t, gs.Variable) and t.name]
        if node.op in ("Shape", "Size") or all(t.name in unbatched for t in data):
            unbatched.update(t.name for t in node.outputs)
    return unbatched
