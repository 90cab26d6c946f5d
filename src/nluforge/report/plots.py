"""Pareto plots: score against each cost, and clean against robust accuracy, as inline-ready SVG.

Each point is a variant (mean over seeds, error bars its 95% interval). Optimal variants (the
noise-aware front of ``pareto``) are filled and joined by the frontier, a staircase: for any budget on
the x axis, the frontier's height is the best score reachable within it. Variants dominated only
within noise are tinted, clearly dominated ones hollow, degenerate ones a cross. The majority-class
baseline is a reference line (embedding baselines dotted), and a derived variant is joined to its
parent by an arrow. Built on matplotlib's object API (no pyplot, so no global state and no GUI
backend); text stays text in the SVG, so it is small and searchable.

SVG element ids (scoped by the plot name) let tests and readers find the marks: ``errorbar-<i>``,
``baseline-majority``, ``baseline-<name>``, ``derived-<i>``.
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from nluforge.core.errors import MissingExtraError
from nluforge.report.format import fmt_count
from nluforge.report.metrics import display_name
from nluforge.report.pareto import COST_AXES, ROBUST_PREFIX, CostAxis
from nluforge.report.tables import TaskReport, VariantRow

# Okabe & Ito (2008), "Color Universal Design": distinguishable with colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
FRONTIER_COLOR = "#3b3b3b"
# Fixed margins (fractions of the figure) instead of tight layout: one draw per plot, not three.
MARGINS = dict(left=0.11, right=0.975, bottom=0.125, top=0.915)
# Where a point's label may go, in points from the point, tried in order: (dx, dy, ha, va).
LABEL_BOX = dict(boxstyle="square,pad=0.1", facecolor="white", edgecolor="none", alpha=0.75)
LABEL_SLOTS = (
    (6, 4, "left", "bottom"),
    (6, -4, "left", "top"),
    (-6, 4, "right", "bottom"),
    (-6, -4, "right", "top"),
    (0, 8, "center", "bottom"),
    (0, -8, "center", "top"),
)


@dataclass(frozen=True)
class Plot:
    """One rendered plot: a file stem, a caption, and the ``<svg>`` element."""

    name: str  # "sst2-params"
    title: str
    svg: str


@dataclass(frozen=True)
class _Point:
    label: str
    color: str
    x: float
    y: float
    xerr: tuple[float, float] | None  # (below, above) the point
    yerr: tuple[float, float] | None
    optimal: bool
    state: str = "dominated"  # "optimal" | "noise" | "dominated" | "degenerate"
    key: str = ""
    parent: str | None = None


@dataclass(frozen=True)
class _Reference:
    """A baseline drawn as a line: horizontal at ``y`` (or vertical at ``x``)."""

    gid: str
    label: str
    value: float
    vertical: bool = False
    dotted: bool = False


def _figure():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("matplotlib", "report") from None
    fig = Figure(figsize=(5.6, 3.9), dpi=100)
    fig.subplots_adjust(**MARGINS)
    FigureCanvasAgg(fig)  # attaches itself: text extents for label placement
    return fig


def _family(row: VariantRow) -> str:
    """What a point's colour says: the method, and whether the model was compressed."""
    return row.method + ("+compressed" if row.config.get("compress") else "")


def _colors(task: TaskReport) -> dict[str, str]:
    """One colour per family, in table order, so lora has one colour in every plot of a task."""
    families = list(dict.fromkeys(_family(r) for r in task.rows))
    return {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(families)}


def _err(stat) -> tuple[float, float] | None:
    """The interval as distances below and above the mean, in %; None without an interval."""
    if stat is None or stat.lo is None or stat.hi is None:
        return None
    return 100 * max(stat.mean - stat.lo, 0.0), 100 * max(stat.hi - stat.mean, 0.0)


def _state(task: TaskReport, row: VariantRow, front_name: str) -> str:
    if row.degenerate:
        return "degenerate"
    if row.key in task.frontiers.get(front_name, set()):
        return "optimal"
    return "noise" if row.key in task.noise.get(front_name, set()) else "dominated"


def _style_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel, fontsize=8.5)
    ax.set_ylabel(ylabel, fontsize=8.5)
    ax.set_title(title, fontsize=10, loc="left", fontweight="bold", color="#1f2328")
    ax.tick_params(labelsize=7.5, colors="#444444")
    ax.grid(True, which="major", color="#e6e6e6", linewidth=0.7)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.margins(x=0.14, y=0.16)


def _errorbar_arg(err: tuple[float, float] | None):
    return None if err is None else [[err[0]], [err[1]]]


