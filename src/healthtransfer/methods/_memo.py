"""Compute a method's label-free stage once per set of rows, not once per fit.

A study fits each candidate many times on the *same rows*: once per label budget and once per
target cross-validation fold (the held-out fold's labels are hidden, its rows stay as
unlabelled target data). Only the target labels differ between those fits. The stage that
learns importance weights (domain classifier, KMM, KLIEP) or a feature map (CORAL, subspace
alignment, TCA, OT) reads the source rows, their labels and the target rows' features, never
the target labels, so it gives the same result every time: measured on a 3,100-row study,
KMM's weights were recomputed 31 times per (target, seed) for one answer.

:func:`stage` keys the stage on the method's class and parameters and a digest of exactly the
inputs the stage may read (``Xs, ys, ds, Xt, ws``), and replays the attributes it set. A hit
gives bit-for-bit the attributes a fresh computation would (the stages are deterministic
given ``random_state``, which is part of the key). The memo is per process, bounded in
entries and in the size of the rows it will hash.

>>> import numpy as np
>>> from healthtransfer.methods._base import DomainSplit
>>> class Stage:
...     calls = 0
...     def get_params(self, deep=False): return {"k": 1}
...     def fit_map(self, split):
...         Stage.calls += 1
...         self.mean_ = split.Xt.mean(axis=0)
>>> split = DomainSplit(Xs=np.ones((3, 2)), ys=np.r_[0, 1, 0], ds=np.ones(3, int), Xt=np.zeros((2, 2)),
...                     Xtl=np.zeros((0, 2)), ytl=np.zeros(0, int), n_classes=2)
>>> for _ in range(3):
...     est = Stage()
...     _ = stage(est, split, "map", lambda: est.fit_map(split))
>>> Stage.calls, est.mean_.tolist()
(1, [0.0, 0.0])
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

__all__ = ["stage", "clear"]

MAX_ENTRIES = 64
# Above this many bytes of rows the fits dwarf the stage and the memo would hold large objects
# (a TCA adapter keeps its rows): compute every time.
MAX_BYTES = 64 * 2**20
# The entries' input rows together (a proxy for what the entries hold): oldest out first.
MAX_TOTAL_BYTES = 256 * 2**20

_CACHE: "OrderedDict[str, tuple[Any, dict[str, Any], int]]" = OrderedDict()
_LOCK = threading.Lock()


def clear() -> None:
    """Forget every memoised stage (tests; nothing else needs to)."""
    with _LOCK:
        _CACHE.clear()


def _key(est, split, name: str) -> tuple[str, int] | None:
    arrays = [split.Xs, split.ys, split.ds, split.Xt] + ([] if split.ws is None else [split.ws])
    size = sum(np.asarray(a).nbytes for a in arrays)
    if size > MAX_BYTES:
        return None
    params = {k: v for k, v in est.get_params(deep=False).items() if k != "estimator"}
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{type(est).__module__}.{type(est).__qualname__}.{name}|{sorted(params.items())!r}".encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"|{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest(), size


def stage(est, split, name: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` (which sets attributes on ``est`` and may return a value), or its memoised
    result for the same class, stage ``name``, parameters and label-free inputs. ``compute`` must not read
    ``split.Xtl``, ``split.ytl`` or ``split.wtl`` (the labelled target rows): they are not keyed."""
    keyed = _key(est, split, name)
    if keyed is None:
        return compute()
    key, size = keyed
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
    if hit is not None:
        value, attrs, _ = hit
        vars(est).update(attrs)
        return value.copy() if isinstance(value, np.ndarray) else value
    before = dict(vars(est))
    value = compute()
    # the attributes the stage set (new, or rebound on a refit of the same estimator)
    attrs = {k: v for k, v in vars(est).items() if k not in before or before[k] is not v}
    with _LOCK:
        _CACHE[key] = (value.copy() if isinstance(value, np.ndarray) else value, attrs, size)
        while len(_CACHE) > MAX_ENTRIES or sum(e[2] for e in _CACHE.values()) > MAX_TOTAL_BYTES:
            _CACHE.popitem(last=False)
    return value
