"""One rule for turning results into strict JSON (used by the report writers and the bundle).

>>> import numpy as np
>>> jsonable({"auroc": np.float64(0.8), "ci": (np.nan, 1.0), 3: np.int64(2)})
{'auroc': 0.8, 'ci': [None, 1.0], '3': 2}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["jsonable"]


def jsonable(x: Any) -> Any:
    """``x`` with numpy scalars and arrays as Python values, tuples as lists, keys as text,
    paths as text, and NaN / infinity as ``None`` (strict JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, Path):
        return str(x)
    return x
