"""The report as one self-contained HTML page: inline CSS and inline SVG plots, no scripts, no links
to anything outside the file, so it opens offline and can be mailed or archived as is."""

from __future__ import annotations

from html import escape

from nluforge.report.evals import EvalRow
from nluforge.report.format import (
    DASH,
    Column,
    fmt_stat,
    optimal_on,
    plural,
    table_columns,
    table_rows,
    within_noise_on,
)
from nluforge.report.metrics import display_name
from nluforge.report.overview import Overview
from nluforge.report.plots import Plot
from nluforge.report.summary import Report
from nluforge.report.tables import Recommendation, TaskReport, VariantRow

CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --soft: #f6f8fa; --accent: #0969da;
        --star: #bf8700; --bad: #cf222e; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 2rem 1.5rem 4rem; }
h1 { font-size: 1.8rem; margin: 0 0 .25rem; }
h2 { font-size: 1.35rem; margin: 2.5rem 0 .25rem; padding-bottom: .3rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1rem; margin: 1.4rem 0 .5rem; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--soft);
       padding: .1rem .3rem; border-radius: 4px; }
.sub, .note { color: var(--muted); margin: .2rem 0; }
nav { margin: 1rem 0; display: flex; flex-wrap: wrap; gap: .4rem; }
nav a { color: var(--accent); text-decoration: none; border: 1px solid var(--line); border-radius: 999px;
        padding: .1rem .7rem; }
