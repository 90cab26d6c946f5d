"""Batch-order seam of :func:`~nluforge.train.loop.fit`: which examples each step of an epoch sees.

A sampler is any callable ``sampler(seed, epoch) -> list[list[int]]`` that returns the epoch's batches
of example indices as a pure function of ``(seed, epoch)``: a resumed run asks for the same epoch
again and skips the batches it already took, so exact resume needs nothing else from the sampler.

- :class:`LengthGroupedSampler` (the default): the transformers Trainer's length-grouped batches.
- :class:`PoissonSampler`: each example joins each step's batch independently with probability q,
  the subsampling that DP-SGD's privacy analysis assumes (Abadi et al. 2016, "Deep Learning with
  Differential Privacy", CCS; Opacus's ``UniformWithReplacementSampler``).

:func:`shard` gives one process its share of an epoch's batches in a multi-process run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from nluforge.core.errors import UserError
from nluforge.models.inputs import TRAINER_GROUP_BATCHES, length_grouped_batches


class Sampler(Protocol):
    def __call__(self, seed: int, epoch: int) -> list[list[int]]:
        """The epoch's batches of example indices; the same ``(seed, epoch)`` gives the same batches."""
        ...


@dataclass(frozen=True)
class LengthGroupedSampler:
    """Shuffled examples sorted by length within groups of ``mega`` batches, then the batches shuffled
    (see :func:`~nluforge.models.inputs.length_grouped_batches`); ``group=False``: plain shuffled batches."""

    lengths: Sequence[int]
    batch_size: int
    group: bool = True
    mega: int = TRAINER_GROUP_BATCHES

    def __call__(self, seed: int, epoch: int) -> list[list[int]]:
        return length_grouped_batches(self.lengths, self.batch_size, seed=seed, epoch=epoch,
                                      group=self.group, mega=self.mega)


@dataclass(frozen=True)
class PoissonSampler:
    """Each step, every example joins the batch independently with probability ``q = batch_size / n``.

    Batches vary in size (mean ``batch_size``) and can be empty; the loop skips an empty batch but
    still counts its step, because the privacy accounting counts every draw. An epoch has
    ``ceil(n / batch_size)`` steps, the count :func:`~nluforge.train.loop.total_steps` assumes.

    Departures from Opacus's ``UniformWithReplacementSampler``: Opacus draws ``int(1 / q)`` steps per
    epoch; we draw ``ceil(n / batch_size)`` so the learning-rate schedule and ``epochs`` mean the same
    as with the default sampler. Each step draws its size K ~ Binomial(n, q) and then K distinct
    examples uniformly (the same distribution as n independent coin flips, in O(K) instead of O(n)).
    """

    n: int
    batch_size: int
    allows_empty = True  # the loop checks that nothing else in the run breaks on an empty batch

    def __post_init__(self):
        if self.n < 1 or not 1 <= self.batch_size <= self.n:
            raise UserError(f"poisson sampling needs 1 <= batch_size <= the number of training examples, "
                            f"got batch_size={self.batch_size} for {self.n} examples")

    @property
    def sample_rate(self) -> float:
        return self.batch_size / self.n

    def __call__(self, seed: int, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([seed, epoch])
        batches = []
        for _ in range(math.ceil(self.n / self.batch_size)):
            k = int(rng.binomial(self.n, self.sample_rate))
            batches.append(sorted(rng.choice(self.n, size=k, replace=False).tolist()))
        return batches


def shard(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's batches: ``ceil(len(batches) / world)`` for every rank.

    The epoch's batches are wrapped around until they divide evenly (as torch's DistributedSampler
    pads), so every rank takes the same number of steps, also when there are fewer batches than
    processes; a rank that took fewer steps would leave the others waiting in the gradient all-reduce.
    """
    if world == 1 or not batches:
        return batches
    per_rank = math.ceil(len(batches) / world)
    padded = [batches[j % len(batches)] for j in range(per_rank * world)]
    return padded[rank::world]
