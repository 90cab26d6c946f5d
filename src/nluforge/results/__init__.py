"""L1: the versioned RunResult schema and the one-JSON-per-run results store (no torch)."""

from nluforge.results.schema import SCHEMA_VERSION, Cost, RunInfo, RunResult
from nluforge.results.store import iter_results, read_result, write_result

__all__ = ["SCHEMA_VERSION", "Cost", "RunInfo", "RunResult", "iter_results", "read_result", "write_result"]
