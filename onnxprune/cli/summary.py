"""What the CLI prints about a pruning run: the before/after table and totals (summary), the one
result line of --quiet, the budget and measurement notes, and the --verbose time breakdown.

Presentation, so it lives with the CLI; report.py keeps the data (Report and its parts, to_json).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from onnxprune.report import KEPT_BY_SELECTION  # a light module: --help stays free of heavy imports

if TYPE_CHECKING:
    from onnxprune.report import Fidelity, Report
    from onnxprune.search.guard import FidelityBound

# Parts of the main timings, or about them, that the one-line note leaves to --verbose (breakdown).
_DETAIL_TIMINGS = frozenset({"forward_original", "forward_pruned", "store_io", "forward_once", "rewrite", "export",
                             "verify", "fidelity"})

# (timings key, label), in the order of a run; the forward passes and the statistics include the
# activation store's disk I/O, which is shown on its own line as well.
PHASES = (
    ("forward_original", "onnxruntime forward, original network"),
    ("forward_pruned", "onnxruntime forward, pruned network"),
    ("statistics", "statistics accumulation"),
    ("lookahead", "look-ahead pass (original network)"),
    ("solve", "GES solve"),
    ("refit", "refit"),
    ("rewrite", "graph rewrite"),
    ("export", "export"),
    ("verify", "verify"),
    ("fidelity", "fidelity on the held-out samples"),
)
SOLVER = ("solve", "refit")
# The figure of merit (issue 6): (total - solver) / one plain forward pass over the calibration set.
# The segmented execution runs every node once per network, so the forward passes of a whole run
# should cost about two plain passes; everything else is statistics, solving and bookkeeping.
TARGET = 5.0


def summary(report: Report) -> str:
    """A before/after table per layer and the totals."""
    name_width = max([len(layer.name) for layer in report.layers] + [5])
    head = f"{'layer':<{name_width}}  {'op':<6} {'channels':>11} {'params':>21} {'MACs':>23} {'time':>6}"
    lines = [head, "-" * len(head)]
    for layer in report.layers:
        lines.append(
            f"{layer.name:<{name_width}}  {layer.op_type:<6} "
            f"{layer.channels_before:>5}->{layer.channels_after:<5} "
            f"{_count(layer.params_before):>9} -> {_count(layer.params_after):<9} "
            f"{_count(layer.macs_before):>10} -> {_count(layer.macs_after):<10} {layer.seconds:>5.1f}s"
        )
    lines.append("-" * len(head))
    lines.append(f"parameters: {report.params_before:,} -> {report.params_after:,} "
                 f"({report.params_removed:.1%} removed)")
    lines.append(f"MACs:       {report.macs_before:,} -> {report.macs_after:,} ({report.macs_removed:.1%} removed)")
    if report.input_shapes:  # only when the model left a size symbolic: say which one the MACs are at
        lines.append("counted at: " + ", ".join(f"{name} [{', '.join('?' if d is None else str(d) for d in shape)}]"
                                                for name, shape in report.input_shapes.items())
                     + " (the calibration data's size; the model leaves it symbolic)")
    lines.append(f"wall time:  {report.seconds:.1f}s" + _timing_note(report))
    if report.search is not None:
        lines.append(f"budget:     {search_note(report)}")
    if report.guard is not None:
        lines.append(f"strength:   {guard_note(report)}")
    lines.append(f"fidelity:   {fidelity_note(report.fidelity)}")
    lines += measurement_lines(report)
    frozen = [(layer.name, layer.frozen) for layer in report.layers if layer.frozen]
    outputs = [(layer.name, reason) for layer in report.layers
               if (reason := layer.kept.get("out")) and reason != KEPT_BY_SELECTION]
    chosen = [layer.name for layer in report.layers if KEPT_BY_SELECTION in layer.kept.values()]
    if frozen or outputs or report.skipped:
        lines.append("not pruned:")
        lines += [f"  input channels of {name}: {reason}" for name, reason in frozen]
        lines += [f"  output channels of {name}: {reason}" for name, reason in outputs]
        lines += [f"  {name}: {reason}" for name, reason in report.skipped.items()]
    if chosen:  # every channel that stays says why: here nothing forced them, the selection kept them
        names = ", ".join(chosen[:6]) + (f" and {len(chosen) - 6} more" if len(chosen) > 6 else "")
        lines.append(f"kept whole: {names}: {KEPT_BY_SELECTION}")
    return "\n".join(lines)


def result_line(report: Report, out_path: str | os.PathLike) -> str:
    """The one line --quiet prints: totals, measurements and how the budget was met."""
    return (f"{out_path}: parameters {report.params_before:,} -> {report.params_after:,} "
            f"({report.params_removed:.1%} removed), MACs {report.macs_removed:.1%} removed, "
            f"{report.seconds:.1f}s{measurement_note(report)}"
            + (f"; budget: {search_note(report)}" if report.search is not None else "")
            + (f"; strength: {guard_note(report)}" if report.guard is not None else "")
            + f"; fidelity: {fidelity_note(report.fidelity)}")


def fidelity_note(fidelity: Fidelity | None) -> str:
    """The held-out fidelity in one line."""
    if fidelity is None:
        return "not measured (no calibration samples held out: see --holdout)"
    parts = []
    if fidelity.disagreement is not None:
        parts.append(f"estimated top-1 loss {100 * fidelity.loss_estimate:.2f} pt, top-1 agrees with the "
                     f"original on {1 - fidelity.disagreement:.1%}")
    parts.append(f"relative output error {fidelity.relative_error:.3g}")
    if fidelity.map_agreement is not None:
        parts.append(f"score maps agree on {fidelity.map_agreement:.1%} of their positives")
    return ", ".join(parts) + f", on {fidelity.samples:,} held-out calibration samples"


def guard_note(report: Report) -> str:
    """How the default strength was chosen, in one line."""
    g = report.guard
    bounds = (f"estimated loss <= {100 * g.max_loss:g} pt, disagreement <= {g.max_disagreement:.1%}, "
              f"relative error <= {g.max_relative_error:g}"
              + (f", score-map agreement >= {1 - g.max_map_disagreement:.0%}"
                 if report.fidelity is not None and report.fidelity.map_agreement is not None else ""))
    if g.samples_needed is not None:
        how = f"a cautious strength: too few held-out samples to check it (at least {g.samples_needed} are needed)"
    elif g.met:
        how = f"the sparsest of {len(g.trials)} trials within the fidelity bounds ({bounds})"
    else:
        how = f"NO trial of {len(g.trials)} was within the fidelity bounds ({bounds}); the most faithful one"
    return f"--eps-l2 {g.eps_l2:g}, {how}"


def fidelity_warning(report: Report, bound: FidelityBound, *, searched: bool) -> str:
    """A one-line warning when the written model is not known to be faithful ('' when it is)."""
    if report.fidelity is None:  # the summary says so; a warning only where the default went unchecked
        return ("no calibration samples were held out (see --holdout), so the default --eps-l2 was used "
                "unchecked" if searched else "")
    if report.guard is not None and report.guard.samples_needed is not None:
        return (f"only {report.fidelity.samples} held-out samples, too few to bound the top-1 disagreement (at least "
                f"{report.guard.samples_needed} are needed: give more calibration samples); pruned at a cautious "
                f"--eps-l2 {report.guard.eps_l2:g}, unchecked")
    if bound.excess(report.fidelity) <= 1:
        return ""
    advice = ("no strength tried was within the bound" if searched
              else "a smaller --eps-l2 (or budget) keeps more of the model; without one, the strength is searched")
    return f"held-out {bound.describe(report.fidelity)}: beyond the bound; {advice}"


def search_note(report: Report) -> str:
    """How the budget was met, in one line ('' without a budget)."""
    s = report.search
    if s is None:
        return ""
    subset = sum(t.samples < s.samples for t in s.trials)
    if s.metric == "latency":
        final = s.trials[-1] if s.allocation == "ladder" else next(
            t for t in s.trials if t.eps_l2 == s.eps_l2 and t.samples == s.samples)
        reached = (f"{1 / (1 - final.latency_removed):.2f}x measured batch-1 speed-up "
                   f"(target {1 / (1 - s.target):.3g}x, {final.latency_removed:.1%} of the latency removed")
    else:
        reached = (f"{report.params_removed if s.metric == 'params' else report.macs_removed:.1%} of the "
                   f"{'parameters' if s.metric == 'params' else 'MACs'} removed (target {s.target:.1%}")
    if s.allocation == "ladder":
        return (f"{reached} ± {100 * s.tolerance:g} pt), keep counts allocated from error ladders recorded at "
                f"--eps-l2 {s.eps_l2:g}, in {len(s.trials)} walk{'s' if len(s.trials) != 1 else ''}")
    return (f"{reached} ± {100 * s.tolerance:g} pt) at --eps-l2 {s.eps_l2:g}, "
            f"found in {len(s.trials)} trial{'s' if len(s.trials) != 1 else ''}"
            + (f" ({subset} on a subset of the samples)" if subset else ""))


def measurement_note(report: Report) -> str:
    """The measurements in a few words, for a one-line result ('' when none was asked for)."""
    parts = []
    if report.accuracy is not None:
        parts.append(f"top-1 {report.accuracy.top1_before:.2%} -> {report.accuracy.top1_after:.2%}")
    if report.check is not None:
        parts.append(f"max output difference {report.check.max_abs_diff:.4g}")
    parts += [f"batch-{t.batch} latency {t.ms_before:.3g} -> {t.ms_after:.3g} ms" for t in report.latency]
    return "".join(f", {part}" for part in parts)


def measurement_lines(report: Report) -> list[str]:
    """The summary's lines for top-1, output difference and latency (those that were measured)."""
    lines = []
    if report.accuracy is not None:
        a = report.accuracy
        lines.append(f"top-1:      {a.top1_before:.2%} -> {a.top1_after:.2%} "
                     f"({100 * (a.top1_after - a.top1_before):+.2f} pt) on {a.samples:,} samples of {a.source}")
    if report.check is not None:
        c = report.check
        agree = "" if c.argmax_agreement is None else f", same arg-max on {c.argmax_agreement:.1%}"
        lines.append(f"outputs:    differ by {c.max_abs_diff:.4g} at most, {c.mean_abs_diff:.4g} on average "
                     f"on {c.samples:,} calibration samples{agree}")
    for t in report.latency:
        threads = f"{t.threads} thread{'s' if t.threads != 1 else ''}"
        lines.append(f"latency:    batch {t.batch}: {t.ms_before:.3g} -> {t.ms_after:.3g} ms "
                     f"({t.ms_before / t.ms_after:.2f}x faster; onnxruntime CPU, {threads}, median of {t.repeats})")
    return lines


