"""Feature-based transfer (non-deep): map source and target rows into a shared space.

- :class:`DomainStandardization` - standardise every domain by its own mean / std (own code;
  cheap and decisive when devices measure in other units);
- :class:`CORAL` - correlation alignment (Sun et al. 2016), per source domain, in each
  domain's standardised coordinates (own code: scale-robust and multi-source; skada's
  ``CORALAdapter`` pools the sources and shrinks the raw covariance);
- :class:`SubspaceAlignment` - Fernando et al. (2013) on per-domain z-scores (own code, a few
  lines; skada's ``SubspaceAlignmentAdapter`` does not z-score per domain);
- :class:`TCA` - transfer component analysis via skada's ``TransferComponentAnalysisAdapter``;
- :class:`OTMapping` - barycentric optimal-transport mapping of the source rows onto the
  target via skada's ``OTMappingAdapter`` / ``EntropicOTMappingAdapter`` (POT underneath);
- :class:`FeatureAugmentation` - Daumé's "frustratingly easy" [shared, source, target] copies
  (own code; needs labelled target rows).

Every method trains its final classifier on the mapped source rows plus the (mapped)
labelled target rows when there are any. Rows are mapped by their ``sample_domain`` at
predict time too (``None`` = target).

Example
-------
>>> from healthtransfer.data.synthetic import make_shifted_domains
>>> from healthtransfer.methods.feature import DomainStandardization
>>> d = make_shifted_domains("scale", n_source=200, n_target=100, random_state=0)
>>> m = DomainStandardization().fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
>>> m.predict_proba(d.X[d.target]).shape
(100, 2)
"""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
from sklearn.covariance import ledoit_wolf
from sklearn.preprocessing import StandardScaler

from . import _memo
from ._base import DomainSplit, TransferClassifier, proba_full
from ._rows import _base, _combine, fit_weighted
from ._skada import import_skada, skada_context, skada_domains
from ._spec import MethodSpec
from .baselines import make_base_estimator

__all__ = [
    "DomainStandardization",
    "CORAL",
    "SubspaceAlignment",
    "TCA",
    "OTMapping",
    "FeatureAugmentation",
    "METHODS",
]


def _moments(X, w=None):
    """(Weighted) mean and standard deviation per column; constant columns get sd 1."""
    if len(X) == 0:
        return np.zeros(X.shape[1]), np.ones(X.shape[1])
    w = np.ones(len(X)) if w is None else np.asarray(w, float)
    if w.sum() <= 0:
        w = np.ones(len(X))
    mu = np.average(X, axis=0, weights=w)
    sd = np.sqrt(np.average((X - mu) ** 2, axis=0, weights=w)) if len(X) > 1 else np.ones(X.shape[1])
    sd = np.where(sd > 1e-8 * (1 + np.abs(mu)), sd, 1.0)
    return mu, sd


class _FeatureBase(TransferClassifier):
    """Fit = learn the maps (``_fit_maps``), map source + labelled target rows, train the base
    learner. Subclasses implement ``_fit_maps(split)`` and ``_map(X, role, domain)`` where
    ``role`` is ``"source"`` or ``"target"`` and ``domain`` the (single) domain id."""

    family = "feature"
    uses_target = "both"

    def _fit_maps(self, split: DomainSplit) -> None:  # pragma: no cover
        raise NotImplementedError

    def _map(self, X, role, domain):  # pragma: no cover
        raise NotImplementedError

    def _map_rows(self, X, sample_domain):
        sample_domain = np.asarray(sample_domain)
        out = None
        for dom in np.unique(sample_domain):
            rows = sample_domain == dom
            Z = self._map(X[rows], "source" if dom > 0 else "target", int(dom))
            if out is None:
                out = np.empty((X.shape[0], Z.shape[1]))
            out[rows] = Z
        return out if out is not None else np.empty((0, self.n_features_out_))

    def _fit(self, split):
        # the maps read no target label: the same for every budget and CV fold of a unit
        _memo.stage(self, split, "maps", lambda: self._fit_maps(split))
        Zs = self._map_rows(split.Xs, split.ds)
        Ztl = self._map(split.Xtl, "target", -1) if len(split.ytl) else None
        X = Zs if Ztl is None else np.vstack([Zs, Ztl])
        _, y, w = _combine(split, None, self.target_weight)
        self.n_features_out_ = X.shape[1]
        self.estimator_ = fit_weighted(self._make_estimator(), X, y, w)

    def _make_estimator(self):
        return _base(self.estimator, self.random_state)

    def _predict_proba(self, X, sample_domain):
        return proba_full(self.estimator_, self._map_rows(X, sample_domain), len(self.classes_))


