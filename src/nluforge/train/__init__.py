"""L3: one explicit training loop (:func:`fit`) with a few seams, and resumable checkpoints."""

from nluforge.train.loop import FitResult, fit

__all__ = ["FitResult", "fit"]
