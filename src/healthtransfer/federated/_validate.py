"""Checks on client updates and the weighted average, as small pure functions.

Example
-------
>>> import numpy as np
>>> ref = [np.zeros((2, 3)), np.zeros(2)]
>>> check_update([np.ones((2, 3)), np.ones(2)], ref) is None
True
>>> check_update([np.ones((3, 2)), np.ones(2)], ref)
'array 0 has shape (3, 2), expected (2, 3)'
>>> check_update([np.full((2, 3), np.nan), np.ones(2)], ref)
'array 0 holds 6 non-finite values (NaN or inf)'
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_update", "weighted_average", "split_valid"]


def check_update(arrays: list[np.ndarray], reference: list[np.ndarray] | None) -> str | None:
    """Why an update must be rejected, or None when it is acceptable."""
    if reference is not None:
        if len(arrays) != len(reference):
            return f"update has {len(arrays)} arrays, expected {len(reference)}"
        for i, (a, r) in enumerate(zip(arrays, reference)):
            if tuple(np.shape(a)) != tuple(np.shape(r)):
                return f"array {i} has shape {tuple(np.shape(a))}, expected {tuple(np.shape(r))}"
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if not np.issubdtype(a.dtype, np.number):
            return f"array {i} is not numeric (dtype {a.dtype})"
        bad = int(np.size(a) - np.isfinite(a).sum())
        if bad:
            return f"array {i} holds {bad} non-finite values (NaN or inf)"
    return None


def split_valid(updates: list[tuple[str, list[np.ndarray], float]], reference):
    """(accepted [(name, arrays, weight)], rejected [(name, reason)])."""
    ok, rejected = [], []
    for name, arrays, weight in updates:
        reason = check_update(arrays, reference)
        if reason is None and not (np.isfinite(weight) and weight > 0):
            reason = f"non-positive or non-finite example count {weight}"
        (rejected.append((name, reason)) if reason else ok.append((name, arrays, weight)))
    return ok, rejected


def weighted_average(updates: list[tuple[list[np.ndarray], float]]) -> list[np.ndarray]:
    """Example-weighted mean of parameter lists (FedAvg's aggregate)."""
    if not updates:
        raise ValueError("nothing to average")
    total = float(sum(w for _, w in updates))
    return [sum(arrs[i] * (w / total) for arrs, w in updates) for i in range(len(updates[0][0]))]
