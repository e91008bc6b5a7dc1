"""The catalogue of methods: one :class:`MethodSpec` per name, as listed by
``healthtransfer methods`` and selected by name in a study file.

Each family module exposes a ``METHODS`` list; this module only gathers them, so adding a
method means adding one ``MethodSpec`` next to its class.
"""

from __future__ import annotations

import functools

from ._spec import MethodSpec

__all__ = ["MethodSpec", "SCALABLE_FOR", "available_methods", "get_method", "make_method", "resolve_method"]


@functools.lru_cache(maxsize=1)
def _all() -> dict[str, MethodSpec]:
    from . import (baselines_registry, deep_registry, feature, instance, model, multisource, regression, relation,
                   scalable, survival)

    specs: dict[str, MethodSpec] = {}
    for mod in (baselines_registry, instance, feature, deep_registry, model, relation, multisource, scalable,
                survival, regression):
        for spec in getattr(mod, "METHODS", []):
            if spec.name in specs:
                raise RuntimeError(f"method name {spec.name!r} registered twice")
            specs[spec.name] = spec
    return specs


def available_methods() -> dict[str, MethodSpec]:
    """Every registered method by name, in family order."""
    return dict(_all())


def get_method(name: str) -> MethodSpec:
    specs = _all()
    if name not in specs:
        import difflib

        close = difflib.get_close_matches(name, specs, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        from ..errors import UserInputError

        raise UserInputError(
            f"unknown method {name!r}{hint}",
            where="methods",
            fix="run `healthtransfer methods` for the list of names",
        )
    return specs[name]


def make_method(name: str, random_state=None, **params):
    """Build the estimator registered under ``name``."""
    return get_method(name).factory(random_state=random_state, **params)


# -- scalable variants, chosen automatically above a size ------------------------------------------
DEFAULT_THRESHOLD = 10_000
SCALABLE_FOR: dict[str, str] = {
    "iw_domain_lr": "iw_domain_chunked",
    "kmm_lr": "kmm_nystroem",
    "kliep_lr": "kliep_nystroem",
    "tca_lr": "tca_nystroem",
    "ot_map_lr": "ot_minibatch",
    "coral_lr": "coral_streamed",
    "joint_mmd": "joint_mmd_minibatch",
    "joint_mmd_linear": "joint_mmd_minibatch",
}


def resolve_method(name: str, n_rows: int, threshold: int | None = DEFAULT_THRESHOLD) -> str:
    """The method to run for ``name`` on ``n_rows`` training rows.

    Returns the scalable variant (:data:`SCALABLE_FOR`) when ``n_rows`` exceeds ``threshold``
    or the exact method's ``max_rows``; otherwise ``name`` itself. ``threshold=None`` only
    switches where the exact method cannot run (``max_rows``). Names without a scalable
    variant, and scalable names, are returned unchanged.

    >>> resolve_method("coral_lr", 50_000), resolve_method("coral_lr", 50_000, threshold=None)
    ('coral_streamed', 'coral_lr')
    >>> resolve_method("source_lr", 10**7)
    'source_lr'
    """
    alt = SCALABLE_FOR.get(name)
    if alt is None:
        return name
    max_rows = get_method(name).max_rows
    if (threshold is not None and n_rows > threshold) or (max_rows is not None and n_rows > max_rows):
        return alt
    return name