def breakdown(timings: Mapping[str, float], seconds: float, activations: Mapping[str, float | None]) -> str:
    """Where a run's time went (--verbose): the time per phase, the activation store's traffic and
    the ratios against one plain forward pass (measure/timing.py's forward_pass_seconds).

    ``seconds`` is the report's wall time; the time of --eval/--check/--bench (``measure``) is
    taken out, so the total is the pruning alone.
    """
    total = seconds - timings.get("measure", 0.0)
    rows = [(label, timings[key]) for key, label in PHASES if key in timings]
    rows.append(("other (loading, analysis, report)", total - sum(t for _, t in rows)))
    width = max(len(label) for label, _ in rows)
    lines = ["time breakdown:"] + [f"  {label:<{width}} {secs:8.1f}s" for label, secs in rows]
    lines.append(f"  {'total':<{width}} {total:8.1f}s")
    if activations:
        limit = activations.get("memory_limit_mb")
        lines.append(f"activation store: {activations['peak_in_memory_mb']:,.0f} MB in memory at most "
                     f"(budget {'none' if limit is None else f'{limit:,.0f} MB'}), "
                     f"{activations['written_mb']:,.0f} MB written to disk and {activations['read_mb']:,.0f} MB "
                     f"read back in {activations['io_seconds']:.1f}s (counted in the phases above)")
    once = timings.get("forward_once")
    if once is not None:
        line = f"one onnxruntime forward pass over the calibration set: {once:.3f}s"
        if once > 0:  # a tiny model's pass can round to 0
            solver = sum(timings.get(key, 0.0) for key in SOLVER)
            ratio = (total - solver) / once
            line += (f"; total / pass = {total / once:.1f}, (total - solver) / pass = {ratio:.1f} "
                     f"(target <= {TARGET:g}: {'met' if ratio <= TARGET else 'not met'}), "
                     f"(total - solver - statistics) / pass = {(total - solver - timings.get('statistics', 0.0)) / once:.1f}")
        lines.append(line)
    return "\n".join(lines)


def _timing_note(report: Report) -> str:
    parts = [f"{name} {secs:.1f}s" for name, secs in report.timings.items() if name not in _DETAIL_TIMINGS]
    if report.peak_memory_mb is not None:
        parts.append(f"peak memory {report.peak_memory_mb:.0f} MB")
    return f" ({', '.join(parts)})" if parts else ""


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
