"""``nluforge bench [GRID.yaml]``: train, measure and compare every cell of a grid, then report.

With no GRID it runs the built-in default grid (the ``default`` model on SST-2, QNLI and STS-B with
four adaptation methods and an int8 child each). Before anything runs, each trained cell's throughput
is calibrated on this machine (cached in RESULTS_DIR/.calibration); ``--dry-run`` prints the measured
estimate and ``--time-budget`` sizes each task's training subset to fit. Finished cells are
skipped, so rerunning the same command resumes an interrupted bench. Exit status: 0 when every cell
completed, 1 when some cell failed (its error is in its result.json), 2 for a user error.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from nluforge.cli.app import app
from nluforge.cli.options import DataDir, Set
from nluforge.experiments.bench import format_seconds as _fmt


@app.command()
def bench(
    grid: Path = typer.Argument(None, help="Grid YAML (see configs/). Default: the built-in default grid."),
    results_dir: Path = typer.Option(Path("results"), "--results-dir", "-o", help="Where run dirs go."),
    data_dir: str = DataDir,
    backend: str = typer.Option("process", help="process (each cell in a fresh process, N at a time: isolated, "
                                "and peak memory is per cell), local (one at a time in this process; peak "
                                "memory then includes earlier cells), ray."),
    workers: int = typer.Option(None, help="Cells at once (process; a local Ray gets workers x num-cpus). "
                                "Default: CPU cores / num-cpus, at most 4 (1 with a GPU)."),
    address: str = typer.Option(None, help="Ray cluster address ('auto' or host:port); default: a local one."),
    num_cpus: float = typer.Option(None, help="CPUs per cell (Ray resource, torch threads). Default: grid, 1."),
    num_gpus: float = typer.Option(None, help="GPUs per cell (Ray). Default: grid file, 0."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells, their state and the time estimate "
                                 "measured by the calibration (which it runs, or reads from the cache)."),
    time_budget: str = typer.Option(None, "--time-budget", help="Size each task's training subset so the "
                                    "estimated cells fit this wall time (600s, 10m, 1h); says what it chose and "
                                    "writes it to RESULTS_DIR/bench-budget.json and grid.resolved.yaml."),
    recalibrate: bool = typer.Option(False, "--recalibrate", help="Measure the throughput again instead of "
                                     "reusing RESULTS_DIR/.calibration/."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Also rerun cells that failed."),
    force: bool = typer.Option(False, "--force", help="Rerun every cell, finished or not."),
    mlflow: str = typer.Option(None, "--mlflow", help="Also log each cell to MLflow at this tracking URI."),
    sets: list[str] = Set,
    no_report: bool = typer.Option(False, "--no-report", help="Do not build the report at the end."),
) -> None:
    """Run every combination in a grid (resuming), then write a report of which variant to use."""
    from rich.console import Console

    from nluforge.experiments.bench import bench_cells, check_data, make_plan, parse_duration
    from nluforge.experiments.runners import RunnerOptions, auto_workers

    budget_s = parse_duration(time_budget) if time_budget is not None else None
    spec, cells = bench_cells(grid, sets=sets, data_dir=data_dir)
    cpus = num_cpus or spec.resources.num_cpus
    gpus = spec.resources.num_gpus if num_gpus is None else num_gpus
    options = RunnerOptions(backend, workers or (1 if backend == "local" else auto_workers(cpus, gpus)),
                            cpus, gpus, address)
    console = Console(stderr=True)
    check_data(cells)
    calibrations = _calibrate(console, cells, results_dir, options, recalibrate)
    if budget_s is not None:
        cells, calibrations = _budget(console, spec, cells, calibrations, budget_s, options, results_dir,
                                      write=not dry_run)
    plan = make_plan(cells, results_dir, calibrations, retry_failed=retry_failed, force=force)
    if dry_run:
        _print_plan(Console(width=max(Console().width, 160)), spec, plan, options)
        return
    if backend == "ray":
        from nluforge.experiments.ray_runner import import_ray

        import_ray()  # a missing extra fails before any work
    tracker = _tracker(mlflow)
    console.print(f"{_tally(plan)}; {len(plan.todo)} to run (estimate ~{_fmt(plan.total_s / options.workers)})"
                  f" -> {results_dir}")
    _run(plan, results_dir, options, console, tracker, retry_failed, force)
    if tracker:
        _sync(tracker, cells, results_dir)
    failed = _summary(console, cells, results_dir)
    if not no_report:
        _report(results_dir)
    if failed:
        raise typer.Exit(1)


def _calibrate(console, cells, results_dir: Path, options, recalibrate: bool):
    """Measure (or read from the cache) each trained cell's throughput, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from nluforge.experiments.bench import run_calibration
    from nluforge.experiments.cells import threads_per_cell

    threads = threads_per_cell(options)
    parents = {c.config.parent().run_id() for c in cells}
    t0 = time.monotonic()
    with Progress(TextColumn("calibrating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[now]}"), console=console, transient=True) as progress:
        task = progress.add_task("calibrate", total=len(parents), now="")

        def on_cell(cfg, cal) -> None:
            progress.advance(task)
            progress.update(task, now=f"{cfg.task}/{cfg.method}")
            if cal.error:
                console.print(f"[yellow]could not calibrate {cfg.task}/{cfg.method}[/] (it will likely fail "
                              f"when it runs; estimated like another cell of its task): {cal.error}")
            elif not cal.cached:
                evals = " + ".join(f"{k} {v}" for k, v in cal.eval_sizes.items())
                attacks = "".join(f", {k} {a.s_per_query * 1000:.1f} ms/query x {a.queries_per_example:.0f} "
                                  f"queries/example ({a.source})" for k, a in cal.attacks.items())
                console.print(f"calibrated {cfg.task}/{cfg.method} in {_fmt(cal.seconds)}: train "
                              f"{cal.train_eps:.1f} ex/s, eval {cal.eval_eps:.1f} ex/s ({evals}), "
                              f"setup {cal.setup_s:.1f}s{attacks}")

        calibrations = run_calibration(cells, results_dir, threads=threads, recalibrate=recalibrate,
                                       on_cell=on_cell)
    cached = sum(c.cached for c in calibrations.values())
    console.print(f"calibration: {len(calibrations)} trained cells at {threads} torch thread(s) each, "
                  f"{len(calibrations) - cached} measured in {_fmt(time.monotonic() - t0)}, {cached} from "
                  f"{results_dir / '.calibration'} (--recalibrate measures again)")
    return calibrations


