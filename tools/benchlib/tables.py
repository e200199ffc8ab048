"""The benchmark's tables and verdicts, computed from the cached runs: mean ± sd, headline, per model, matches."""

from __future__ import annotations

import math
from collections.abc import Iterable

from .plan import BATCHES, MATCH_TOL, METHODS, MODELS, PAPER_LOSS, SHORT, match_of, point_label


def mean_sd(values: Iterable[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def fmt_mean_sd(values: Iterable[float], digits: int = 2, unit: str = "") -> str:
    """'12.34 ± 0.05' over several values, '12.34' for one (no spread to show)."""
    mean, sd = mean_sd(values)
    text = f"{mean:.{digits}f}"
    if sd is not None:
        text += f" ± {sd:.{digits}f}"
    return text + unit


def group_runs(runs: Iterable[dict], match: str = "params") -> dict[tuple[float, str], list[dict]]:
    """(budget, method) -> the runs over draws matched on ``match``, sorted by draw."""
    groups: dict[tuple[float, str], list[dict]] = {}
    for r in runs:
        if match_of(r) == match:
            groups.setdefault((r["budget"], r["method"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["draw"]) for k, v in sorted(groups.items())}


def _head(first: list[str], per_method: str, *, draws: bool = True) -> list[str]:
    """A table's header and rule: the ``first`` columns, one per method (its short name and
    ``per_method``), and a draws column."""
    cells = first + [f"{SHORT[m]}{'' if per_method.startswith(':') else ' '}{per_method}" for m in METHODS]
    cells += ["draws"] if draws else []
    return ["| " + " | ".join(cells) + " |", "|" + "---|" * len(cells)]


def headline_rows(results: dict[str, dict]) -> list[str]:
    """The README's table: per model and budget, GES's parameters removed and every method's top-1 loss."""
    methods = list(METHODS)
    lines = _head(["model", "GES budget (ε_L2)", f"parameters removed (matched ± {100 * MATCH_TOL:g} pt)"],
                  "loss (pt)")
    for name, data in results.items():
        groups = group_runs(data.get("runs", {}).values())
        for budget in sorted({b for b, _ in groups}):
            ges = groups.get((budget, "ges"))
            if not ges:
                continue
            losses = {}
            target = mean_sd([r["params_removed"] for r in ges])[0]
            for m in methods:
                runs = groups.get((budget, m))
                losses[m] = fmt_mean_sd([r["loss_pt"] for r in runs]) if runs else "–"
                if runs and abs(mean_sd([r["params_removed"] for r in runs])[0] - target) > MATCH_TOL:
                    losses[m] += f" (at {mean_sd([100 * r['params_removed'] for r in runs])[0]:.1f} %)"
            best = _best_method(groups, budget)
            cells = [f"**{losses[m]}**" if m in best and losses[m] != "–" else losses[m] for m in methods]
            # (a peer that could not be matched within MATCH_TOL says at what reduction it was measured)
            draws = min(len(groups[(budget, m)]) for m in methods if (budget, m) in groups)
            lines.append(f"| {MODELS[name]['label']} | {budget:g} | {fmt_mean_sd([100 * r['params_removed'] for r in ges], 1)} % | "
                         + " | ".join(cells) + f" | {draws} |")
    return lines


def _best_method(groups: dict, budget: float) -> set[str]:
    """The methods with the smallest mean loss at this budget (ties all count)."""
    means = {m: mean_sd([r["loss_pt"] for r in runs])[0] for (b, m), runs in groups.items() if b == budget}
    if not means:
        return set()
    low = min(means.values())
    return {m for m, v in means.items() if abs(v - low) < 1e-9}


def speedups(runs: list[dict], batch: int = 1) -> list[float]:
    """Each run's measured onnxruntime speed-up (original ÷ pruned latency) at ``batch``."""
    return [next(t["ms_before"] / t["ms_after"] for t in r["latency"] if t["batch"] == batch) for r in runs]


def _latency(runs: list[dict], batch: int) -> str:
    after = [next(t["ms_after"] for t in r["latency"] if t["batch"] == batch) for r in runs]
    speedup = speedups(runs, batch)
    digits = 3 if max(after) < 1 else 2 if max(after) < 10 else 1
    return f"{fmt_mean_sd(after, digits)} ms ({mean_sd(speedup)[0]:.2f}×)"


def model_table(data: dict) -> list[str]:
    lines = ["| matched at | method | knob | parameters removed | MACs removed | top-1 after (%) | loss (pt) | "
             "prune time (s) | peak RSS (MB) | " + "".join(f"latency batch {b} (speed-up) | " for b in BATCHES) + "draws |",
             "|---|---|---|---|---|---|---|---|---|" + "---|" * len(BATCHES) + "---|"]
    rows = [(match, budget, method, runs) for match in ("params", "macs")
            for (budget, method), runs in group_runs(data["runs"].values(), match).items()]
    for match, budget, method, runs in sorted(rows, key=lambda t: (t[0] != "params", t[1], list(METHODS).index(t[2]))):
        knob = (f"{runs[0]['knob']['name']} {runs[0]['knob']['value']:g}" if runs[0]["knob"] is not None
                else f"ε_L2 {budget:g}" if match == "params" else "`--target-macs`")
        where = f"GES's ε_L2 {budget:g}" if match == "params" else point_label(match, budget)
        lines.append(
            f"| {where} | {METHODS[method][0]} | {knob} | {fmt_mean_sd([100 * r['params_removed'] for r in runs], 1)} % | "
            f"{fmt_mean_sd([100 * r['macs_removed'] for r in runs], 1)} % | {fmt_mean_sd([r['top1_after'] for r in runs])} | "
            f"{fmt_mean_sd([r['loss_pt'] for r in runs])} | {fmt_mean_sd([r['seconds'] for r in runs], 1)} | "
            f"{fmt_mean_sd([r['peak_rss_mb'] for r in runs], 0)} | "
            + "".join(f"{_latency(runs, b)} | " for b in BATCHES) + f"{len(runs)} |")
    return lines


def verdicts(results: dict[str, dict]) -> tuple[list[str], list[str]]:
    """Per matched point, whether GES has the best mean top-1: (where it leads, where it does not)."""
    ahead, behind = [], []
    for name, data in results.items():
        groups = group_runs(data["runs"].values())
        for budget in sorted({b for b, _ in groups}):
            if (budget, "ges") not in groups:
                continue
            ges = mean_sd([r["loss_pt"] for r in groups[(budget, "ges")]])[0]
            target = mean_sd([r["params_removed"] for r in groups[(budget, "ges")]])[0]
            peers, unmatched = {}, {}
            for (b, m), runs in groups.items():
                if b == budget and m != "ges":
                    peers[m] = mean_sd([r["loss_pt"] for r in runs])[0]
                    removed = mean_sd([r["params_removed"] for r in runs])[0]
                    if abs(removed - target) > MATCH_TOL:
                        unmatched[m] = f" (at {100 * removed:.1f} % removed, not within {100 * MATCH_TOL:g} pt of GES)"
            if not peers:
                continue
            better = {m: v for m, v in peers.items() if v < ges}
            where = (f"{MODELS[name]['label']} at ε_L2 {budget:g} "
                     f"({mean_sd([100 * r['params_removed'] for r in groups[(budget, 'ges')]])[0]:.1f} % removed)")
            missing = [SHORT[m] for m in METHODS if m != "ges" and m not in peers]
            note = f"; not yet run: {', '.join(missing)}" if missing else ""
            if better:
                behind.append(f"- {where}: GES loses {ges:.2f} pt, "
                              + ", ".join(f"{SHORT[m]} {v:.2f} pt{unmatched.get(m, '')}"
                                          for m, v in sorted(better.items(), key=lambda kv: kv[1]))
                              + note)
            else:
                closest = min(peers.items(), key=lambda kv: kv[1])
                ahead.append(f"- {where}: GES loses {ges:.2f} pt, the best peer ({SHORT[closest[0]]}) "
                             f"{closest[1]:.2f} pt{unmatched.get(closest[0], '')}{note}")
    return ahead, behind


def match_notes(results: dict[str, dict]) -> list[str]:
    lines = [f"| model | matched at | knob | target removed | knob found | peer removed | trials | "
             f"within ± {100 * MATCH_TOL:g} pt |", "|---|---|---|---|---|---|---|---|"]
    for name, data in results.items():
        for key, m in sorted(data.get("matches", {}).items()):
            family, point = key.split("|")
            kind, budget = point.split("=")
            where = (f"GES's ε_L2 {budget} (its parameters removed, draw 0)" if kind == "eps_l2"
                     else f"{100 * float(budget):g} % of the MACs")
            knob = f"keep_fraction {1 - m['knob_drop']:.4g}" if family == "keep_fraction" else f"sparsity {m['knob_drop']:.4g}"
            ok = abs(m["removed"] - m["target"]) <= MATCH_TOL
            lines.append(f"| {MODELS[name]['label']} | {where} | {family} | {m['target']:.1%} | "
                         f"{knob} | {m['removed']:.1%} | {len(m['trials'])} | {'yes' if ok else '**no**'} |")
    return lines


def paper_rows(results: dict[str, dict]) -> list[str]:
    """The paper's claim beside GES's sparsest point here within the paper's 0.5 pt."""
    lines = [f"| model | paper: parameters removed at {PAPER_LOSS[0]:g}–{PAPER_LOSS[1]:g} pt loss | GES here: most "
             f"removed at ≤ {PAPER_LOSS[1]:g} pt mean loss (budgets run) |", "|---|---|---|"]
    for name, spec in MODELS.items():
        groups = group_runs(results.get(name, {}).get("runs", {}).values())
        points = [(mean_sd([100 * r["params_removed"] for r in runs])[0], mean_sd([r["loss_pt"] for r in runs])[0], b)
                  for (b, m), runs in groups.items() if m == "ges"]
        ok = [p for p in points if p[1] <= PAPER_LOSS[1]]
        ours = (f"{max(ok)[0]:.1f} % at {max(ok)[1]:.2f} pt (ε_L2 {max(ok)[2]:g})" if ok
                else f"none within {PAPER_LOSS[1]:g} pt" if points else "not run")
        lo, hi = spec["paper"]
        lines.append(f"| {spec['label']} | {100 * lo:.0f}–{100 * hi:.0f} % | {ours} |")
    return lines


def mac_rows(results: dict[str, dict]) -> list[str]:
    """Per model and MAC target: every method's top-1 loss, parameters removed and batch-1 speed-up."""
    methods = list(METHODS)
    lines = _head(["model", f"MACs removed (target, matched ± {100 * MATCH_TOL:g} pt)"],
                  ": loss (pt), params removed, speed-up")
    for name, data in results.items():
        groups = group_runs(data.get("runs", {}).values(), "macs")
        for target in sorted({b for b, _ in groups}):
            best = _best_method(groups, target)
            cells = []
            for m in methods:
                runs = groups.get((target, m))
                if not runs:
                    cells.append("–")
                    continue
                loss = fmt_mean_sd([r["loss_pt"] for r in runs])
                removed = mean_sd([r["macs_removed"] for r in runs])[0]
                at = f" (at {100 * removed:.1f} % MACs)" if abs(removed - target) > MATCH_TOL else ""
                cells.append(f"{f'**{loss}**' if m in best else loss}{at}, "
                             f"{mean_sd([100 * r['params_removed'] for r in runs])[0]:.1f} %, "
                             f"{mean_sd(speedups(runs))[0]:.2f}×")
            draws = min(len(runs) for (b, _), runs in groups.items() if b == target)
            lines.append(f"| {MODELS[name]['label']} | {100 * target:g} % | " + " | ".join(cells) + f" | {draws} |")
    return lines


def speedup_curve(runs: Iterable[dict], method: str) -> list[tuple[float, float, float | None]]:
    """One method's points (mean batch-1 speed-up, mean loss, sd of the loss) over every matched point
    it ran (parameter- and MAC-matched), sorted by speed-up."""
    points = []
    for match in ("params", "macs"):
        for (budget, m), group in group_runs(runs, match).items():
            if m == method:
                points.append((mean_sd(speedups(group))[0], *mean_sd([r["loss_pt"] for r in group])))
    return sorted(points)


def loss_at_speedup(curve: list[tuple[float, float, float | None]], speedup: float) -> float | None:
    """A method's loss at ``speedup``, linear between its two nearest measured points around it
    (None outside the range it measured: no extrapolation)."""
    for (s0, l0, _), (s1, l1, _) in zip(curve, curve[1:]):
        if s0 <= speedup <= s1:
            return l0 if s1 == s0 else l0 + (l1 - l0) * (speedup - s0) / (s1 - s0)
    return curve[0][1] if len(curve) == 1 and abs(curve[0][0] - speedup) < 1e-9 else None


def losses_at_speedups(results: dict[str, dict]) -> list[tuple[str, float, dict[str, float]]]:
    """(model, speed-up, method -> loss) at each speed-up GES measured (its own points, no
    interpolation for GES), wherever at least one peer has measured points on both sides of it
    (see ``loss_at_speedup``)."""
    out = []
    for name, data in results.items():
        runs = list(data.get("runs", {}).values())
        curves = {m: speedup_curve(runs, m) for m in METHODS}
        for speedup in [point[0] for point in curves["ges"]]:
            losses = {m: loss_at_speedup(c, speedup) for m, c in curves.items() if c}
            losses = {m: v for m, v in losses.items() if v is not None}
            if "ges" in losses and len(losses) >= 2:
                out.append((name, speedup, losses))
    return out


def speedup_rows(results: dict[str, dict]) -> list[str]:
    """Per model, at each batch-1 speed-up GES measured, every method's loss there (best in bold)."""
    lines = _head(["model", "batch-1 speed-up (GES's)"], "loss (pt)", draws=False)
    for name, speedup, losses in losses_at_speedups(results):
        low = min(losses.values())
        cells = [("–" if m not in losses else f"**{losses[m]:.2f}**" if losses[m] == low else f"{losses[m]:.2f}")
                 for m in METHODS]
        lines.append(f"| {MODELS[name]['label']} | {speedup:.2f}× | " + " | ".join(cells) + " |")
    return lines


def speed_verdicts(results: dict[str, dict]) -> list[str]:
    """One line per MAC-matched point and per speed-up read: whether GES has the smallest loss there,
    and if not, which peers do better and by how much. At a MAC point, a best peer and GES closer
    than the larger of their sds over the draws are called a tie."""
    points = []  # (where, GES's loss, its sd or None, peer -> (loss, sd or None))
    for name, data in results.items():
        groups = group_runs(data.get("runs", {}).values(), "macs")
        for (target, method), runs in groups.items():
            if method == "ges":
                peers = {m: mean_sd([r["loss_pt"] for r in g]) for (b, m), g in groups.items()
                         if b == target and m != "ges"}
                points.append((f"{MODELS[name]['label']} at {100 * target:g} % of the MACs",
                               *mean_sd([r["loss_pt"] for r in runs]), peers))
    for name, speedup, losses in losses_at_speedups(results):
        peers = {m: (v, None) for m, v in losses.items() if m != "ges"}
        points.append((f"{MODELS[name]['label']} at {speedup:.2f}× (the peers read off their curves)", losses["ges"],
                       None, peers))
    lines = []
    for where, ges, ges_sd, peers in points:
        if not peers:
            continue
        (best, best_sd), name = min((v, m) for m, v in peers.items())
        spread = max(ges_sd or 0.0, best_sd or 0.0)
        tie = f" (within the spread over draws, ± {spread:.2f}: a tie)" if abs(best - ges) < spread else ""
        better = sorted((v[0], m) for m, v in peers.items() if v[0] < ges)
        if better:
            lines.append(f"- {where}: GES loses {ges:.2f} pt; smaller: "
                         + ", ".join(f"{SHORT[m]} {v:.2f} pt" for v, m in better) + tie)
        else:
            lines.append(f"- {where}: GES loses {ges:.2f} pt, the best peer ({SHORT[name]}) {best:.2f} pt{tie}")
    return lines
