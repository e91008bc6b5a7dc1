"""A tiny adapter for using skada without side effects on ``import healthtransfer``.

``import skada`` calls ``sklearn.set_config(enable_metadata_routing=True)`` globally, which
changes how every scikit-learn meta-estimator in the process routes ``sample_weight``. We
therefore import skada lazily, put the previous scikit-learn configuration back straight
after the import, and run skada's own ``fit``/``transform`` calls inside
:func:`skada_context`, which switches routing on only for their duration.

Example
-------
>>> import sklearn
>>> from healthtransfer.methods._skada import import_skada, skada_context
>>> skada = import_skada()
>>> sklearn.get_config()["enable_metadata_routing"]
False
>>> with skada_context():
...     sklearn.get_config()["enable_metadata_routing"]
True
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import sklearn

__all__ = ["import_skada", "skada_context", "skada_domains"]


def import_skada():
    """Import and return the ``skada`` module, leaving the scikit-learn config unchanged."""
    previous = sklearn.get_config()
    try:
        import skada
    except ImportError as exc:  # pragma: no cover - skada is a declared dependency
        raise ImportError(
            "this method needs skada (`pip install skada`); it is used for KMM, KLIEP, TCA "
            "and OT mapping."
        ) from exc
    finally:
        sklearn.set_config(**previous)
    return skada


@contextmanager
def skada_context():
    """Switch scikit-learn metadata routing on for the duration of a skada call."""
    with sklearn.config_context(enable_metadata_routing=True):
        yield


def skada_domains(n_source: int, n_target: int) -> np.ndarray:
    """A ``sample_domain`` for ``vstack([Xs, Xt])`` with every source collapsed to 1 and
    every target to -1 (skada's single-source, single-target case)."""
    return np.r_[np.ones(n_source, dtype=int), -np.ones(n_target, dtype=int)]
