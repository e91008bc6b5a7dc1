"""Scalable variants of the exact transfer methods, for domains of 10^5 - 10^6 rows.

Each class keeps the estimator contract of :class:`~healthtransfer.methods._base.TransferClassifier`
and replaces the step of its exact counterpart that is quadratic (or worse) in the number of
rows, or that materialises a full copy of the data, with a chunked / low-rank one:

=====================  ======================  ==========================================
scalable name          exact counterpart       what changes
=====================  ======================  ==========================================
``iw_domain_chunked``  ``iw_domain_lr``        domain classifier by averaged SGD
                                               (``partial_fit`` over chunks) + Platt
                                               scaling on a held-out chunk
``kmm_nystroem``       ``kmm_lr``              KMM on a rank-``n_components`` Nystroem
                                               kernel, solved by accelerated projected
                                               gradient on the capped simplex
``kliep_nystroem``     ``kliep_lr``            KLIEP (same algorithm as skada) with the
                                               ratio model on ``n_centers`` landmark
                                               centres, fitted on a capped target sample,
                                               evaluated on the source rows in chunks
``tca_nystroem``       ``tca_lr``              TCA on a Nystroem basis: an m x m
                                               generalised eigenproblem built from streamed
                                               sums instead of an n x n one
``ot_minibatch``       ``ot_map_lr``           minibatch EMD (POT) between random source
                                               and target batches instead of one n_s x n_t
                                               plan
``coral_streamed``     ``coral_lr``            moments, correlation and Ledoit-Wolf
                                               shrinkage accumulated over row chunks
``joint_mmd_minibatch`` ``joint_mmd``          linear-time MMD, larger batches and a
                                               budget of optimisation steps
=====================  ======================  ==========================================

:data:`SCALABLE_FOR` maps exact names to scalable ones and :func:`resolve_method` picks the
scalable one above a size threshold (or above the exact method's ``max_rows``).

Example
-------
>>> from healthtransfer.data.synthetic import make_shifted_domains
>>> from healthtransfer.methods.scalable import StreamedCORAL
>>> from healthtransfer.methods._registry import resolve_method
>>> d = make_shifted_domains("scale", n_source=200, n_target=100, random_state=0)
>>> m = StreamedCORAL(chunk_size=64).fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
>>> m.predict_proba(d.X[d.target]).shape
(100, 2)
>>> resolve_method("kmm_lr", n_rows=2_000_000), resolve_method("kmm_lr", n_rows=500)
('kmm_nystroem', 'kmm_lr')

The code lives by concern: chunked and low-rank numerics in ``_chunked``, the weighting
methods in ``_scalable_weights``, the feature methods in ``_scalable_features``; this module
holds the registry entries and keeps every name importable.
"""

from __future__ import annotations

from functools import partial

from ._chunked import _Moments, _streamed_corr
from ._scalable_features import MinibatchOT, NystroemTCA, StreamedCORAL
from ._scalable_weights import ChunkedDomainIW, NystroemKLIEP, NystroemKMM
from ._spec import MethodSpec
from .baselines import make_base_estimator

__all__ = [
    "ChunkedDomainIW",
    "NystroemKMM",
    "NystroemKLIEP",
    "NystroemTCA",
    "MinibatchOT",
    "StreamedCORAL",
    "METHODS",
]

# private names kept importable for deep.py and the tests
_PRIVATE = (_Moments, _streamed_corr)


# -- registry ------------------------------------------------------------------------------------
def _mk(cls, kind, random_state=None, **params):
    return cls(estimator=make_base_estimator(kind, random_state), random_state=random_state,
               **params)


METHODS = [
    MethodSpec("iw_domain_chunked", "instance", partial(_mk, ChunkedDomainIW, "lr"), "both",
               "Importance weighting by a logistic domain classifier trained by SGD over row "
               "chunks (scalable iw_domain_lr); logistic regression on weighted source + "
               "labelled target rows.",
               grid=({"clip_quantile": 0.95}, {"clip_quantile": 0.99}, {"C": 0.1}),
               skada_counterpart="DiscriminatorReweightAdapter"),
    MethodSpec("kmm_nystroem", "instance", partial(_mk, NystroemKMM, "lr"), "both",
               "Kernel mean matching on a rank-200 Nystroem kernel (scalable kmm_lr); logistic "
               "regression on weighted source + labelled target rows.",
               grid=({"gamma": 0.3}, {"gamma": 1.0}, {"gamma": 3.0}),
               skada_counterpart="KMMReweightAdapter"),
    MethodSpec("kliep_nystroem", "instance", partial(_mk, NystroemKLIEP, "lr"), "both",
               "KLIEP density-ratio weights on landmark centres, fitted on a capped sample and "
               "evaluated in chunks (scalable kliep_lr); logistic regression.",
               skada_counterpart="KLIEPReweightAdapter"),
    MethodSpec("tca_nystroem", "feature", partial(_mk, NystroemTCA, "lr"), "both",
               "Transfer component analysis on a rank-300 Nystroem basis (scalable tca_lr); "
               "logistic regression on the transfer components.",
               grid=({"mu": 0.1}, {"mu": 1.0}, {"standardize": "pooled"}),
               skada_counterpart="TransferComponentAnalysisAdapter"),
    MethodSpec("ot_minibatch", "feature", partial(_mk, MinibatchOT, "lr"), "both",
               "Minibatch EMD mapping of source rows onto the target (scalable ot_map_lr); "
               "logistic regression on mapped source + labelled target rows.",
               grid=({"reg": None}, {"reg": 0.1}), skada_counterpart="OTMappingAdapter"),
    MethodSpec("coral_streamed", "feature", partial(_mk, StreamedCORAL, "lr"), "both",
               "CORAL with moments and Ledoit-Wolf correlations accumulated over row chunks "
               "(scalable coral_lr); logistic regression on mapped source + labelled target rows.",
               grid=({"reg": 1e-3}, {"reg": 0.1}, {"reg": 1.0}), skada_counterpart="CORALAdapter"),
]
