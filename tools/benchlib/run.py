"""Measuring one run (needs ../shared): the pruning in a fresh worker process, its cost, top-1 and latency."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .cache import load_results, save_results
from .plan import BATCHES, DRAWS, METHODS, SAMPLES, match_knob, point_key, run_key

ENTRY = Path(__file__).resolve().parents[1] / "bench.py"  # the worker runs as `bench.py --worker SPEC`


def model_cost(model) -> tuple[int, int]:
    """(parameters, MACs per sample) of an ONNX model, counted as onnxprune's report counts them."""
    import onnx
    import onnx_graphsurgeon as gs

    from onnxprune.measure.counts import count_params
    from onnxprune.ops import node_macs

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for info in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                      for d in info.type.tensor_type.shape.dim)
    graph = gs.import_onnx(model)
    return count_params(graph), sum(node_macs(node, shapes) for node in graph.nodes)


def onnxsim_prune(model, method: str, sparsity: float, calib: np.ndarray | None = None):
    """BN folded into Conv, then onnxsim's structured pruning (L2, or Wanda on ``calib``)."""
    import onnxsim
    from bnfold import fold_batchnorm

    folded, _ = fold_batchnorm(model)
    if method == "onnxsim-l2":
        return onnxsim.apply_structured_pruning(folded, sparsity=sparsity)
    name = folded.graph.input[0].name
    batches = [{name: np.ascontiguousarray(calib[i:i + 128])} for i in range(0, len(calib), 128)]
    return onnxsim.apply_structured_wanda_pruning(folded, calibration_data=batches, sparsity=sparsity,
                                                  providers=["CPUExecutionProvider"])


def worker(spec: dict) -> dict:
    """One pruning, in this (fresh) process: writes spec['out'] and returns its measurements."""
    import onnx

    method = spec["method"]
    if method in ("ges", "l1", "lasso"):  # imports before the clock starts, for every method alike
        import onnxprune
    else:
        import onnxsim  # noqa: F401
        import bnfold  # noqa: F401
    started = time.perf_counter()
    if method in ("ges", "l1", "lasso"):
        # Every calibration image goes to the statistics, as in the runs the tables record (the
        # test set measures the result; a held-out share would change what each method sees).
        options = {"seed": spec["draw"], "max_samples": SAMPLES, "holdout": 0}
        if method == "ges" and spec["match"] == "macs":  # the CLI's --target-macs, defaults and all
            pruned, report = onnxprune.prune_to_budget(spec["model"], spec["calib"], target_macs=spec["budget"],
                                                       **options)
        else:
            if method == "ges":
                options["eps_l2"] = spec["budget"]
            else:
                options.update(selector=method, keep_fraction=spec["knob"])
            pruned, report = onnxprune.prune(spec["model"], spec["calib"], **options)
        extra = {"report_params_removed": report.params_removed, "report_macs_removed": report.macs_removed,
                 "timings": report.timings}
        if report.search is not None:
            extra["search"] = {"allocation": report.search.allocation, "trials": len(report.search.trials)}
    else:
        calib = np.load(spec["calib"])
        pruned = onnxsim_prune(onnx.load(spec["model"]), method, spec["knob"], calib)
        extra = {}
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    onnx.save(pruned, spec["out"])
    params, macs = model_cost(pruned)
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak, 1), "params_after": params, "macs_after": macs,
            "timed": "the pruning call, imports excluded", **extra}


