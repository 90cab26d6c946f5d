"""L5: the report. Which variant should I use for my budget?

Built from result files alone (``nluforge.results``), it imports no torch: per-task tables of every
variant (mean ± std over seeds), Pareto plots of score against each cost, and recommendations that name
only Pareto-optimal variants. Outputs: a self-contained HTML page, Markdown with SVG plots, and rich
tables in the terminal::

    from nluforge.report import build_report
    paths = build_report("runs/")          # runs/report/report.html, report.md, plots/*.svg

Layout: ``collect`` reads result files into run records; ``variants`` says what a variant is and how it
is named; ``metrics`` picks the numbers; ``tables`` groups seeds; ``pareto`` and ``recommend`` find the
fronts and phrase them; ``summary`` puts it together; ``plots``, ``html``, ``markdown`` and ``terminal``
render; ``build`` writes the files.
"""

from nluforge.report.build import ReportPaths, build_report, load_report, write_report
from nluforge.report.pareto import COST_AXES, CostAxis, pareto_front
from nluforge.report.summary import FailedRun, Report
from nluforge.report.tables import Recommendation, Stat, TaskReport, VariantRow
from nluforge.report.terminal import print_report

__all__ = [
    "COST_AXES",
    "CostAxis",
    "FailedRun",
    "Recommendation",
    "Report",
    "ReportPaths",
    "Stat",
    "TaskReport",
    "VariantRow",
    "build_report",
    "load_report",
    "pareto_front",
    "print_report",
    "write_report",
]
