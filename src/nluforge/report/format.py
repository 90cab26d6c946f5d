"""How numbers read in every output (HTML, Markdown, terminal): one set of formatters and columns.

Metrics are shown in % with one decimal, ``mean ± std`` over seeds (GLUE reports scores x100, MCC and
correlations included). Costs get three significant digits, parameter counts a k/M/B suffix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nluforge.report.metrics import display_name
from nluforge.report.pareto import COST_AXES, ROBUST_PREFIX
from nluforge.report.tables import Stat, TaskReport, VariantRow

DASH = "—"


def fmt_stat(stat: Stat | None, with_std: bool = True) -> str:
    """``Stat(0.881, 0.003, 3)`` -> ``88.1 ± 0.3``; one run shows the mean alone."""
    if stat is None:
        return DASH
    if stat.std is None or not with_std:
        return f"{100 * stat.mean:.1f}"
    return f"{100 * stat.mean:.1f} ± {100 * stat.std:.1f}"


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
    ("Size (MB)", "model_size_mb", lambda r: fmt_quantity(r.cost.get("model_size_mb"))),
)


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def table_columns(task: TaskReport) -> list[Column]:
    """The columns of a task's table; cost columns nobody measured are left out."""
    columns = [Column("Variant", lambda r: r.label, numeric=False), Column("n", lambda r: str(r.n))]
    for name in task.metric_names:
        columns.append(
            Column(
                _capitalized(display_name(name)),
                lambda r, n=name: fmt_stat(r.metrics.get(n)),
                primary=name == task.primary,
            )
        )
    for name in task.robust_names:
        columns.append(Column(_capitalized(name), lambda r, n=name: fmt_stat(r.robust.get(n))))
    for header, field, cell in COST_COLUMNS:
        if any(field in r.cost for r in task.rows):
            columns.append(Column(header, cell))
    return columns


def optimal_on(task: TaskReport, key: str) -> list[str]:
    """What a variant is Pareto-optimal on, in words: ["trainable parameters", "AdvGLUE acc", ...]."""
    titles = {axis.name: axis.title.split(" (")[0] for axis in COST_AXES}
    return [
        titles.get(name, name.removeprefix(ROBUST_PREFIX))
        for name, keys in task.frontiers.items()
        if key in keys
    ]
