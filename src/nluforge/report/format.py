"""How numbers read in every output (HTML, Markdown, terminal): one set of formatters and columns.

Metrics are shown in % with one decimal, ``mean ± h`` where h is half the width of the 95% interval
(GLUE reports scores x100, MCC and correlations included); a score without an interval (one seed, no
saved predictions) shows the mean alone. Costs get three significant digits, parameter counts a k/M/B
suffix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nluforge.report.metrics import display_name
from nluforge.report.pareto import COST_AXES, ROBUST_PREFIX
from nluforge.report.tables import Stat, TaskReport, VariantRow

DASH = "—"


def fmt_pct(value: float) -> str:
    """``0.881`` -> ``88.1``; no negative zero (a constant predictor's -1e-17 Pearson is 0.0)."""
    return f"{100 * value:.1f}".replace("-0.0", "0.0")


def fmt_stat(stat: Stat | None, with_interval: bool = True) -> str:
    """``Stat(0.881, .., lo=0.870, hi=0.892)`` -> ``88.1 ± 1.1``; no interval shows the mean alone."""
    if stat is None:
        return DASH
    mean = fmt_pct(stat.mean)
    if stat.half_width is None or not with_interval:
        return mean
    return f"{mean} ± {100 * stat.half_width:.1f}"


def plural(n: int, noun: str) -> str:
    """``plural(1, "run")`` -> ``1 run``; ``plural(3, "run")`` -> ``3 runs``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def fmt_count(n: float | None) -> str:
    """A parameter count: 22713986 -> ``22.7M``, 147458 -> ``147k``."""
    if n is None:
        return DASH
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:.0f}"


def fmt_quantity(value: float | None) -> str:
    """A measured cost with about three significant digits: 1234.5 -> ``1,234``, 9.04 -> ``9.04``."""
    if value is None:
        return DASH
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def fmt_ratio(ratio: float) -> str:
    """A fraction as a percentage that stays readable when small: 0.0065 -> ``0.65%``."""
    pct = 100 * ratio
    if pct < 1:
        return f"{pct:.2g}%"
    return f"{pct:.1f}%" if pct < 10 else f"{pct:.0f}%"


def fmt_axis_value(field: str, value: float) -> str:
    return fmt_count(value) if field == "trainable_params" else fmt_quantity(value)


def params_cell(row: VariantRow) -> str:
    """Trainable parameters, with their share of all parameters: ``147k (0.65%)``."""
    trainable, total = row.cost.get("trainable_params"), row.cost.get("total_params")
    if trainable is None:
        return DASH
    share = f" ({fmt_ratio(trainable / total)})" if total else ""
    return fmt_count(trainable) + share


@dataclass(frozen=True)
class Column:
    """A table column: its header and how a row's cell reads."""

    header: str
    cell: Callable[[VariantRow], str]
    numeric: bool = True
    primary: bool = False


# (header, Cost field, cell) for the cost columns, in table order.
COST_COLUMNS: tuple[tuple[str, str, Callable[[VariantRow], str]], ...] = (
    ("Trainable params", "trainable_params", params_cell),
    ("Peak mem (MB)", "peak_memory_mb", lambda r: fmt_quantity(r.cost.get("peak_memory_mb"))),
    ("Train ex/s", "train_examples_per_s", lambda r: fmt_quantity(r.cost.get("train_examples_per_s"))),
    ("Latency bs1 (ms)", "latency_ms_bs1", lambda r: fmt_quantity(r.cost.get("latency_ms_bs1"))),
    ("Latency bs32 (ms)", "latency_ms_bs32", lambda r: fmt_quantity(r.cost.get("latency_ms_bs32"))),
    ("Size (MB)", "standalone_size_mb", lambda r: fmt_quantity(r.cost.get("standalone_size_mb"))),
    ("Delta (MB)", "delta_size_mb", lambda r: fmt_quantity(r.cost.get("delta_size_mb"))),
)


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _is_variant(row) -> bool:
    """A variant row, not a baseline row (``baselines.BaselineRow``)."""
    return isinstance(row, VariantRow)


def table_rows(task: TaskReport) -> list:
    """What a task's table lists: the variants, best first, then the baselines."""
    return [*task.rows, *task.baselines]


def flags(task: TaskReport, row: VariantRow) -> list[str]:
    """What a reader must know about a variant: degenerate, not above a baseline, and the like."""
    out = [f"degenerate: {row.degenerate}"] if row.degenerate else []
    sig = task.significance
    if sig is not None and not out and sig.above_baseline(row.key) is False:
        out.append("not above the majority baseline")
    score, stat = row.score(task.primary), row.stat(task.primary)
    for base in task.baselines:
        ref = base.score(task.primary) if base.kind == "embedding" and base.applies_to(row) else None
        if ref is not None and score is not None and (stat.lo if stat.lo is not None else score) <= ref:
            out.append(f"not clearly above the {base.label} baseline ({100 * ref:.1f})")
    return out + row.flags


def relative_drop(task: TaskReport, row, name: str) -> str:
    """``(clean - robust) / clean`` of a variant, as a percentage; a dash where either is missing."""
    if not _is_variant(row) or not task.clean_metric:
        return DASH
    clean, robust = row.metrics.get(task.clean_metric), row.robust.get(name)
    if clean is None or robust is None or clean.mean <= 0:
        return DASH
    return f"{100 * (clean.mean - robust.mean) / clean.mean:.0f}%"


def table_columns(task: TaskReport) -> list[Column]:
    """The columns of a task's table; cost columns nobody measured are left out. Baseline rows
    (``baselines.BaselineRow``) fill the metric cells only."""
    columns = [
        Column("Variant", lambda r: r.label, numeric=False),
        Column("n", lambda r: str(r.n) if _is_variant(r) else DASH),
    ]
    for name in task.metric_names:
        columns.append(
            Column(
                _capitalized(display_name(name)),
                lambda r, n=name: fmt_stat(r.metrics.get(n)),
                primary=name == task.primary,
            )
        )
    for name in task.robust_names:
        columns.append(
            Column(
                _capitalized(name), lambda r, n=name: fmt_stat(r.robust.get(n)) if _is_variant(r) else DASH
            )
        )
    for name in task.robust_names:  # relative drop from the clean metric (the few-shot robustness studies')
        columns.append(Column(f"{_capitalized(name)} drop", lambda r, n=name: relative_drop(task, r, n)))
    for header, field, cell in COST_COLUMNS:
        if any(field in r.cost for r in task.rows):
            columns.append(Column(header, lambda r, c=cell: c(r) if _is_variant(r) else DASH))
    columns.append(
        Column("Notes", lambda r: "; ".join(flags(task, r)) if _is_variant(r) else "baseline", numeric=False)
    )
    return columns


def within_noise_on(task: TaskReport, key: str) -> list[str]:
    """The cost axes on which a variant is dominated only within noise."""
    titles = {axis.name: axis.title.split(" (")[0] for axis in COST_AXES}
    return [titles.get(name, name) for name, keys in task.noise.items() if key in keys]


def optimal_on(task: TaskReport, key: str) -> list[str]:
    """What a variant is Pareto-optimal on, in words: ["trainable parameters", "AdvGLUE acc", ...]."""
    titles = {axis.name: axis.title.split(" (")[0] for axis in COST_AXES}
    return [
        titles.get(name, name.removeprefix(ROBUST_PREFIX))
        for name, keys in task.frontiers.items()
        if key in keys
    ]
