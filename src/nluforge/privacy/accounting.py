"""Noise calibration and the epsilon spent, through Opacus's accountants (RDP: Mironov 2017; PRV:
Gopi et al. 2021). Nothing of our own: the same functions Opacus's ``make_private_with_epsilon`` uses."""

from __future__ import annotations


def noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """The noise multiplier sigma with which ``steps`` steps at ``sample_rate`` spend (epsilon, delta)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant=accountant))


def epsilon_spent(sigma: float, sample_rate: float, steps: int, delta: float, accountant: str) -> float:
    """Epsilon after ``steps`` Poisson-sampled steps with noise multiplier ``sigma``."""
    from opacus.accountants import create_accountant

    acc = create_accountant(accountant)
    acc.history = [(sigma, sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta))
