"""Row sampling for the steps that only need a statistic of very large tables.

Several steps estimate something that is already precise at 10^5 rows (a domain classifier's
AUROC, a class prior, permutation importance); above their own row limit they use a uniform
sample, drawn here so that every step draws it the same way.

>>> import numpy as np
>>> uniform_rows(5, 10, np.random.default_rng(0)) is None
True
>>> uniform_rows(1000, 3, np.random.default_rng(0)).tolist()
[511, 636, 848]
"""

from __future__ import annotations

import numpy as np

__all__ = ["uniform_rows"]


def uniform_rows(n: int, max_rows: int, rng: np.random.Generator) -> np.ndarray | None:
    """Sorted positions of ``max_rows`` of ``n`` rows drawn uniformly without replacement, or
    ``None`` when ``n <= max_rows`` (use every row; nothing is drawn from ``rng``)."""
    if n <= max_rows:
        return None
    return np.sort(rng.choice(n, max_rows, replace=False))
