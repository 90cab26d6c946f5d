"""L2: predictions, task metrics and cost meters (latency, peak memory, throughput)."""

from nluforge.eval.meters import PeakMemory, measure_latency
from nluforge.eval.predict import predict, to_predictions

__all__ = ["PeakMemory", "measure_latency", "predict", "to_predictions"]
