"""The benchmark's plan: models, methods, budgets, draws, the matched-sparsity search, and what is still missing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# file stem in ../shared/models -> label, default budgets (eps_l2), MAC targets (fraction of the MACs
# removed, GES through --target-macs), the paper's claim
MODELS = {
    "lenet5_mnist": {"label": "LeNet-5 / MNIST", "budgets": (0.8, 2.0, 4.0), "mac_targets": (), "paper": (0.55, 0.84)},
    "vgg16_cifar10": {"label": "VGG-16 / CIFAR-10", "budgets": (0.4, 0.8, 1.2), "mac_targets": (0.6,),
                      "paper": (0.73, 0.89)},
    "resnet18_cifar10": {"label": "ResNet-18 / CIFAR-10", "budgets": (0.4, 0.8, 1.6), "mac_targets": (0.5,),
                         "paper": (0.73, 0.89)},
}
# What a point matches every method on: "params", the parameters GES removes at an eps_l2 (draw 0);
# "macs", a fraction of the MACs removed, the target itself (GES meets it by allocation).
MATCHES = ("params", "macs")
PAPER_LOSS = (0.1, 0.5)  # pt of top-1, for the sparsities above (Barisin & Horenko 2024)
METHODS = {  # name -> (label, ratio knob or None)
    "ges": ("GES + reconstruction (onnxprune)", None),
    "l1": ("L1 filter norms + reconstruction", "keep_fraction"),
    "lasso": ("LASSO + reconstruction", "keep_fraction"),
    "onnxsim-l2": ("onnxsim structured L2", "sparsity"),
    "onnxsim-wanda": ("onnxsim structured Wanda", "sparsity"),
}
SHORT = {"ges": "GES + recon.", "l1": "L1 + recon.", "lasso": "LASSO + recon.",
         "onnxsim-l2": "onnxsim L2", "onnxsim-wanda": "onnxsim Wanda"}
DRAWS = 3
SAMPLES = 1024
MATCH_TOL = 0.01  # matched reduction: within +-1 pt of the target
KNOB_MAX = 0.99  # the most a peer's knob may drop
BATCHES = (1, 64)


def run_key(method: str, budget: float, draw: int, match: str = "params") -> str:
    return f"{method}|{point_key(budget, match)}|draw={draw}"


def point_key(budget: float, match: str = "params") -> str:
    """'eps_l2=0.8' for a parameter-matched point, 'macs=0.5' for a MAC-matched one."""
    return f"{'eps_l2' if match == 'params' else 'macs'}={budget:g}"


def match_of(run: dict) -> str:
    """What a cached run was matched on (runs from before MAC matching have no field: parameters)."""
    return run.get("match", "params")


def planned_points(spec: dict) -> list[tuple[str, float]]:
    """A model's (match, budget) points: its eps_l2 budgets, then its MAC targets."""
    return [("params", b) for b in spec["budgets"]] + [("macs", t) for t in spec["mac_targets"]]


def point_label(match: str, budget: float) -> str:
    return f"ε_L2 {budget:g}" if match == "params" else f"{100 * budget:g} % of MACs"


def match_knob(removed_at: Callable[[float], float], target: float, *, lo: float = 0.0, hi: float = KNOB_MAX,
               tol: float = MATCH_TOL, max_trials: int = 14,
               guess: float | None = None) -> tuple[float, float, list[tuple[float, float]]]:
    """Search a knob whose parameters-removed fraction grows with it until it is within ``tol`` of ``target``.

    ``removed_at(knob)`` may be a step function (channel counts are integers) and may be costly (a
    prune), so the search interpolates inside its bracket (starting from ``guess``, and from the
    assumption that knob 0 removes nothing and knob 1 everything), with a bisection step after every
    interpolation that did not end the search. Returns (knob, removed, trials): the first knob within
    tolerance, or else the closest one tried (``hi`` when even it removes too little).
    """
    trials: list[tuple[float, float]] = []
    a, fa, b, fb = lo, 0.0, 1.0, 1.0  # bracket; the ends' values are assumptions until tried
    knob, bisect = (guess if guess is not None else lo + (target - fa) * (b - a) / (fb - fa)), False
    while len(trials) < max_trials:
        knob = round(min(max(knob, lo), hi), 4)
        if any(knob == k for k, _ in trials):
            knob = round((a + b) / 2, 4)
            if any(knob == k for k, _ in trials):
                break  # the bracket has shrunk to nothing: a step the tolerance cannot meet
        removed = float(removed_at(knob))
        trials.append((knob, removed))
        if abs(removed - target) <= tol:
            return knob, removed, trials
        if removed < target:
            a, fa = knob, removed
            if knob >= hi:
                break  # out of reach
        else:
            b, fb = knob, removed
            if knob <= lo:
                break
        knob = (a + b) / 2 if bisect or fb == fa else a + (target - fa) * (b - a) / (fb - fa)
        bisect = not bisect
    best = min(trials, key=lambda t: abs(t[1] - target))
    return (*best, trials)


def missing_runs(results: dict[str, dict]) -> list[str]:
    """What the full plan has that the cache does not: one line per (model, budget, methods) with its draws."""
    draws_of: dict[tuple[str, str, str], list[int]] = {}
    for name, spec in MODELS.items():
        runs = results.get(name, {}).get("runs", {})
        for match, budget in planned_points(spec):
            for draw in range(DRAWS):
                missing = [SHORT[m] for m in METHODS if run_key(m, budget, draw, match) not in runs]
                if missing:
                    which = "all methods" if len(missing) == len(METHODS) else ", ".join(missing)
                    draws_of.setdefault((spec["label"], point_label(match, budget), which), []).append(draw)
    out = [f"- {label}, {point}, draw{'s' if len(d) > 1 else ''} {', '.join(map(str, d))}: {which}"
           for (label, point, which), d in draws_of.items()]
    return (["Not run yet:", "", *out] if out else ["Every run of the plan is in the cache."])


def coverage(results: dict[str, dict]) -> list[str]:
    lines = ["| model | budgets (ε_L2; MAC targets) | methods | draws | runs done / full plan |", "|---|---|---|---|---|"]
    for name, spec in MODELS.items():
        runs = results.get(name, {}).get("runs", {}).values()
        points = planned_points(spec)
        full = len(points) * len(METHODS) * DRAWS
        done = sum(1 for r in runs if (match_of(r), r["budget"]) in points and r["draw"] < DRAWS)
        budgets = sorted({r["budget"] for r in runs if match_of(r) == "params"})
        targets = sorted({r["budget"] for r in runs if match_of(r) == "macs"})
        draws = sorted({r["draw"] for r in runs})
        methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
        lines.append(f"| {spec['label']} | {', '.join(f'{b:g}' for b in budgets) or '–'} of "
                     f"{', '.join(f'{b:g}' for b in spec['budgets'])}; "
                     f"{', '.join(f'{100 * t:g} %' for t in targets) or '–'} of "
                     f"{', '.join(f'{100 * t:g} %' for t in spec['mac_targets']) or '–'} | {len(methods)} of {len(METHODS)} | "
                     f"{', '.join(map(str, draws)) or '–'} of 0–{DRAWS - 1} | {done} / {full} |")
    return lines
