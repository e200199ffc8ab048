"""Sweep: prune one model at several budgets (or ε_L2 values), score each on labelled data, and
write the trade-off as a table (CSV and JSON); the CLI draws the plot (sweep.png, cli/plot.py).

The budget searches share one :class:`~onnxprune.search.budget.History`, so each later budget starts
from the points the earlier ones measured, and the labelled data is read and the original model
scored once.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import onnx

from onnxprune.api import Calibration, prune, prune_to_budget
from onnxprune.search.budget import METRICS, History, SearchOptions
from onnxprune.calib.images import Preprocessing, is_image_folder
from onnxprune.config import PruneConfig
from onnxprune.errors import BudgetError, ConfigError, OutputError
from onnxprune.measure.evaluate import EvalSource, check_labels, load_eval_data, top1
from onnxprune.graph.io import check_model, load_model, save_model, write_text
from onnxprune.report import Fidelity, Trial

DEFAULT_BUDGETS = (0.5, 0.6, 0.7, 0.8, 0.9)
TABLE_COLUMNS = ("point", "target", "eps_l2", "params_removed", "macs_removed", "top1", "loss_pt",
                 "held_loss_estimate_pt", "held_disagreement", "params_after", "macs_after", "trials", "seconds", "error")


@dataclass(frozen=True)
class SweepPoint:
    """One pruned model of a sweep; ``error`` says why a budget was not reached (the rest is then None)."""

    target: float | None  # the budget asked for; None when the sweep ran over ε_L2 values
    eps_l2: float | None
    params_removed: float | None = None
    macs_removed: float | None = None
    top1: float | None = None
    params_after: int | None = None
    macs_after: int | None = None
    fidelity: Fidelity | None = None  # on the held-out calibration samples (no labels)
    trials: int = 0  # prunes this point ran (a budget's search; 1 for an ε_L2 value)
    seconds: float = 0.0
    error: str | None = None
    # (layer name, output channels before, after) of every Conv/Gemm/MatMul
    layers: list[tuple[str, int, int]] = field(default_factory=list)
    search: list[Trial] = field(default_factory=list)  # the prunes this point ran, in order


@dataclass(frozen=True)
class SweepResult:
    metric: str  # what the budgets count: "params" or "macs"
    params_before: int
    macs_before: int
    top1_before: float
    eval_samples: int
    points: list[SweepPoint]

    def rows(self) -> list[dict]:
        """The table: one row per point, in TABLE_COLUMNS order (fractions, not percent)."""
        rows = []
        for number, p in enumerate(self.points, start=1):
            loss = None if p.top1 is None else round(100 * (self.top1_before - p.top1), 2)
            f = p.fidelity
            estimate = None if f is None or f.loss_estimate is None else round(100 * f.loss_estimate, 3)
            rows.append({"point": number, "target": p.target, "eps_l2": p.eps_l2, "params_removed": p.params_removed,
                         "macs_removed": p.macs_removed, "top1": p.top1, "loss_pt": loss,
                         "held_loss_estimate_pt": estimate, "held_disagreement": None if f is None else f.disagreement,
                         "params_after": p.params_after,
                         "macs_after": p.macs_after, "trials": p.trials, "seconds": p.seconds, "error": p.error})
        return rows

    def default_point(self) -> int:
        """The point whose channels the plot shows by default (1-based): the most pruned one that
        loses at most 1 pt of top-1, else the first one that was reached."""
        reached = [(i, p) for i, p in enumerate(self.points, start=1) if p.error is None]
        if not reached:
            raise ConfigError("no budget of the sweep was reached: nothing to show")
        good = [(i, p) for i, p in reached if 100 * (self.top1_before - p.top1) <= 1.0]
        return max(good, key=lambda ip: ip[1].params_removed)[0] if good else reached[0][0]

    def to_json(self) -> str:
        data = {key: value for key, value in asdict(self).items() if key != "points"}
        data["rows"] = self.rows()
        data["layers"] = [[{"name": n, "channels_before": b, "channels_after": a} for n, b, a in p.layers]
                          for p in self.points]
        data["trials"] = [[asdict(t) for t in p.search] for p in self.points]
        return json.dumps(data, indent=2)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=TABLE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in self.rows())
        return out.getvalue()

    def write(self, directory: str | os.PathLike) -> list[Path]:
        """Write sweep.csv and sweep.json into ``directory``, each atomically (the CLI adds the plot:
        onnxprune/cli/plot.py's write_plot)."""
        directory = Path(directory)
        paths = [directory / "sweep.csv", directory / "sweep.json"]
        write_text(self.to_csv(), paths[0])
        write_text(self.to_json(), paths[1])
        return paths


def sweep(model: onnx.ModelProto | str | os.PathLike, calib: Calibration, config: PruneConfig | None = None, *,
          eval: EvalSource, budgets: Sequence[float] | None = None, metric: str = "params",
          eps_values: Sequence[float] | None = None, preprocessing: Preprocessing | None = None,
          search: SearchOptions | None = None, models_dir: str | os.PathLike | None = None,
          progress: Callable[[str], None] | None = None, **options) -> SweepResult:
    """Prune ``model`` at each budget (fractions of the ``metric`` removed; by default
    0.5, 0.6, ..., 0.9) or at each of ``eps_values``, and score every pruned model on ``eval``.

    A budget that cannot be reached becomes a point with ``error`` set; the sweep goes on. With
    ``models_dir`` every pruned model is written there as ``point-N.onnx``. Other arguments as
    for :func:`onnxprune.prune`.
    """
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if budgets is not None and eps_values is not None:
        raise ConfigError("give either budgets or eps_l2 values to sweep over, not both")
    if eps_values is None:
        budgets = sorted(DEFAULT_BUDGETS if budgets is None else budgets)
        if not budgets:
            raise ConfigError("a sweep needs at least one budget")
    elif not eps_values:
        raise ConfigError("a sweep needs at least one eps_l2 value")
    if search is not None and eps_values is not None:
        raise ConfigError("search options apply to budgets, not to a sweep over eps_l2 values")
    config = replace(config or PruneConfig(), **options)
    say = progress or (lambda line: None)
    model = load_model(model) if isinstance(model, (str, os.PathLike)) else check_model(model)
    if models_dir is not None and not Path(models_dir).is_dir():
        raise OutputError(f"{models_dir}: is not a directory")
    data = load_eval_data(eval, model, preprocessing=preprocessing)
    check_labels(model, data)
    say(f"top-1 of the original model on {len(data):,} samples of {data.source}")
    top1_before = top1(model, data)
    # prune() refuses image preprocessing for array calibration; here it may be for the eval folder only.
    calib_preprocessing = preprocessing if isinstance(calib, (str, os.PathLike)) and is_image_folder(calib) else None
    history, points, before = History(), [], None
    settings = [("target", b) for b in budgets] if eps_values is None else [("eps", e) for e in eps_values]
    for number, (kind, value) in enumerate(settings, start=1):
        what = f"{value:.1%} of the {METRICS[metric]}" if kind == "target" else f"eps_l2 {value:g}"
        say(f"sweep point {number}/{len(settings)}: {what}")
        started, ran = time.perf_counter(), len(history.trials)
        point_progress = lambda line: say("  " + line)  # noqa: E731
        try:
            if kind == "target":
                pruned, report = prune_to_budget(
                    model, calib, config, search=search, history=history, progress=point_progress,
                    preprocessing=calib_preprocessing, **{"target_sparsity" if metric == "params" else "target_macs": value})
            else:
                pruned, report = prune(model, calib, replace(config, eps_l2=value), progress=point_progress,
                                       preprocessing=calib_preprocessing)
        except BudgetError as exc:
            say(f"sweep point {number}: {exc}")
            points.append(SweepPoint(target=value, eps_l2=exc.closest.eps_l2 if exc.closest else None,
                                     trials=len(history.trials) - ran, error=str(exc),
                                     seconds=round(time.perf_counter() - started, 3), search=_trials_since(history, ran)))
            continue
        before = before or (report.params_before, report.macs_before)
        accuracy = top1(pruned, data)
        if models_dir is not None:
            save_model(pruned, Path(models_dir) / f"point-{number}.onnx")
        eps = report.search.eps_l2 if report.search is not None else value
        points.append(SweepPoint(
            target=value if kind == "target" else None, eps_l2=eps, params_removed=round(report.params_removed, 6),
            macs_removed=round(report.macs_removed, 6), top1=accuracy, params_after=report.params_after,
            macs_after=report.macs_after, fidelity=report.fidelity, trials=len(history.trials) - ran if kind == "target" else 1,
            seconds=round(time.perf_counter() - started, 3),
            layers=[(layer.name, layer.channels_before, layer.channels_after) for layer in report.layers],
            search=report.search.trials if report.search is not None else []))
        say(f"sweep point {number}: {report.params_removed:.1%} of the parameters and {report.macs_removed:.1%} of "
            f"the MACs removed, top-1 {top1_before:.2%} -> {accuracy:.2%}")
    if before is None:
        raise BudgetError(f"no budget of the sweep was reached ({points[0].error})" if points else "nothing to sweep")
    return SweepResult(metric=metric, params_before=before[0], macs_before=before[1], top1_before=top1_before,
                       eval_samples=len(data), points=points)


def _trials_since(history: History, count: int) -> list[Trial]:
    return [trial for trial, _, _ in list(history.trials.values())[count:]]
