"""``nluforge audit RUN``: membership inference against a run's recorded member / non-member split."""

from __future__ import annotations

from pathlib import Path

import typer

from nluforge.cli.app import app
from nluforge.cli.options import Param


@app.command()
def audit(
    run: Path = typer.Argument(..., help="A finished run trained with --audit-holdout N."),
    attack: str = typer.Option("loss", "--attack", help="loss (Yeom et al. 2018) or lira (Carlini et al. 2022)."),
    params: list[str] = Param,
    workers: int = typer.Option(1, "--workers", help="LiRA: shadow runs at once (process backend when > 1)."),
) -> None:
    """Attack a run's membership privacy; write RUN/evals/audit-ATTACK.json (AUC, TPR at low FPR, eps bound)."""
    import nluforge.privacy  # noqa: F401 - registers the audits
    from nluforge.core.config import overrides_to_dict
    from nluforge.core.steps import AUDITS, resolve_step
    from nluforge.experiments.audit import audit_run, read_split
    from nluforge.experiments.cells import RunnerOptions

    step = resolve_step(AUDITS, "audit", {"method": attack, **overrides_to_dict(params or [])}, "--attack")
    read_split(run)  # a run without a member split fails here, before anything loads
    runner = RunnerOptions(backend="process", workers=workers) if workers > 1 else None
    record = audit_run(run, step.method, step.config, runner=runner)
    m = record["metrics"]
    spent = record.get("epsilon_spent")
    typer.echo(f"{attack}: AUC {m['auc']:.4f}  TPR@1%FPR {m['tpr_at_0.01_fpr']:.4f}  TPR@0.1%FPR "
               f"{m['tpr_at_0.001_fpr']:.4f}  eps lower bound {m['eps_lower_bound']:.3f}"
               + (f"  (eps spent {spent:g})" if spent is not None else "") + f"  [{int(m['members'])} members, "
               f"{int(m['nonmembers'])} non-members]")
    typer.echo(str(run / "evals" / f"audit-{attack}.json"))