def _budget(console, spec, cells, calibrations, budget_s: float, options, results_dir: Path, write: bool):
    """Size the tasks to the budget, say what was chosen and why, and record it beside the results."""
    from nluforge.experiments.bench import _rekeyed, size_to_budget, write_budget

    budgeted = size_to_budget(cells, calibrations, budget_s, workers=options.workers)
    for line in budgeted.describe():
        console.print(line)
    if write:
        info, resolved = write_budget(results_dir, spec, budgeted)
        console.print(f"chosen sizes written to {info} and {resolved}")
    return budgeted.cells, _rekeyed(budgeted.cells, cells, calibrations)


def _run(plan, results_dir: Path, options, console, tracker, retry_failed: bool, force: bool) -> None:
    from nluforge.experiments.runners import run_grid

    display = BenchDisplay(plan, options.workers, console)
    cells = [row.cell.config for row in plan.todo]

    def on_event(event) -> None:
        display(event)
        if event.kind == "finish" and tracker:
            tracker.log(event.result)

    with display:
        run_grid(cells, results_dir, options, on_event=on_event, retry_failed=retry_failed, force=force)


class BenchDisplay:
    """A rich progress line: cells done/left, current cell and stage, elapsed time and ETA."""

    def __init__(self, plan, workers: int, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.estimate = {row.cell.run_id: row.estimate_s for row in plan.todo}
        self.workers = max(1, workers)
        self.running: dict[str, str] = {}  # run_id -> current stage
        self.done_estimate = 0.0
        self.start = time.monotonic()
        self.console = console
        self.progress = Progress(TextColumn("cells"), BarColumn(), MofNCompleteColumn(), TextColumn("elapsed"),
                                 TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}  {task.fields[now]}"),
                                 console=console, transient=False)
        self.task = self.progress.add_task("bench", total=len(self.estimate), eta=self._eta(), now="")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def __call__(self, event) -> None:
        if event.kind == "finish":
            self.running.pop(event.run_id, None)
            self.done_estimate += self.estimate.get(event.run_id, 0.0)
            self.progress.advance(self.task)
            self.console.print(_finished_line(event.result))
        else:
            self.running[event.run_id] = event.stage or "starting"
        self.progress.update(self.task, eta=self._eta(), now=self._now())

    def _now(self) -> str:
        items = list(self.running.items())
        if not items:
            return ""
        run_id, stage = items[0]
        more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
        return f"{run_id} [{stage}]{more}"

    def _eta(self) -> str:
        elapsed = time.monotonic() - self.start
        left = sum(self.estimate.values()) - self.done_estimate
        if self.done_estimate > 0:  # scale the estimate by how fast finished cells really went
            return _fmt(left * elapsed / self.done_estimate)
        return _fmt(max(0.0, left / self.workers - elapsed))


