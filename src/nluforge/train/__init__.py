"""L3: one explicit training loop (:func:`fit`) with a few seams, samplers, and resumable checkpoints."""

from nluforge.train.loop import FitResult, LoopState, StepContext, default_update_step, fit
from nluforge.train.samplers import LengthGroupedSampler, PoissonSampler

__all__ = ["FitResult", "LengthGroupedSampler", "LoopState", "PoissonSampler", "StepContext",
           "default_update_step", "fit"]