# -- per-domain standardisation ------------------------------------------------------------
class DomainStandardization(_FeatureBase):
    """Standardise every domain by its own mean and standard deviation.

    Each source domain and each target domain gets its own z-score (a target domain unseen at
    fit uses the pooled target moments; with no target rows at all, the pooled source
    moments). Removes per-site offsets and unit changes; it also removes genuine differences
    in the feature means (e.g. a sicker population), so it is a baseline for device shift,
    not for label shift.

    Parameters
    ----------
    estimator : classifier or None
        Base learner; ``None`` = logistic regression.
    target_weight : float
        Weight of each labelled target row.
    random_state : int or None

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("scale", n_source=200, n_target=100, random_state=0)
    >>> m = DomainStandardization().fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
    >>> sorted(m.moments_)
    [-1, 1]
    """

    def __init__(self, estimator=None, target_weight=1.0, random_state=None):
        self.estimator = estimator
        self.target_weight = target_weight
        self.random_state = random_state

    def _fit_maps(self, split):
        self.moments_ = {int(d): _moments(split.Xs[split.ds == d], _sub(split.ws, split.ds == d))
                         for d in split.source_domains}
        self._source_pool = _moments(split.Xs, split.ws)
        self._target_pool = _moments(split.Xt) if len(split.Xt) > 1 else self._source_pool
        # one target domain at fit (the base class does not keep target ids): -1
        self.moments_[-1] = self._target_pool

    def _map(self, X, role, domain):
        default = self._source_pool if role == "source" else self._target_pool
        mu, sd = self.moments_.get(domain, default)
        return (X - mu) / sd


# -- CORAL ---------------------------------------------------------------------------------
def _sqrtm_sym(C, inverse=False):
    vals, vecs = np.linalg.eigh((C + C.T) / 2)
    vals = np.clip(vals, 1e-8, None)
    return (vecs * (vals ** (-0.5 if inverse else 0.5))) @ vecs.T


class CORAL(_FeatureBase):
    """Correlation alignment (Sun, Feng & Saenko 2016), one map per source domain.

    Each source domain is z-scored with its own moments, whitened with its (Ledoit-Wolf
    shrunk, plus ``reg``) correlation matrix, re-coloured with the target's, and put back in
    the target's units: ``x' = ((x - mu_s) / sd_s) C_s^{-1/2} C_t^{1/2} * sd_t + mu_t``.
    Target rows are left as they are. Working in z-scores keeps the shrinkage meaningful when
    features have wildly different scales.

    Parameters
    ----------
    estimator : classifier or None
        Base learner; ``None`` = logistic regression.
    reg : float
        Ridge added to both correlation matrices.
    target_weight : float
        Weight of each labelled target row.
    random_state : int or None

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("scale", n_source=200, n_target=100, random_state=0)
    >>> m = CORAL().fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
    >>> m.predict(d.X[d.target]).shape
    (100,)
    """

    def __init__(self, estimator=None, reg=1e-3, target_weight=1.0, random_state=None):
        self.estimator = estimator
        self.reg = reg
        self.target_weight = target_weight
        self.random_state = random_state

    def _corr(self, Z):
        p = Z.shape[1]
        if len(Z) < 2:
            return np.eye(p)
        C, _ = ledoit_wolf(Z, assume_centered=True)
        return C + self.reg * np.eye(p)

    def _fit_maps(self, split):
        if len(split.Xt) < 2:
            self.maps_ = {}
            return
        mu_t, sd_t = _moments(split.Xt)
        root_t = _sqrtm_sym(self._corr((split.Xt - mu_t) / sd_t))
        self.maps_ = {}
        for d in list(split.source_domains) + [None]:
            Xd = split.Xs if d is None else split.Xs[split.ds == d]
            mu, sd = _moments(Xd)
            A = _sqrtm_sym(self._corr((Xd - mu) / sd), inverse=True) @ root_t
            self.maps_[d if d is None else int(d)] = (mu, sd, A, mu_t, sd_t)

    def _map(self, X, role, domain):
        if role == "target" or not self.maps_:
            return X
        mu, sd, A, mu_t, sd_t = self.maps_.get(domain, self.maps_[None])
        return ((X - mu) / sd) @ A * sd_t + mu_t


# -- subspace alignment ---------------------------------------------------------------------
def _sub(w, mask):
    return None if w is None else w[mask]


