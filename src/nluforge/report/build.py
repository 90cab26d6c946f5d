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
from nluforge.report.privacy import markdown_lines, privacy_rows, roc_plot
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
    rows = privacy_rows(report.results_dir)
    roc = roc_plot(rows)
    if roc is not None:
        plot_paths += (atomic_write_text(out / PLOT_DIR / f"{roc.name}.svg", roc.svg + "\n"),)
    section = markdown_lines(rows, roc, PLOT_DIR)
    page = render_html(report, plots)
    if section:  # the privacy table and ROC plot, before the reading guide
        extra = _html_section(section, roc)
        page = page.replace("<footer>", extra + "<footer>", 1)
    html = atomic_write_text(out / "report.html", page)
    text = render_markdown(report, plots, PLOT_DIR)
    if section:
        head, sep, tail = text.rpartition("---\n")
        text = head + "\n".join(section) + "\n" + sep + tail if sep else text + "\n".join(section)
    markdown = atomic_write_text(out / "report.md", text)
    return ReportPaths(html=html, markdown=markdown, plots=plot_paths)


def _html_section(lines: list[str], roc) -> str:
    from html import escape

    table = [ln for ln in lines if ln.startswith("|") and not ln.startswith("|---")]
    cells = ["<tr>" + "".join(f"<td>{escape(c.strip())}</td>" for c in ln.strip("|").split("|")) + "</tr>"
             for ln in table]
    return (f"<section><h2>{escape(lines[0].lstrip('# '))}</h2><p>{escape(lines[2])}</p><table>{''.join(cells)}"
            f"</table>{roc.svg if roc is not None else ''}</section>")


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
