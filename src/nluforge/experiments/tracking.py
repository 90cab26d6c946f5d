"""Mirror finished cells into MLflow (the ``tracking`` extra), one MLflow run per nluforge run.

The results directory stays the source of truth; MLflow is a view of it. Logging is idempotent: a
run already logged (found by its ``nluforge.run_id`` tag) is skipped, so a resumed grid logs each
cell once. Params are the flattened resolved config (``train.lr``, ``method_params.r``); metrics are
``<stage>.<split>.<metric>`` (``trained.validation.accuracy``) and ``cost.<field>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nluforge.core.errors import MissingExtraError, UserError
from nluforge.results import RunResult

RUN_ID_TAG = "nluforge.run_id"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def result_params(result: RunResult) -> dict[str, str]:
    """The resolved config as MLflow params (strings; lists and nulls as JSON)."""
    out = {}
    for key, value in flatten(result.config).items():
        text = value if isinstance(value, str) else json.dumps(value)
        out[key] = text[:MAX_PARAM_CHARS]
    return out


def result_metrics(result: RunResult) -> dict[str, float]:
    """Numeric metrics per stage/split plus the cost fields that are set."""
    flat = flatten(result.metrics)
    flat.update({f"cost.{k}": v for k, v in vars(result.cost).items()})
    if result.run_info.wall_time_s is not None:
        flat["wall_time_s"] = result.run_info.wall_time_s
    return {k: float(v) for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class MlflowTracker:
    """Log nluforge results to the MLflow tracking server or store at ``uri``."""

    def __init__(self, uri: str, experiment: str = "nluforge"):
        try:
            import mlflow
        except ImportError:
            raise MissingExtraError("mlflow", "tracking") from None
        self.mlflow = mlflow
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        except Exception as err:  # MlflowException, connection errors
            raise UserError(f"cannot use MLflow at '{uri}': {str(err).splitlines()[0]}") from None

    def logged(self, run_id: str) -> bool:
        runs = self.client.search_runs([self.experiment_id], f"tags.`{RUN_ID_TAG}` = '{run_id}'", max_results=1)
        return bool(runs)

    def log(self, result: RunResult) -> bool:
        """Log ``result`` as one MLflow run unless it is there already; True when logged now."""
        info = result.run_info
        if self.logged(info.id):
            return False
        from mlflow.entities import Metric, Param

        tags = {RUN_ID_TAG: info.id, "mlflow.runName": info.slug, "nluforge.status": info.status}
        if info.error:
            tags["nluforge.error"] = info.error[:MAX_PARAM_CHARS]
        run = self.client.create_run(self.experiment_id, run_name=info.slug, tags=tags)
        stamp = _millis(info.finished)
        params = [Param(k, v) for k, v in result_params(result).items()]
        metrics = [Metric(k, v, stamp, 0) for k, v in result_metrics(result).items()]
        for start in range(0, max(len(params), len(metrics)), 100):  # MLflow batches <= 100 params
            self.client.log_batch(run.info.run_id, metrics=metrics[start:start + 100],
                                  params=params[start:start + 100])
        status = "FINISHED" if info.status == "completed" else "FAILED"
        self.client.set_terminated(run.info.run_id, status=status, end_time=stamp)
        return True


def _millis(iso: str | None) -> int:
    """Milliseconds since the epoch of an ISO-8601 time (now, when missing or unreadable)."""
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(iso) if iso else datetime.now(timezone.utc)
    except ValueError:
        when = datetime.now(timezone.utc)
    return int(when.timestamp() * 1000)