def _draw_points(ax, points: list[_Point]) -> None:
    for i, p in enumerate(points):
        if p.xerr or p.yerr:
            bars = ax.errorbar(
                p.x,
                p.y,
                xerr=_errorbar_arg(p.xerr),
                yerr=_errorbar_arg(p.yerr),
                fmt="none",
                ecolor=p.color,
                elinewidth=1,
                capsize=2.5,
                alpha=0.7,
                zorder=2,
            )
            for artist in bars.lines[2]:  # the bar collections
                artist.set_gid(f"errorbar-{i}")
                break
        if p.state == "degenerate":
            ax.scatter([p.x], [p.y], s=44, marker="x", color=p.color, linewidth=1.8, zorder=3)
            continue
        face = {"optimal": p.color, "noise": p.color + "55"}.get(p.state, "white")
        ax.scatter(
            [p.x],
            [p.y],
            s=46 if p.optimal else 38,
            facecolor=face,
            edgecolor=p.color,
            linewidth=1.6,
            zorder=3,
        )


def _draw_references(ax, refs: list[_Reference]) -> None:
    for ref in refs:
        draw = ax.axvline if ref.vertical else ax.axhline
        line = draw(
            ref.value, color="#8c959f", linestyle=":" if ref.dotted else "-.", linewidth=1.1, zorder=1
        )
        line.set_gid(ref.gid)
        where = (
            dict(x=ref.value, y=0.98, ha="right", va="top", rotation=90)
            if ref.vertical
            else dict(x=0.99, y=ref.value, ha="right", va="bottom")
        )
        transform = ax.get_xaxis_transform() if ref.vertical else ax.get_yaxis_transform()
        ax.text(s=ref.label, fontsize=6.5, color="#6e7781", transform=transform, zorder=1, **where)


def _draw_links(ax, points: list[_Point]) -> None:
    """An arrow from each derived variant's parent to it."""
    by_key = {p.key: p for p in points}
    for i, p in enumerate(q for q in points if q.parent in by_key):
        parent = by_key[p.parent]
        arrow = ax.annotate(
            "",
            xy=(p.x, p.y),
            xytext=(parent.x, parent.y),
            arrowprops=dict(arrowstyle="->", color="#57606a", linewidth=0.9, shrinkA=5, shrinkB=5),
            zorder=2,
        )
        arrow.arrow_patch.set_gid(f"derived-{i}")


def _draw_frontier(ax, points: list[_Point], where: str) -> None:
    front = sorted((p for p in points if p.optimal), key=lambda p: p.x)
    if len(front) > 1:
        ax.step(
            [p.x for p in front],
            [p.y for p in front],
            where=where,
            color=FRONTIER_COLOR,
            linestyle="--",
            linewidth=1.1,
            zorder=1,
        )


def _legend(ax, with_frontier: bool, states: set[str], refs: list[_Reference]) -> None:
    from matplotlib.lines import Line2D

    def marker(face: str) -> Line2D:
        return Line2D(
            [],
            [],
            linestyle="none",
            marker="o",
            markersize=6,
            markerfacecolor=face,
            markeredgecolor="#555555",
            markeredgewidth=1.4,
        )

    handles, names = [marker("#555555")], ["optimal"]
    if "noise" in states:
        handles.append(marker("#55555555"))
        names.append("dominated within noise")
    handles.append(marker("white"))
    names.append("dominated")
    if "degenerate" in states:
        handles.append(Line2D([], [], linestyle="none", marker="x", markersize=6, color="#555555"))
        names.append("degenerate")
    if refs:
        handles.append(Line2D([], [], color="#8c959f", linestyle="-.", linewidth=1.1))
        names.append("baseline")
    if with_frontier:
        handles.append(Line2D([], [], color=FRONTIER_COLOR, linestyle="--", linewidth=1.1))
        names.append("frontier")
    ax.legend(handles, names, fontsize=7, loc="best", frameon=True, framealpha=0.85, edgecolor="#dddddd")


def _annotate(ax, p: _Point, slot: tuple[int, int, str, str]):
    dx, dy, ha, va = slot
    return ax.annotate(
        textwrap.fill(p.label, 34),
        (p.x, p.y),
        xytext=(dx, dy),
        textcoords="offset points",
        ha=ha,
        va=va,
        fontsize=7,
        zorder=4,
        color="#1f2328" if p.optimal else "#6e7781",
        fontweight="bold" if p.optimal else "normal",
        bbox=LABEL_BOX,
    )


def _inside(box, frame) -> bool:
    return frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def _place_labels(fig, ax, points: list[_Point]) -> None:
    """Label every point in the first slot around it that collides least with markers and labels.

    A collision costs 10, leaving the plot frame 1. Pareto-optimal points choose first.
    """
    from matplotlib.transforms import Bbox

    ax.get_xlim(), ax.get_ylim()  # settle the lazy autoscale first, or transData is stale
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = [
        Bbox.from_bounds(x - 5, y - 5, 10, 10)
        for x, y in (ax.transData.transform((p.x, p.y)) for p in points)
    ]
    for p in sorted(points, key=lambda p: not p.optimal):
        tried = []
        for slot in LABEL_SLOTS:
            text = _annotate(ax, p, slot)
            box = text.get_window_extent(renderer).padded(2)  # pixels
            text.remove()
            tried.append((10 * sum(box.overlaps(t) for t in taken) + (not _inside(box, frame)), slot, box))
            if tried[-1][0] == 0:
                break
        _, slot, box = min(tried, key=lambda t: t[0])
        _annotate(ax, p, slot)
        taken.append(box)