def _pca_basis(Z, k, w=None):
    w = np.ones(len(Z)) if w is None else np.asarray(w, float)
    mu = np.average(Z, axis=0, weights=w)
    _, _, Vt = np.linalg.svd((Z - mu) * np.sqrt(w)[:, None], full_matrices=False)
    return Vt[:k].T  # (p, k)


class SubspaceAlignment(_FeatureBase):
    """Subspace alignment (Fernando et al. 2013) on per-domain z-scores.

    Each domain is z-scored with its own moments; the sources' top ``n_components`` principal
    directions P_s are aligned to the target's P_t by ``M = P_s' P_t``: source rows become
    ``z P_s M``, target rows ``z P_t``. ``n_components`` is an int or a fraction of the
    number of features (with all components the alignment is the identity).

    Parameters
    ----------
    estimator : classifier or None
        Base learner; ``None`` = logistic regression.
    n_components : int or float
        Subspace dimension, or a fraction of n_features if < 1.
    target_weight : float
        Weight of each labelled target row.
    random_state : int or None

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("scale", n_source=200, n_target=100, random_state=0)
    >>> m = SubspaceAlignment(n_components=3).fit(d.X, d.masked_y(0),
    ...                                            sample_domain=d.sample_domain)
    >>> m.n_components_
    3
    """

    def __init__(self, estimator=None, n_components=0.6, target_weight=1.0, random_state=None):
        self.estimator = estimator
        self.n_components = n_components
        self.target_weight = target_weight
        self.random_state = random_state

    def _fit_maps(self, split):
        p = split.Xs.shape[1]
        k = self.n_components
        k = int(np.ceil(k * p)) if isinstance(k, float) and k < 1 else int(k)
        self.n_components_ = max(1, min(k, p))
        self.moments_ = {int(d): _moments(split.Xs[split.ds == d], _sub(split.ws, split.ds == d))
                         for d in split.source_domains}
        self._source_pool = _moments(split.Xs, split.ws)
        Zs = np.empty_like(split.Xs)
        for d in split.source_domains:
            mu, sd = self.moments_[int(d)]
            Zs[split.ds == d] = (split.Xs[split.ds == d] - mu) / sd
        Ps = _pca_basis(Zs, self.n_components_, split.ws)
        if len(split.Xt) > self.n_components_:
            self._target_pool = _moments(split.Xt)
            Pt = _pca_basis((split.Xt - self._target_pool[0]) / self._target_pool[1],
                            self.n_components_)
        else:
            self._target_pool = self._source_pool
            Pt = Ps
        self.source_projection_ = Ps @ (Ps.T @ Pt)
        self.target_projection_ = Pt

    def _map(self, X, role, domain):
        if role == "source":
            mu, sd = self.moments_.get(domain, self._source_pool)
            return ((X - mu) / sd) @ self.source_projection_
        mu, sd = self._target_pool
        return ((X - mu) / sd) @ self.target_projection_


