"""Differential privacy accounting.

Two modes:

* ``dp-sgd`` (record level, Opacus): each site clips per-example gradients and adds Gaussian
  noise in every local step. The noise multiplier is calibrated once, before training, so that
  the planned number of local steps spends at most ``epsilon`` at ``delta``; each site then
  reports the epsilon it actually spent (RDP accountant over the steps it ran).
* ``client-clipping`` (site level, Flower's ``DifferentialPrivacyClientSideFixedClipping``
  plus ``fixedclipping_mod``): each site clips its model update; the server adds Gaussian noise
  to the sum. Epsilon is computed with the same RDP accountant, one step per round, sampling
  rate = fraction of sites per round.
"""

from __future__ import annotations

import functools
import math

__all__ = ["noise_for_epsilon", "spent_epsilon", "planned_steps"]


def planned_steps(n_rows: int, batch_size: int, epochs_per_round: int, rounds: int) -> int:
    return int(rounds) * int(epochs_per_round) * max(1, math.ceil(n_rows / max(batch_size, 1)))


def noise_for_epsilon(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    return _noise(round(float(epsilon), 9), round(float(delta), 12), round(float(sample_rate), 9), int(steps))


@functools.lru_cache(maxsize=256)
def _noise(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=float(epsilon), target_delta=float(delta),
                                      sample_rate=float(sample_rate), steps=int(steps), accountant="rdp"))


def spent_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    if steps <= 0:
        return 0.0
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return float(acc.get_epsilon(delta=float(delta)))
