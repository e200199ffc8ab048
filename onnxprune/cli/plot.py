"""The sweep's picture (sweep.png): top-1 against the parameters and the MACs removed, and the
output channels each layer keeps at one chosen point. Needs matplotlib, the optional [plot] extra.

Presentation, so it lives with the CLI: the sweep (search/sweep.py) returns the data and knows
nothing of this module.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

from onnxprune.errors import ConfigError

if TYPE_CHECKING:
    from onnxprune.search.sweep import SweepResult

MISSING = "the plot needs matplotlib: pip install 'onnxprune[plot]' (or leave the plot out with --no-plot)"


def require_matplotlib() -> None:
    """Fail at once, before any pruning, when the plot was asked for and cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING) from None


def write_plot(result: SweepResult, directory: str | os.PathLike, show_point: int | None = None) -> Path:
    """Write ``directory``/sweep.png (atomically) showing ``show_point`` (1-based; by default the
    result's default_point()), and return its path."""
    from onnxprune.graph.io import write_atomic

    path = Path(directory) / "sweep.png"
    write_atomic(sweep_png(result, show_point or result.default_point()), path)
    return path


def sweep_png(result: SweepResult, show_point: int) -> bytes:
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # no display: draw to memory
    import matplotlib.pyplot as plt

    if not 1 <= show_point <= len(result.points) or result.points[show_point - 1].error is not None:
        reached = [i for i, p in enumerate(result.points, start=1) if p.error is None]
        raise ConfigError(f"--show-point {show_point}: choose one of the points that were reached: "
                          f"{', '.join(map(str, reached))}")
    reached = [(i, p) for i, p in enumerate(result.points, start=1) if p.error is None]
    chosen = result.points[show_point - 1]
    figure = plt.figure(figsize=(13, 8.5), dpi=110)
    grid = figure.add_gridspec(2, 2, height_ratios=(1, 1.1), hspace=0.55, wspace=0.22)
    for column, (attribute, label) in enumerate((("params_removed", "parameters removed (%)"),
                                                 ("macs_removed", "MACs removed (%)"))):
        axes = figure.add_subplot(grid[0, column])
        x = [100 * getattr(p, attribute) for _, p in reached]
        y = [100 * p.top1 for _, p in reached]
        axes.plot([0] + x, [100 * result.top1_before] + y, "-o", color="tab:blue", zorder=2)
        axes.axhline(100 * result.top1_before, color="grey", linestyle="--", linewidth=1,
                     label=f"original {100 * result.top1_before:.2f} %")
        for (number, point), xi, yi in zip(reached, x, y):
            axes.annotate(str(number), (xi, yi), textcoords="offset points", xytext=(4, -12), fontsize=8)
        marked = 100 * getattr(chosen, attribute), 100 * chosen.top1
        axes.plot(*marked, "o", markersize=11, markerfacecolor="none", markeredgecolor="tab:red", zorder=3,
                  label=f"point {show_point} (below)")
        axes.set_xlabel(label)
        axes.set_ylabel(f"top-1 on {result.eval_samples:,} samples (%)")
        axes.set_xlim(-2, 102)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left", fontsize=8)
    figure.axes[0].set_title("accuracy vs parameters removed")
    figure.axes[1].set_title("accuracy vs MACs removed")

    axes = figure.add_subplot(grid[1, :])
    names = [name for name, _, _ in chosen.layers]
    positions = range(len(names))
    axes.bar(positions, [before for _, before, _ in chosen.layers], color="lightgrey", label="original")
    axes.bar(positions, [after for _, _, after in chosen.layers], color="tab:blue", label="kept")
    axes.set_xticks(list(positions), names, rotation=60, ha="right", fontsize=7)
    axes.set_ylabel("output channels")
    what = (f"target {chosen.target:.0%} of the {'parameters' if result.metric == 'params' else 'MACs'}, "
            if chosen.target is not None else "")
    axes.set_title(f"channels kept per layer at point {show_point} ({what}eps_l2 {chosen.eps_l2:g}: "
                   f"{chosen.params_removed:.1%} of the parameters, {chosen.macs_removed:.1%} of the MACs removed, "
                   f"top-1 {100 * chosen.top1:.2f} %)", fontsize=10)
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