# -- TCA (skada) ------------------------------------------------------------------------------
class TCA(_FeatureBase):
    """Transfer component analysis (Pan et al. 2011) via skada's
    ``TransferComponentAnalysisAdapter``.

    Features are standardised first (``standardize="pooled"``: one scaler on all rows;
    ``"domain"``: a z-score per domain, which also removes unit differences). skada learns the
    kernel components that shrink the MMD between source and target; rows are embedded as
    ``K(x, [X_s; X_t]) @ components``. Builds an (n_s + n_t) square kernel: keep to a few
    thousand rows.

    Parameters
    ----------
    estimator : classifier or None
        Base learner; ``None`` = logistic regression.
    n_components : int or None
        Number of transfer components (``None``: n_features).
    mu : float
        Trade-off between MMD and variance preservation.
    kernel : str
        Kernel name for ``sklearn.metrics.pairwise_kernels``.
    standardize : {"pooled", "domain"}
    target_weight : float
    random_state : int or None

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("rotation", n_source=150, n_target=80, random_state=0)
    >>> m = TCA(n_components=4).fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
    >>> m.predict_proba(d.X[d.target]).shape
    (80, 2)
    """

    def __init__(self, estimator=None, n_components=None, mu=0.1, kernel="rbf",
                 standardize="domain", target_weight=1.0, random_state=None):
        self.estimator = estimator
        self.n_components = n_components
        self.mu = mu
        self.kernel = kernel
        self.standardize = standardize
        self.target_weight = target_weight
        self.random_state = random_state

    def _fit_maps(self, split):
        if self.standardize not in ("pooled", "domain"):
            raise ValueError(f"standardize must be 'pooled' or 'domain', got {self.standardize!r}")
        self._std = DomainStandardization()
        self._std._fit_maps(split)
        if self.standardize == "pooled":
            w = None if split.ws is None else np.r_[split.ws, np.ones(len(split.Xt))]
            pooled = _moments(np.vstack([split.Xs, split.Xt]), w)
            self._std.moments_ = {}
            self._std._source_pool = self._std._target_pool = pooled
        Zs = self._z(split.Xs, split.ds)
        if len(split.Xt) == 0:
            self.adapter_ = None
            return
        Zt = self._std._map(split.Xt, "target", -1)
        skada = import_skada()
        p = Zs.shape[1]
        k = p if self.n_components is None else int(self.n_components)
        adapter = skada.TransferComponentAnalysisAdapter(kernel=self.kernel, n_components=k,
                                                         mu=self.mu)
        with skada_context():
            adapter.fit(np.vstack([Zs, Zt]), sample_domain=skada_domains(len(Zs), len(Zt)))
        self.adapter_ = adapter

    def _z(self, X, ds):
        out = np.empty_like(X)
        for d in np.unique(ds):
            out[ds == d] = self._std._map(X[ds == d], "source", int(d))
        return out

    def _map(self, X, role, domain):
        Z = self._std._map(X, role, domain)
        if self.adapter_ is None:
            return Z
        from sklearn.metrics.pairwise import pairwise_kernels

        a = self.adapter_
        K = np.hstack([pairwise_kernels(Z, a.X_source_, metric=a.kernel),
                       pairwise_kernels(Z, a.X_target_, metric=a.kernel)])
        return K @ a.eigvects_


# -- OT mapping (skada / POT) ------------------------------------------------------------------
class OTMapping(_FeatureBase):
    """Optimal-transport mapping (Courty et al. 2017) via skada's ``OTMappingAdapter``
    (exact EMD, ``reg=None``) or ``EntropicOTMappingAdapter`` (Sinkhorn, ``reg > 0``).

    Rows are standardised with one pooled scaler (keeps the shift, fixes the numerics of the
    ground cost); each source row is moved to the barycentre of the target rows it is
    transported to, and the classifier is trained on the moved source rows plus the labelled
    target rows. New source rows are mapped by POT's out-of-sample rule; target rows are left
    in place. Solves an n_s x n_t transport problem: keep to a few thousand rows.

    Parameters
    ----------
    estimator : classifier or None
        Base learner; ``None`` = logistic regression.
    reg : float or None
        Entropic regularisation (``None`` = exact EMD).
    target_weight : float
    random_state : int or None

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("scale", n_source=150, n_target=80, random_state=0)
    >>> m = OTMapping().fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
    >>> m.predict(d.X[d.target]).shape
    (80,)
    """

    def __init__(self, estimator=None, reg=None, target_weight=1.0, random_state=None):
        self.estimator = estimator
        self.reg = reg
        self.target_weight = target_weight
        self.random_state = random_state

    def _fit_maps(self, split):
        w = None if split.ws is None else np.r_[split.ws, np.ones(len(split.Xt))]
        self.scaler_ = StandardScaler().fit(np.vstack([split.Xs, split.Xt]), sample_weight=w)
        if len(split.Xt) == 0:
            self.adapter_ = None
            return
        skada = import_skada()
        Zs, Zt = self.scaler_.transform(split.Xs), self.scaler_.transform(split.Xt)
        if self.reg is None:
            adapter = skada.OTMappingAdapter()
        else:
            adapter = skada.EntropicOTMappingAdapter(reg_e=float(self.reg))
        Z = np.vstack([Zs, Zt])
        dom = skada_domains(len(Zs), len(Zt))
        with skada_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._Zs_mapped = adapter.fit_transform(Z, sample_domain=dom)[: len(Zs)]
        self._Zs_fit = Zs
        self.adapter_ = adapter

    def _map(self, X, role, domain):
        Z = self.scaler_.transform(X)
        if role == "target" or self.adapter_ is None:
            return Z
        if Z.shape == self._Zs_fit.shape and np.array_equal(Z, self._Zs_fit):
            return self._Zs_mapped
        with skada_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.adapter_.ot_transport_.transform(Xs=Z)

    def _fit(self, split):
        # map all sources together (the transport plan is joint), then train as usual
        _memo.stage(self, split, "maps", lambda: self._fit_maps(split))
        Zs = self._map(split.Xs, "source", 1)
        Ztl = self._map(split.Xtl, "target", -1) if len(split.ytl) else None
        X = Zs if Ztl is None else np.vstack([Zs, Ztl])
        _, y, w = _combine(split, None, self.target_weight)
        self.n_features_out_ = X.shape[1]
        self.estimator_ = fit_weighted(_base(self.estimator, self.random_state), X, y, w)