def _scope_ids(svg: str, prefix: str) -> str:
    """Prefix every id and reference to it, so many plots can share one HTML page without clashes."""
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', svg)
    return re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)


def _to_svg(fig, name: str) -> str:
    """The figure as a bare ``<svg>`` element (no XML prolog, no metadata), ids scoped by ``name``.

    The hash salt makes the output deterministic: the same results give byte-identical plots.
    """
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg[svg.index("<svg") :], flags=re.S)
    return _scope_ids(svg.strip(), name)


def _render(
    points: list[_Point],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    where: str,
    salt: str,
    xlog: bool = False,
    xfmt: Callable[[float], str] | None = None,
    refs: list[_Reference] | None = None,
) -> str:
    """Draw one Pareto plot and return its SVG."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    fig = _figure()
    ax = fig.add_subplot()
    if xlog:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())  # decades only: unlabelled minor ticks are noise
    if xfmt:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: xfmt(v)))
    _draw_frontier(ax, points, where)
    _draw_points(ax, points)
    _draw_links(ax, points)
    _style_axes(ax, xlabel, ylabel, title)
    _draw_references(ax, refs or [])
    _legend(ax, sum(p.optimal for p in points) > 1, {p.state for p in points}, refs or [])
    _place_labels(fig, ax, points)
    return _to_svg(fig, salt)


def _stem(task: str, name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{task}-{name}").strip("-").lower()


def _references(task: TaskReport, metric: str | None, vertical: bool = False) -> list[_Reference]:
    """The baselines of ``metric`` as reference lines: the majority class, then embedding baselines."""
    refs = []
    for base in task.baselines:
        value = base.score(metric)
        if value is not None:
            gid = "baseline-majority" if base.kind == "majority" else f"baseline-{_stem('', base.label)}"
            refs.append(_Reference(gid, base.label, 100 * value, vertical, dotted=base.kind != "majority"))
    return refs


def _cost_plot(task: TaskReport, axis: CostAxis, colors: dict[str, str]) -> Plot | None:
    rows = [r for r in task.rows if axis.field in r.cost and r.score(task.primary) is not None]
    if len(rows) < 2 or not task.primary:
        return None
    points = [
        _Point(
            r.label,
            colors[_family(r)],
            r.cost[axis.field],
            100 * (r.score(task.primary) or 0.0),
            None,
            _err(r.stat(task.primary)),
            _state(task, r, axis.name) == "optimal",
            _state(task, r, axis.name),
            r.key,
            r.parent_key,
        )
        for r in rows
    ]
    values = [p.x for p in points]
    xlog = min(values) > 0 and (axis.log or max(values) / min(values) > 30)  # zero cost: linear
    metric = display_name(task.primary)
    title = f"{task.task}: {metric} vs {axis.title.split(' (')[0]}"
    svg = _render(
        points,
        title=title,
        xlabel=axis.title,
        ylabel=f"{metric} (%)",
        where="post",
        salt=_stem(task.task, axis.name),
        xlog=xlog,
        xfmt=fmt_count if axis.field == "trainable_params" else (lambda v: f"{v:g}"),
        refs=_references(task, task.primary),
    )
    return Plot(_stem(task.task, axis.name), title, svg)


def _robust_plot(task: TaskReport, name: str, colors: dict[str, str]) -> Plot | None:
    clean = task.clean_metric
    rows: list[VariantRow] = [r for r in task.rows if name in r.robust and clean in r.metrics]
    if len(rows) < 2 or not clean:
        return None
    front = ROBUST_PREFIX + name
    points = [
        _Point(
            r.label,
            colors[_family(r)],
            100 * r.metrics[clean].mean,
            100 * r.robust[name].mean,
            _err(r.metrics[clean]),
            _err(r.robust[name]),
            _state(task, r, front) == "optimal",
            _state(task, r, front),
            r.key,
            r.parent_key,
        )
        for r in rows
    ]
    title = f"{task.task}: {name} vs clean {display_name(clean)}"
    svg = _render(
        points,
        title=title,
        xlabel=f"clean {display_name(clean)} (%)",
        ylabel=f"{name} (%)",
        where="pre",
        salt=_stem(task.task, f"robust-{name}"),
        refs=_references(task, clean, vertical=True),
    )
    return Plot(_stem(task.task, f"robust-{name}"), title, svg)


def task_plots(task: TaskReport) -> list[Plot]:
    """The Pareto plots of a task: one per cost axis and per robust metric with two or more variants."""
    colors = _colors(task)
    plots = [_cost_plot(task, axis, colors) for axis in COST_AXES]
    plots += [_robust_plot(task, name, colors) for name in task.robust_names]
    return [p for p in plots if p is not None]
