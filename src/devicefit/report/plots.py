"""The figures of a search report, as matplotlib :class:`~matplotlib.figure.Figure` objects.

Built with the object-oriented API (``Figure()``, no ``pyplot``): nothing here touches the caller's
matplotlib state (its backend, its open figures), and any thread may draw. Each function takes plain
numbers, so a figure shows exactly what the report's tables state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

GREY, BLUE, RED, GREEN, ORANGE = "#8c959f", "#0969da", "#cf222e", "#1a7f37", "#bc4c00"


def _figure(width_in: float, height_in: float) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    return fig, fig.add_subplot()


def _objective_axis(ax: Any, values: Sequence[float], label: str, maximize: bool, keep: float = 0.9) -> None:
    """Label the objective axis and choose its range: a log scale for positive values spanning more than three
    decades (zero-cost proxy scores), else the best ``keep`` share of ``values`` (a few very bad candidates
    would squash the interesting part); the label says which."""
    if len(values) >= 2 and min(values) > 0 and max(values) / min(values) > 1e3:
        ax.set_yscale("log")
        ax.set_ylabel(f"{label}, log scale")
        return
    ordered = sorted(values, reverse=maximize)
    if len(ordered) < 10:
        ax.set_ylabel(label)
        return
    inner = ordered[: max(1, round(keep * len(ordered)))]
    lo, hi = min(inner), max(inner)
    pad = 0.05 * (hi - lo) or 0.5
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_ylabel(f"{label}\n(the best {round(100 * keep)} % shown)" if len(inner) < len(ordered) else label)


def curve_figure(objective: Sequence[float | None], best_so_far: Sequence[float | None], label: str,
                 maximize: bool) -> Any:
    """Each evaluation's objective (grey, ``None`` = infeasible or failed) and the best feasible so far (a
    step line), against the number of objective evaluations."""
    fig, ax = _figure(6.5, 3.8)
    xs = range(1, len(objective) + 1)
    pts = [(x, v) for x, v in zip(xs, objective) if v is not None]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=9, color=GREY, label="each evaluation")
    best = [(x, v) for x, v in zip(xs, best_so_far) if v is not None]
    ax.step([p[0] for p in best], [p[1] for p in best], where="post", color=BLUE, lw=2, label="best so far")
    _objective_axis(ax, [p[1] for p in pts], label, maximize)
    ax.set_xlabel("objective evaluations")
    _legend(fig)
    ax.grid(alpha=0.3)
    return fig


def _legend(fig: Any, columns: int = 3) -> None:
    """The legend below the axes, where it hides no point."""
    fig.legend(loc="outside lower center", ncols=columns, fontsize=8, frameon=False)


@dataclass(frozen=True)
class FrontPoint:
    """One candidate in the (cost, objective) plane."""

    cost: float
    objective: float
    feasible: bool
    on_front: bool
    answer: bool = False


def front_figure(points: Sequence[FrontPoint], rejected_costs: Sequence[float], cost_label: str,
                 objective_label: str, maximize: bool, budget: float | None, budget_label: str) -> Any:
    """Every candidate with both values (feasible dots, infeasible crosses), the front as a step line, the
    answer as a star, the budget as a dashed line, and the cost of candidates rejected before evaluation
    as ticks along the bottom."""
    fig, ax = _figure(6.5, 4.6)
    ok = [p for p in points if p.feasible]
    bad = [p for p in points if not p.feasible]
    ax.scatter([p.cost for p in ok], [p.objective for p in ok], s=11, color=GREY, label="feasible")
    if bad:
        ax.scatter([p.cost for p in bad], [p.objective for p in bad], s=22, marker="x", color=ORANGE,
                   label="infeasible")
    front = sorted((p for p in points if p.on_front), key=lambda p: p.cost)
    ax.step([p.cost for p in front], [p.objective for p in front], where="post", color=RED, lw=1.6,
            marker="o", ms=4, label="Pareto front")
    if budget is not None:
        ax.axvline(budget, color="k", ls="--", lw=1, label=budget_label)
    for p in points:
        if p.answer:
            ax.scatter([p.cost], [p.objective], marker="*", s=170, color=GREEN, zorder=5, label="answer")
    _objective_axis(ax, [p.objective for p in points], objective_label, maximize)
    if rejected_costs:
        ax.plot(rejected_costs, [0.0] * len(rejected_costs), "|", ms=10, color=ORANGE, alpha=0.7,
                transform=ax.get_xaxis_transform(), clip_on=False,
                label=f"rejected before evaluation ({len(rejected_costs)})")
    ax.set_xlabel(cost_label)
    _legend(fig)
    ax.grid(alpha=0.3)
    return fig


def recheck_figure(predicted: Sequence[float], true: Sequence[float], budget: float, unit: str) -> Any:
    """Predicted against true cost of the candidates the predictor let through, with the budget on both
    axes: points right of the vertical line were wrongly judged feasible."""
    fig, ax = _figure(5.0, 4.8)
    wrong = [t > budget for t in true]
    ax.scatter([t for t, w in zip(true, wrong) if not w], [p for p, w in zip(predicted, wrong) if not w], s=12,
               color=GREEN, label="truly feasible")
    ax.scatter([t for t, w in zip(true, wrong) if w], [p for p, w in zip(predicted, wrong) if w], s=22,
               marker="x", color=RED, label="truly over the budget")
    both = list(predicted) + list(true)
    lo, hi = min(both), max(both)
    ax.plot([lo, hi], [lo, hi], color=GREY, lw=1, label="predicted = true")
    ax.axvline(budget, color="k", ls="--", lw=1)
    ax.axhline(budget, color="k", ls="--", lw=1, label=f"budget {budget:g} {unit}")
    ax.set_xlabel(f"true ({unit})")
    ax.set_ylabel(f"predicted ({unit})")
    _legend(fig, 2)
    ax.grid(alpha=0.3)
    return fig


def layer_figure(layers: Sequence[str], panels: Sequence[tuple[str, Sequence[float], Sequence[float]]]) -> Any:
    """Per layer (rows, in model order), original against compressed, one panel per ``(label, original,
    compressed)``: where a policy takes its savings from."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.4 * len(panels) + 1.6, 0.9 + 0.22 * len(layers)), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    ys = list(range(len(layers)))
    for ax, (label, original, compressed) in zip(axes, panels):
        ax.barh([y - 0.2 for y in ys], original, height=0.4, color=GREY, label="original")
        ax.barh([y + 0.2 for y in ys], compressed, height=0.4, color=BLUE, label="compressed")
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    axes[0].set_yticks(ys, list(layers), fontsize=7)
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def sensitivity_figure(curves: dict[str, dict[float, float]]) -> Any:
    """Per layer (one line each, the most sensitive labelled), accuracy against the kept ratio."""
    fig, ax = _figure(6.5, 4.2)
    worst = sorted(curves, key=lambda n: min(curves[n].values()))[:5]
    for name, curve in curves.items():
        xs = sorted(curve)
        labelled = name in worst
        ax.plot(xs, [curve[x] for x in xs], marker="o", ms=3, lw=1.4 if labelled else 0.8,
                color=None if labelled else GREY, alpha=1.0 if labelled else 0.5, label=name if labelled else None)
    ax.set_xlabel("kept ratio of the layer (the others uncompressed)")
    ax.set_ylabel("accuracy estimate %")
    ax.grid(alpha=0.3)
    _legend(fig)
    return fig
