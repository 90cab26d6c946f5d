"""Build the report: read a results directory, then write ``report.html``, ``report.md`` and the plots.

Everything is written atomically (core.io), so a reader never sees half a report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from nluforge.core.errors import UserError
from nluforge.core.io import atomic_write_text
from nluforge.report.collect import Warn, collect_runs
from nluforge.report.html import render_html
from nluforge.report.markdown import render_markdown
from nluforge.report.plots import Plot, task_plots
from nluforge.report.stats import ALPHA
from nluforge.report.summary import Report, summarize

log = logging.getLogger(__name__)
DEFAULT_OUT = "report"  # under the results directory
PLOT_DIR = "plots"  # under the output directory


@dataclass(frozen=True)
class ReportPaths:
    """Where the report was written."""

    html: Path  # self-contained: open it offline
    markdown: Path  # links the SVGs in ``plots``
    plots: tuple[Path, ...]


def load_report(results_dir: str | Path, *, on_warning: Warn | None = None, alpha: float = ALPHA) -> Report:
    """Read every ``result.json`` under ``results_dir`` into a :class:`Report`.

    ``alpha`` is the significance level of every comparison (Holm-corrected). Unreadable files are
    skipped and reported through ``on_warning`` (default: a logged warning); a missing directory, one
    with nothing readable, or an alpha outside (0, 0.5] raises :class:`UserError`.
    """
    if not 0 < alpha <= 0.5:
        raise UserError(f"significance level must be in (0, 0.5], got {alpha:g} (e.g. --alpha 0.05)")
    runs, skipped = collect_runs(results_dir, on_warning or log.warning)
    return summarize(runs, Path(results_dir), skipped, alpha=alpha)


def write_report(report: Report, out_dir: str | Path) -> ReportPaths:
    """Render ``report`` into ``out_dir``: ``report.html``, ``report.md`` and ``plots/*.svg``."""
    out = Path(out_dir)
    plots: dict[str, list[Plot]] = {task.task: task_plots(task) for task in report.tasks}
    plot_paths = tuple(
        atomic_write_text(out / PLOT_DIR / f"{p.name}.svg", p.svg + "\n")
        for task_plots_ in plots.values()
        for p in task_plots_
    )
    html = atomic_write_text(out / "report.html", render_html(report, plots))
    markdown = atomic_write_text(out / "report.md", render_markdown(report, plots, PLOT_DIR))
    return ReportPaths(html=html, markdown=markdown, plots=plot_paths)


def build_report(
    results_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    on_warning: Warn | None = None,
    alpha: float = ALPHA,
) -> ReportPaths:
    """Read ``results_dir`` and write the report to ``out_dir`` (default: ``results_dir/report``)."""
    report = load_report(results_dir, on_warning=on_warning, alpha=alpha)
    return write_report(report, out_dir if out_dir is not None else Path(results_dir) / DEFAULT_OUT)