.stats { display: flex; flex-wrap: wrap; gap: .75rem; margin: 1rem 0; }
.stat { border: 1px solid var(--line); border-radius: 8px; padding: .5rem .9rem; min-width: 7rem; }
.stat b { display: block; font-size: 1.3rem; }
.stat span { color: var(--muted); font-size: .85rem; }
.recs { background: var(--soft); border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem .8rem 2rem; }
.recs li { margin: .3rem 0; }
.recs ul { margin: .2rem 0; padding-left: 1.2rem; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 13px; }
th, td { padding: .35rem .65rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.primary { font-weight: 600; }
td.empty { color: var(--muted); }
tr:hover td { background: #fbfcfd; }
.star { color: var(--star); }
td.error { color: var(--bad); white-space: pre-wrap; max-width: 60ch; }
tr.baseline td { color: var(--muted); font-style: italic; background: var(--soft); }
tr.degenerate td { color: var(--bad); }
td.notes { color: var(--muted); font-size: 12px; min-width: 32ch; max-width: 48ch; }
td:first-child { white-space: nowrap; }
.noise { color: var(--muted); }
.findings { border-left: 4px solid var(--accent); padding: .3rem 1rem; margin: 1rem 0; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 1rem; }
figure.plot { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: .5rem; }
figure.plot svg { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: .85rem; padding: .25rem .25rem 0; }
footer { margin-top: 3rem; color: var(--muted); font-size: .85rem; border-top: 1px solid var(--line); padding-top: 1rem; }
"""

READING_GUIDE = (
    "Scores are dev-set metrics in %, mean over seeds ± half the width of the 95% confidence interval "
    "(n = number of runs): a bootstrap over the evaluation examples (and over seeds, when there are "
    "several) where predictions.jsonl was saved, else a t interval over seeds, else none. The "
    "majority-class baseline predicts the most frequent dev label (a regression baseline, the mean). "
    "A variant that predicts one class for every example is degenerate and never recommended. "
    "Variants are compared with paired tests on the same examples (McNemar for accuracy, else a "
    "paired bootstrap), Holm-corrected at the level shown; a recommendation names a variant only when "
    "the difference behind it is significant. A variant is optimal (★) on a cost axis when it is the "
    "cheapest candidate or scores significantly above every cheaper one on the front; ◇ marks variants "
    "dominated only within noise. A variant is the run config minus its seed; a derived run reads "
    "parent → step. Latency is per example; memory is the training peak (CUDA max allocated on GPU, "
    "process RSS on CPU)."
)


def _cell(column: Column, text: str) -> str:
    notes = column.header == "Notes"
    classes = [
        c
        for c, on in (
            ("num", column.numeric),
            ("primary", column.primary),
            ("empty", text == DASH),
            ("notes", notes),
        )
        if on
    ]
    return f'<td class="{" ".join(classes)}">{escape(text)}</td>'


def _variant_cell(task: TaskReport, row) -> str:
    if not isinstance(row, VariantRow):
        return f"<td>{escape(row.label)}</td>"
    fronts, noise = optimal_on(task, row.key), within_noise_on(task, row.key)
    if fronts:
        tip = escape("optimal on: " + ", ".join(fronts))
        return f'<td title="{tip}"><span class="star">★</span> {escape(row.label)}</td>'
    if noise:
        tip = escape("dominated only within noise on: " + ", ".join(noise))
        return f'<td title="{tip}"><span class="noise">◇</span> {escape(row.label)}</td>'
    return f"<td>{escape(row.label)}</td>"


def _row_class(row) -> str:
    if not isinstance(row, VariantRow):
        return ' class="baseline"'
    return ' class="degenerate"' if row.degenerate else ""


def _table(task: TaskReport) -> str:
    columns = table_columns(task)
    head = "".join(f'<th class="{"num" if c.numeric else ""}">{escape(c.header)}</th>' for c in columns)
    body = []
    for row in table_rows(task):
        cells = [_variant_cell(task, row)] + [_cell(c, c.cell(row)) for c in columns[1:]]
        body.append(f"<tr{_row_class(row)}>{''.join(cells)}</tr>")
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _recommendation(rec: Recommendation) -> str:
    if len(rec.items) == 1:
        return f"<li><strong>{escape(rec.heading)}</strong> — {escape(rec.items[0])}.</li>"
    items = "".join(f"<li>{escape(item)}</li>" for item in rec.items)
    return f"<li><strong>{escape(rec.heading)}</strong> — from best to cheapest:<ul>{items}</ul></li>"


def _plots(plots: list[Plot]) -> str:
    if not plots:
        return '<p class="note">Not enough variants with measured costs to plot.</p>'
    figures = "".join(
        f'<figure class="plot">{p.svg}<figcaption>{escape(p.title)}</figcaption></figure>' for p in plots
    )
    return f'<div class="plots">{figures}</div>'


def _evals(task: TaskReport) -> str:
    if not task.evals:
        return ""
    parts = ["<h3>Later evaluations</h3>"]
    for row in task.evals:
        metrics = ", ".join(f"{display_name(k)} {100 * v:.1f}" for k, v in row.metrics.items())
        parts.append(
            f'<p class="eval"><b>{escape(row.name)}</b> · {escape(row.label)} · {escape(row.source)} · '
            f"n = {row.n:,} · {escape(metrics)}{_runs(row)}</p>"
        )
        if row.groups:
            parts.append(_group_table(row))
    return "".join(parts)


def _runs(row: EvalRow) -> str:
    return f" (mean of {row.runs} runs)" if row.runs > 1 else ""


def _group_table(row: EvalRow) -> str:
    names = list(dict.fromkeys(k for g in row.groups.values() for k in g if k != "n"))
    head = f"<th>{escape(row.group_field or 'group')}</th><th class='num'>n</th>" + "".join(
        f"<th class='num'>{escape(display_name(n))}</th>" for n in names
    )
    body = "".join(
        f"<tr><td>{escape(value)}</td><td class='num'>{int(g.get('n', 0)):,}</td>"
        + "".join(
            f"<td class='num'>{100 * g[n]:.1f}</td>" if n in g else f"<td class='num empty'>{DASH}</td>"
            for n in names
        )
        + "</tr>"
        for value, g in row.groups.items()
    )
    return f'<div class="table-wrap"><table class="groups"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _task_section(task: TaskReport, plots: list[Plot]) -> str:
    primary = display_name(task.primary) if task.primary else "none measured"
    n_runs = sum(r.n for r in task.rows)
    recs = "".join(_recommendation(r) for r in task.recommendations)
    return (
        f'<section id="task-{escape(task.task)}"><h2>{escape(task.task)}</h2>'
        f'<p class="sub">{plural(len(task.rows), "variant")} from {plural(n_runs, "run")} · primary metric: <b>{escape(primary)}</b></p>'
        f'<h3>Recommended for your budget</h3><ul class="recs">{recs}</ul>'
        f"<h3>All variants</h3>{_table(task)}"
        f'<p class="note"><span class="star">★</span> optimal on at least one cost axis, '
        f'<span class="noise">◇</span> dominated only within noise (hover the name to see which).</p>'
        f"<h3>Pareto plots</h3>{_plots(plots)}{_evals(task)}</section>"
    )


def _overview(report: Report) -> str:
    view: Overview | None = report.overview
    findings = "".join(f"<li>{escape(s)}</li>" for s in report.findings)
    summary = (
        f'<h3>What this run shows</h3><ul class="findings">{findings}</ul>'
        if findings
        else '<h3>What this run shows</h3><p class="note">No significant finding on this data.</p>'
    )
    if view is None:
        return f'<section id="overview"><h2>Overview</h2>{summary}</section>' if findings else ""
    head = "<th>Variant</th>" + "".join(
        f"<th class='num'>{escape(t)}<br><small>{escape(m)}</small></th>" for t, m in view.tasks
    )
    head += "<th class='num'>Average</th>" if view.has_average else ""
    body = []
    for row in view.rows:
        cells = "".join(f"<td class='num'>{escape(fmt_stat(row.cells[t]))}</td>" for t, _ in view.tasks)
        cells += f"<td class='num primary'>{escape(fmt_stat(row.average))}</td>" if view.has_average else ""
        note = f" <small class='noise'>({escape('; '.join(row.notes))})</small>" if row.notes else ""
        cls = ' class="baseline"' if row.baseline else ""
        body.append(f"<tr{cls}><td>{escape(row.label)}{note}</td>{cells}</tr>")
    return (
        f'<section id="overview"><h2>Overview</h2><p class="sub">Primary metric per task, % ± half the 95% '
        f"interval; the average is the unweighted mean of the primary metrics.</p>"
        f'<div class="table-wrap"><table class="overview"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{summary}</section>"
    )


def _failed_section(report: Report) -> str:
    if not report.failed:
        return ""
    rows = "".join(
        f"<tr><td>{escape(f.task)}</td><td>{escape(f.label)}</td><td class='num'>{f.seed if f.seed is not None else DASH}</td>"
        f"<td class='error'>{escape(f.error)}</td><td><code>{escape(f.run_id)}</code></td></tr>"
        for f in report.failed
    )
    head = "<tr><th>Task</th><th>Variant</th><th class='num'>Seed</th><th>Error</th><th>Run</th></tr>"
    return (
        f'<section id="failed"><h2>Failed runs</h2><p class="sub">Not included in the tables above.</p>'
        f'<div class="table-wrap"><table><thead>{head}</thead><tbody>{rows}</tbody></table></div></section>'
    )


def _skipped_section(report: Report) -> str:
    if not report.skipped:
        return ""
    items = "".join(f"<li>{escape(reason)}</li>" for _, reason in report.skipped)
    return f'<section id="skipped"><h2>Unreadable result files</h2><p class="sub">Skipped:</p><ul>{items}</ul></section>'


def _header(report: Report) -> str:
    stats = [
        (len(report.tasks), "tasks"),
        (report.n_variants, "variants"),
        (report.n_runs, "result files"),
        (len(report.failed), "failed runs"),
        (len(report.skipped), "unreadable"),
    ]
    cards = "".join(f'<div class="stat"><b>{n}</b><span>{escape(what)}</span></div>' for n, what in stats)
    links = ['<a href="#overview">overview</a>'] if report.overview or report.findings else []
    links += [f'<a href="#task-{escape(t.task)}">{escape(t.task)}</a>' for t in report.tasks]
    links += ['<a href="#failed">failed runs</a>'] if report.failed else []
    return (
        f"<header><h1>Which variant for your budget?</h1>"
        f'<p class="sub">nluforge report of <code>{escape(str(report.results_dir))}</code> · generated {escape(report.generated)}'
        f" · 95% intervals · significance level α = {report.alpha:g}, Holm-corrected</p>"
        f'<div class="stats">{cards}</div><nav>{"".join(links)}</nav></header>'
    )


def render_html(report: Report, plots: dict[str, list[Plot]]) -> str:
    """The whole page; ``plots`` maps a task name to its plots (see plots.task_plots)."""
    sections = "".join(_task_section(t, plots.get(t.task, [])) for t in report.tasks)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>nluforge report · {escape(report.results_dir.name or str(report.results_dir))}</title>"
        f"<style>{CSS}</style></head>\n<body><main>{_header(report)}{_overview(report)}{sections}"
        f"{_failed_section(report)}{_skipped_section(report)}"
        f"<footer><b>How to read this report.</b> {escape(READING_GUIDE)}</footer></main></body></html>\n"
    )
