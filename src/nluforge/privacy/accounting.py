"""Noise calibration and the epsilon spent, through Opacus's accountants (RDP: Mironov 2017; PRV:
Gopi et al. 2021). Nothing of our own: the same functions Opacus's ``make_private_with_epsilon`` uses.

One departure from Opacus's defaults: the RDP orders reach 1,024 instead of 63. The noise search
tries small noise multipliers on its way, where the best order is above 63 and Opacus warns "Optimal
order is the largest alpha" (an over-estimate of epsilon there); with the wider grid the warning is
gone and no epsilon is larger than with Opacus's grid (a superset of its orders)."""

from __future__ import annotations

from typing import Any

RDP_ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + list(range(64, 257, 8)) + [384, 512, 1024]


def _orders(accountant: str) -> dict[str, Any]:
    return {"alphas": RDP_ALPHAS} if accountant == "rdp" else {}


def noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """The noise multiplier sigma with which ``steps`` steps at ``sample_rate`` spend (epsilon, delta)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant=accountant, **_orders(accountant)))


def epsilon_spent(sigma: float, sample_rate: float, steps: int, delta: float, accountant: str) -> float:
    """Epsilon after ``steps`` Poisson-sampled steps with noise multiplier ``sigma``."""
    from opacus.accountants import create_accountant

    acc = create_accountant(accountant)
    acc.history = [(sigma, sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta, **_orders(accountant)))