def peak_rss_mb() -> float:
    """Peak resident memory of this process's own address space, in MB.

    Linux's VmHWM, not getrusage's ru_maxrss: a child started by fork/vfork + exec inherits the
    parent's ru_maxrss (this benchmark's parent holds the test set), so ru_maxrss would report the
    parent's peak whenever it is the larger.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(spec: dict) -> dict:
    cmd = [sys.executable, str(ENTRY), "--worker", json.dumps(spec)]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def code_version() -> dict:
    """Which onnxprune ran: its source folder, git commit and whether onnxprune/ had uncommitted changes."""
    import onnxprune

    src = Path(onnxprune.__file__).resolve().parents[1]

    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "onnxprune")
    import onnxruntime

    versions = {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    try:
        import onnxsim

        versions["onnxsim"] = onnxsim.__version__
    except ImportError:
        pass
    return {"onnxprune_commit": commit, "onnxprune_dirty": bool(dirty), **versions}


class Bench:
    def __init__(self, model: str, shared: Path, results_dir: Path, workdir: Path):
        from datasets import DATASETS, calibration_subset, shared_dir

        self.name, self.results_dir = model, results_dir
        self.path = shared_dir(shared) / "models" / f"{model}.onnx"
        self.data = load_results(model, results_dir)
        self.workdir = workdir
        load = DATASETS[model]
        x_train, _ = load("train")
        self.calib = {d: calibration_subset(x_train, SAMPLES, d) for d in range(DRAWS)}
        del x_train
        self.x_test, self.y_test = load("test")
        self.version = code_version()
        import onnx

        self.params_before, self.macs_before = model_cost(onnx.load(str(self.path)))

    def calib_file(self, draw: int) -> Path:
        path = self.workdir / f"{self.name}-calib-{draw}.npy"
        if not path.exists():
            np.save(path, self.calib[draw])
        return path

    def baseline(self) -> dict:
        from evaluate import top1

        if self.data.get("baseline") is None:
            self.data["baseline"] = {"top1": top1(self.path, self.x_test, self.y_test),
                                     "params": self.params_before, "macs": self.macs_before,
                                     "test_samples": len(self.y_test)}
            save_results(self.data, self.results_dir)
        return self.data["baseline"]

    def target(self, budget: float, match: str = "params") -> float:
        """The fraction every method is matched to: GES's parameters removed at this eps_l2 (draw 0),
        or the MAC target itself."""
        return self.run("ges", budget, 0)["params_removed"] if match == "params" else budget

    def knob(self, method: str, budget: float, match: str = "params") -> float:
        """The peer's ratio knob matched to the point's target (see ``target``), cached."""
        family = "keep_fraction" if METHODS[method][1] == "keep_fraction" else method
        key = f"{family}|{point_key(budget, match)}"
        target = self.target(budget, match)
        cached = self.data["matches"].get(key)
        if cached is None or abs(cached["target"] - target) > 1e-12:
            say(f"{self.name}: matching {family} to {target:.1%} of the {match} removed ({point_key(budget, match)})")
            # About a uniform fraction f kept of both a layer's inputs and outputs: removed ~ 1 - f^2.
            knob, removed, trials = match_knob(self._removed_at(family, match), target,
                                               guess=1 - math.sqrt(1 - target))
            cached = {"target": target, "knob_drop": knob, "removed": removed, "trials": trials, "metric": match}
            self.data["matches"][key] = cached
            save_results(self.data, self.results_dir)
        drop = cached["knob_drop"]
        return round(1 - drop, 4) if family == "keep_fraction" else drop

    def _removed_at(self, family: str, metric: str = "params") -> Callable[[float], float]:
        """knob (fraction dropped) -> parameters (``metric`` "params") or MACs ("macs") removed, by a
        cheap structural trial.

        onnxsim: its own pass at that sparsity (Wanda on 128 calibration images: it does not match
        the same chains as L2, but its counts do not depend on the data). keep_fraction: an L1 prune
        on 16 calibration samples (L1 and LASSO keep the same count per unit at one fraction).
        """
        import onnx

        model = onnx.load(str(self.path))
        which = 0 if metric == "params" else 1  # of model_cost's (parameters, MACs)
        before = (self.params_before, self.macs_before)[which]
        if family.startswith("onnxsim"):
            calib = self.calib[0][:128]
            return lambda drop: 1 - model_cost(onnxsim_prune(model, family, drop, calib))[which] / before

        def removed(drop: float) -> float:
            import onnxprune

            _, report = onnxprune.prune(model, self.calib[0][:16], selector="l1", keep_fraction=max(1 - drop, 1e-4),
                                        rows_per_layer=512)
            return report.params_removed if metric == "params" else report.macs_removed
        return removed

    def run(self, method: str, budget: float, draw: int, match: str = "params") -> dict:
        """One method at one point (``budget``: an eps_l2 for match "params", the MAC fraction for "macs")."""
        key = run_key(method, budget, draw, match)
        if key in self.data["runs"]:
            return self.data["runs"][key]
        from evaluate import top1

        from onnxprune import benchmark

        knob = None if method == "ges" else self.knob(method, budget, match)
        out = self.workdir / f"{self.name}-{method}-{match}-{budget:g}-{draw}.onnx"
        spec = {"method": method, "model": str(self.path), "calib": str(self.calib_file(draw)), "out": str(out),
                "budget": budget, "knob": knob, "draw": draw, "match": match}
        load_before = os.getloadavg()[0]
        say(f"{self.name}: {key}" + (f" ({METHODS[method][1]} {knob:g})" if knob is not None else ""))
        measured = run_worker(spec)
        base = self.baseline()
        accuracy = top1(out, self.x_test, self.y_test)
        latency = benchmark(self.path, out, {"input": self.calib[draw][:64]}, batches=BATCHES)
        record = {
            "model": self.name, "method": method, "match": match, "budget": budget, "draw": draw, "seed": draw,
            "samples": SAMPLES,
            "knob": None if knob is None else {"name": METHODS[method][1], "value": knob},
            "params_before": self.params_before, "params_after": measured.pop("params_after"),
            "macs_before": self.macs_before, "macs_after": measured.pop("macs_after"),
            "top1_before": base["top1"], "top1_after": accuracy, "loss_pt": round(base["top1"] - accuracy, 2),
            "latency": [{"batch": t.batch, "ms_before": t.ms_before, "ms_after": t.ms_after, "threads": t.threads,
                         "repeats": t.repeats} for t in latency],
            **measured, "load_average": round(load_before, 2), "cpus": os.cpu_count(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), **self.version,
        }
        record["params_removed"] = 1 - record["params_after"] / record["params_before"]
        record["macs_removed"] = 1 - record["macs_after"] / record["macs_before"]
        self.data["runs"][key] = record
        save_results(self.data, self.results_dir)
        out.unlink(missing_ok=True)
        say(f"  {record['params_removed']:.1%} params, {record['macs_removed']:.1%} MACs removed, top-1 "
            f"{base['top1']:.2f} -> {accuracy:.2f}, {record['seconds']:.0f} s, {record['peak_rss_mb']:.0f} MB")
        return record


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