def _finished_line(result) -> str:
    info = result.run_info
    took = _fmt(info.wall_time_s or 0)
    if info.status != "completed":
        return f"[red]failed[/]    {info.id}  {took}  {info.error}"
    trained = result.metrics.get("trained", {})
    scores = "  ".join(f"{split} {name}={value:.3f}" for split, values in trained.items()
                       for name, value in list(values.items())[:1])
    return f"[green]completed[/] {info.id}  {took}  {scores}"


def _print_plan(console, spec, plan, options) -> None:
    from rich.table import Table

    table = Table(title=f"{spec.source}" + (f": {spec.description}" if spec.description else ""))
    for name in ("#", "run id", "task", "method", "params", "n train", "state", "train", "eval", "attack",
                 "other", "estimate"):
        table.add_column(name, no_wrap=name == "run id", justify="right" if name in (
            "train", "eval", "attack", "other", "estimate") else "left")
    for i, row in enumerate(plan.rows, 1):
        cfg = row.cell.config
        params = ",".join(f"{k}={v}" for k, v in cfg.method_params.items()) or "-"
        step = cfg.step_label()
        method = f"{cfg.method} → {step}" if step else cfg.method
        state = {"completed": "done"}.get(row.state, row.state)
        p = row.parts
        train = p.get("train", 0.0)
        evals = p.get("eval", 0.0) + p.get("select", 0.0)
        attack = p.get("attack", 0.0)
        other = sum(p.values()) - train - evals - attack
        table.add_row(str(i), row.cell.run_id, cfg.task, method, params,
                      "-" if step else str(cfg.data.max_train_samples or "all"), state,
                      _fmt(train) if train else "-", _fmt(evals), _fmt(attack) if attack else "-", _fmt(other),
                      _fmt(row.estimate_s) if row.estimate_s else "-")
    console.print(table)
    console.print("estimate parts: train = examples x epochs / measured train ex/s; eval = model selection + "
                  "dev + AdvGLUE splits / measured eval ex/s; attack = examples x temperatures x queries/example x "
                  "measured s/query; other = setup, latency, save, compression, frozen-embedding baselines "
                  "(once per task)")
    console.print(f"{_tally(plan)}; {len(plan.todo)} would run")
    console.print(f"estimated time: ~{_fmt(plan.total_s / options.workers)} on {options.workers} worker(s) "
                  f"({options.backend} backend; {_fmt(plan.total_s)} of cells); estimate: {plan.source}")


def _tally(plan) -> str:
    counts = plan.counts()
    return (f"{len(plan.rows)} cells: {counts.get('completed', 0)} done, {counts.get('failed', 0)} failed, "
            f"{counts.get('pending', 0)} pending")


def _tracker(uri: str | None):
    if not uri:
        return None
    from nluforge.experiments.tracking import MlflowTracker

    return MlflowTracker(uri)


def _sync(tracker, cells, results_dir: Path) -> None:
    """Log finished cells that MLflow does not have yet (e.g. finished before --mlflow was given)."""
    from nluforge.results import read_result

    for cell in cells:
        path = results_dir / cell.run_id / "result.json"
        if path.is_file():
            tracker.log(read_result(path))


def _summary(console, cells, results_dir: Path) -> int:
    """Print the grid's final tally; return the number of failed cells."""
    from nluforge.experiments.runners import cell_state

    states = [cell_state(results_dir, c.config) for c in cells]
    failed = states.count("failed")
    console.print(f"[bold]done[/]: {states.count('completed')} completed, {failed} failed, "
                  f"{states.count('pending')} pending, in {results_dir}")
    if failed:
        console.print("rerun the failed cells with: nluforge bench ... --retry-failed")
    return failed


def _report(results_dir: Path) -> None:
    """What ``nluforge report RESULTS_DIR`` does: tables here, report.html and report.md on disk."""
    from nluforge.cli.report import report

    report(results_dir, None)