# -- feature augmentation ----------------------------------------------------------------------
class FeatureAugmentation(_FeatureBase):
    """Daumé III's "frustratingly easy" feature augmentation.

    Source rows become ``[x, x, 0]``, target rows ``[x, 0, x]``: the shared copy learns what
    the domains have in common, the domain copies what differs. Needs labelled target rows
    to learn the target copy (without them it is source-only on the shared copy). All source
    domains share the source copy. Features are standardised with the source moments so the
    copies are regularised alike.

    Parameters
    ----------
    estimator : classifier or None
        Base learner; ``None`` = logistic regression.
    target_weight : float
        Weight of each labelled target row.
    random_state : int or None

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("concept", n_source=200, n_target=100, random_state=0)
    >>> m = FeatureAugmentation().fit(d.X, d.masked_y(30), sample_domain=d.sample_domain)
    >>> m.n_features_out_
    15
    """

    uses_target = "labelled"

    def __init__(self, estimator=None, target_weight=1.0, random_state=None):
        self.estimator = estimator
        self.target_weight = target_weight
        self.random_state = random_state

    def _fit_maps(self, split):
        self._mom = _moments(split.Xs, split.ws)

    def _map(self, X, role, domain):
        Z = (X - self._mom[0]) / self._mom[1]
        zero = np.zeros_like(Z)
        return np.hstack([Z, Z, zero] if role == "source" else [Z, zero, Z])


# -- registry ------------------------------------------------------------------------------------
def _mk(cls, kind, random_state=None, **params):
    return cls(estimator=make_base_estimator(kind, random_state), random_state=random_state,
               **params)


METHODS = [
    MethodSpec("domain_std_lr", "feature", partial(_mk, DomainStandardization, "lr"), "both",
               "Per-domain standardisation (each site z-scored by its own mean/std), then "
               "logistic regression on source + labelled target rows."),
    MethodSpec("domain_std_gbm", "feature", partial(_mk, DomainStandardization, "gbm"), "both",
               "Per-domain standardisation, then gradient boosting on source + labelled target "
               "rows."),
    MethodSpec("coral_lr", "feature", partial(_mk, CORAL, "lr"), "both",
               "CORAL: each source site's correlations and moments aligned to the target's; "
               "logistic regression on mapped source + labelled target rows.",
               skada_counterpart="CORALAdapter", grid=({"reg": 1e-3}, {"reg": 0.1}, {"reg": 1.0})),
    MethodSpec("coral_gbm", "feature", partial(_mk, CORAL, "gbm"), "both",
               "CORAL alignment, then gradient boosting on mapped source + labelled target rows.",
               skada_counterpart="CORALAdapter"),
    MethodSpec("sa_lr", "feature", partial(_mk, SubspaceAlignment, "lr"), "both",
               "Subspace alignment of per-domain z-scores (PCA bases aligned); logistic "
               "regression in the target subspace.",
               skada_counterpart="SubspaceAlignmentAdapter",
               grid=({"n_components": 0.4}, {"n_components": 0.6}, {"n_components": 0.8})),
    MethodSpec("tca_lr", "feature", partial(_mk, TCA, "lr"), "both",
               "Transfer component analysis (skada) on standardised features; logistic "
               "regression on the transfer components.", max_rows=4000,
               skada_counterpart="TransferComponentAnalysisAdapter",
               grid=({"mu": 0.1}, {"mu": 1.0}, {"standardize": "pooled"})),
    MethodSpec("ot_map_lr", "feature", partial(_mk, OTMapping, "lr"), "both",
               "Optimal-transport (EMD) mapping of source rows onto the target (skada/POT); "
               "logistic regression on mapped source + labelled target rows.", max_rows=6000,
               skada_counterpart="OTMappingAdapter", grid=({"reg": None}, {"reg": 0.1})),
    MethodSpec("feat_aug_lr", "feature", partial(_mk, FeatureAugmentation, "lr"), "labelled",
               "Frustratingly easy feature augmentation [shared, source, target]; logistic "
               "regression.", needs_labels=True,
               grid=({"target_weight": 1.0}, {"target_weight": 3.0})),
]
