"""Relation-based transfer: carry relations between rows or between features across domains.

- :class:`GraphLabelPropagation` - a kNN graph over source and target rows in a per-domain
  standardised space; labels of the source and labelled target rows spread to the unlabelled
  target rows, and new target rows are scored through their neighbours in the graph, blended
  with a classifier trained on the labelled + propagated rows;
- :class:`RelationImputation` - how the features relate to each other is learned where they
  are measured (mostly the source) and used to impute the features the target lacks or rarely
  measures, before the classifier; :class:`FeatureBridge` maps heterogeneous feature sets
  (a feature absent at the target is predicted from the shared ones by a source model).

Example
-------
>>> from healthtransfer.data.synthetic import make_shifted_domains
>>> from healthtransfer.methods.relation import RelationImputation
>>> d = make_shifted_domains("missing_feature", n_source=200, n_target=100, random_state=0)
>>> m = RelationImputation().fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
>>> m.predict_proba(d.X[d.target]).shape
(100, 2)
"""

from __future__ import annotations

from functools import partial

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.neighbors import NearestNeighbors

from ._base import TransferClassifier, proba_full
from ._spec import MethodSpec
from .baselines import make_base_estimator

__all__ = ["GraphLabelPropagation", "RelationImputation", "FeatureBridge"]


def _moments(X):
    mu = X.mean(axis=0) if len(X) else np.zeros(X.shape[1])
    sd = X.std(axis=0) if len(X) > 1 else np.ones(X.shape[1])
    sd = np.where(sd < 1e-9, 1.0, sd)
    return mu, sd


class GraphLabelPropagation(TransferClassifier):
    """Cross-domain graph label propagation.

    Every domain is standardised with its own mean and scale (the aligned representation; a
    site that measures in other units or sits elsewhere lands on the same scale). A kNN graph
    over the source rows, the labelled target rows and all target rows is built and labels are
    spread with scikit-learn's ``LabelSpreading`` (source and labelled target rows are the
    labelled nodes). A new row is scored by its ``n_neighbors`` nearest fitted nodes (their
    propagated label distributions), blended (``graph_weight``) with a base classifier trained
    on the labelled rows plus the target rows with their propagated labels (weighted by their
    confidence). Rows of an unseen target domain are standardised with the target statistics
    seen at fit time.

    Parameters
    ----------
    n_neighbors : int, default=10
    alpha : float, default=0.2
        ``LabelSpreading`` clamping (0 keeps the given labels, 1 lets them move fully).
    graph_weight : float, default=0.5
        Weight of the graph prediction in the blend; the rest goes to the base classifier.
    align : {"domain", "none"}, default="domain"
        Per-domain standardisation, or one standardisation for all rows.
    base : {"lr", "gbm"}, default="lr"
    random_state : int or None

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("scale", n_source=200, n_target=100, random_state=0)
    >>> m = GraphLabelPropagation().fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
    >>> m.predict_proba(d.X[d.target]).shape
    (100, 2)
    """

    family = "relation"
    uses_target = "both"

    def __init__(self, n_neighbors=10, alpha=0.2, graph_weight=0.5, align="domain", base="lr",
                 random_state=None):
        self.n_neighbors = n_neighbors
        self.alpha = alpha
        self.graph_weight = graph_weight
        self.align = align
        self.base = base
        self.random_state = random_state

    # -- alignment -------------------------------------------------------------------------
    def _fit_alignment(self, split):
        if self.align not in ("domain", "none"):
            raise ValueError(f"align must be 'domain' or 'none', got {self.align!r}")
        self._stats = {}
        allX = np.vstack([split.Xs, split.Xt])
        self._pooled = _moments(allX)
        if self.align == "domain":
            for dom in split.source_domains:
                self._stats[int(dom)] = _moments(split.Xs[split.ds == dom])
            # all target rows form one target domain (the split does not keep target ids)
            self._target_stats = _moments(split.Xt) if len(split.Xt) > 1 else self._pooled
        else:
            self._target_stats = self._pooled

    def _align(self, X, sample_domain):
        Z = np.empty_like(X, dtype=float)
        for dom in np.unique(sample_domain):
            rows = sample_domain == dom
            if self.align == "none":
                mu, sd = self._pooled
            elif dom > 0:
                mu, sd = self._stats.get(int(dom), self._pooled)
            else:
                mu, sd = self._target_stats
            Z[rows] = (X[rows] - mu) / sd
        return Z

    # -- fit / predict ---------------------------------------------------------------------
    def _fit(self, split):
        from sklearn.semi_supervised import LabelSpreading

        K = split.n_classes
        self._fit_alignment(split)
        Zs = self._align(split.Xs, split.ds)
        Zt = self._align(split.Xt, -np.ones(len(split.Xt), int))
        Ztl = self._align(split.Xtl, -np.ones(len(split.Xtl), int))
        # labelled target rows appear twice: as labelled nodes and (in Zt) as unlabelled ones,
        # which their labelled twin, at distance 0, then labels.
        Z = np.vstack([Zs, Ztl, Zt])
        labels = np.r_[split.ys, split.ytl, -np.ones(len(Zt), int)]
        n = len(Z)
        k = int(min(self.n_neighbors, n - 1))
        self._nodes = Z
        if k >= 1 and len(np.unique(labels[labels >= 0])) >= 2:
            ls = LabelSpreading(kernel="knn", n_neighbors=k, alpha=self.alpha, max_iter=100)
            ls.fit(Z, labels)
            dist = np.zeros((n, K))
            dist[:, ls.classes_.astype(int)] = ls.label_distributions_
        else:
            dist = np.zeros((n, K))
            dist[labels >= 0, labels[labels >= 0]] = 1.0
            dist[labels < 0] = np.bincount(labels[labels >= 0], minlength=K) / max(1, (labels >= 0).sum())
        dist = np.nan_to_num(dist)
        dist /= np.clip(dist.sum(axis=1, keepdims=True), 1e-12, None)
        self.label_distributions_ = dist
        self._nn = NearestNeighbors(n_neighbors=max(1, min(self.n_neighbors, n))).fit(Z)
        # base classifier on labelled rows + target rows with propagated labels
        n_lab = len(Zs) + len(Ztl)
        y_t = dist[n_lab:].argmax(axis=1)
        conf_t = dist[n_lab:].max(axis=1)
        w_lab = np.r_[np.ones(len(Zs)) if split.ws is None else split.ws,
                      np.ones(len(Ztl)) if split.wtl is None else split.wtl]
        Xb = np.vstack([Zs, Ztl, Zt])
        yb = np.r_[split.ys, split.ytl, y_t]
        wb = np.r_[w_lab, conf_t]
        if len(np.unique(yb)) >= 2:
            self.base_ = make_base_estimator(self.base, self.random_state).fit(
                Xb, yb, sample_weight=wb
            )
        else:
            self.base_ = None
            self._const = np.bincount(yb, minlength=K) / len(yb)

    def _predict_proba(self, X, sample_domain):
        K = len(self.classes_)
        Z = self._align(X, sample_domain)
        dist, idx = self._nn.kneighbors(Z)
        wts = 1.0 / (dist + 1e-6)
        p_graph = (self.label_distributions_[idx] * wts[..., None]).sum(axis=1)
        p_graph /= wts.sum(axis=1, keepdims=True)
        if self.base_ is None:
            p_base = np.tile(self._const, (len(X), 1))
        else:
            p_base = proba_full(self.base_, Z, K)
        p = self.graph_weight * p_graph + (1 - self.graph_weight) * p_base
        return p / p.sum(axis=1, keepdims=True)


class FeatureBridge(TransformerMixin, BaseEstimator):
    """Map heterogeneous feature sets: predict features the target lacks from shared ones.

    ``fit(X_source, X_target)`` finds the features observed in fewer than ``min_observed`` of
    the target rows (absent or rarely measured there) and, for each, fits a regressor on the
    source rows where it is measured, from the features the target does measure (median
    imputed). ``transform(X)`` fills the NaNs of those features with the predictions (observed
    values are kept).

    Parameters
    ----------
    min_observed : float, default=0.5
        A feature observed in fewer than this fraction of target rows is bridged.
    estimator : regressor or None
        Default ``BayesianRidge``.

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> Xs = rng.normal(size=(100, 3)); Xs[:, 2] = Xs[:, 0] + 0.1 * rng.normal(size=100)
    >>> Xt = rng.normal(size=(50, 3)); Xt[:, 2] = np.nan
    >>> fb = FeatureBridge().fit(Xs, Xt)
    >>> fb.bridged_features_.tolist()
    [2]
    >>> bool(np.corrcoef(fb.transform(Xt)[:, 2], Xt[:, 0])[0, 1] > 0.9)
    True
    """

    def __init__(self, min_observed=0.5, estimator=None):
        self.min_observed = min_observed
        self.estimator = estimator

    def fit(self, X_source, X_target):
        from sklearn.base import clone
        from sklearn.linear_model import BayesianRidge

        Xs = np.asarray(X_source, dtype=float)
        Xt = np.asarray(X_target, dtype=float)
        obs_t = (~np.isnan(Xt)).mean(axis=0) if len(Xt) else np.ones(Xs.shape[1])
        obs_s = (~np.isnan(Xs)).sum(axis=0)
        bridged = np.flatnonzero((obs_t < self.min_observed) & (obs_s >= 5))
        shared = np.flatnonzero(obs_t >= self.min_observed)
        self.bridged_features_ = bridged
        self.shared_features_ = shared
        self.models_ = {}
        if len(shared) == 0:
            self.bridged_features_ = np.array([], dtype=int)
            return self
        self.imputer_ = SimpleImputer(strategy="median", keep_empty_features=True).fit(
            np.vstack([Xs[:, shared], Xt[:, shared]])
        )
        S = self.imputer_.transform(Xs[:, shared])
        for j in bridged:
            rows = ~np.isnan(Xs[:, j])
            est = BayesianRidge() if self.estimator is None else clone(self.estimator)
            self.models_[int(j)] = est.fit(S[rows], Xs[rows, j])
        return self

    def transform(self, X):
        X = np.array(X, dtype=float, copy=True)
        if not self.models_:
            return X
        S = self.imputer_.transform(X[:, self.shared_features_])
        for j, est in self.models_.items():
            miss = np.isnan(X[:, j])
            if miss.any():
                X[miss, j] = est.predict(S[miss])
        return X


class RelationImputation(TransferClassifier):
    """Impute what the target lacks from feature relations learned where they are measured.

    1. :class:`FeatureBridge`: features absent or rarely measured at the target are predicted
       from the features the target does measure, by regressors fitted on the source rows.
    2. ``IterativeImputer`` (``BayesianRidge`` by default, or ``ExtraTrees``) fitted on the
       source + target rows fills the remaining NaNs from the other features.
    3. The classifier (``base``) is trained on the imputed labelled rows.

    Sees the real NaNs (``handles_nan = True``), not the medians other methods get. On the
    synthetic ``missing_feature`` shift (the most predictive feature missing at 90% of target
    rows but correlated with two others) it beats median-imputed source-only models.

    Parameters
    ----------
    base : {"lr", "gbm"}, default="lr"
    imputer : {"bayes", "trees"}, default="bayes"
    min_observed : float, default=0.5
        See :class:`FeatureBridge`.
    imputer_max_iter : int or None, default=None
        ``IterativeImputer`` rounds (None: 10 with "bayes", 3 with "trees").
    random_state : int or None

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("missing_feature", n_source=200, n_target=100, random_state=0)
    >>> m = RelationImputation().fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
    >>> m.bridge_.bridged_features_.tolist()
    [0]
    """

    family = "relation"
    uses_target = "both"
    handles_nan = True

    def __init__(self, base="lr", imputer="bayes", min_observed=0.5, imputer_max_iter=None,
                 random_state=None):
        self.base = base
        self.imputer = imputer
        self.min_observed = min_observed
        self.imputer_max_iter = imputer_max_iter
        self.random_state = random_state

    def _make_imputer(self):
        from sklearn.experimental import enable_iterative_imputer  # noqa: F401
        from sklearn.impute import IterativeImputer
        from sklearn.linear_model import BayesianRidge

        if self.imputer == "bayes":
            est = BayesianRidge()
        elif self.imputer == "trees":
            from sklearn.ensemble import ExtraTreesRegressor

            est = ExtraTreesRegressor(n_estimators=8, max_depth=5, min_samples_leaf=5,
                                      max_features=0.5, n_jobs=1, random_state=self.random_state)
        else:
            raise ValueError(f"imputer must be 'bayes' or 'trees', got {self.imputer!r}")
        max_iter = self.imputer_max_iter
        if max_iter is None:
            max_iter = 10 if self.imputer == "bayes" else 3
        # trees: each round fits one forest per incomplete feature, so look at 10 features
        nearest = 10 if self.imputer == "trees" else None
        return IterativeImputer(estimator=est, max_iter=max_iter, tol=1e-3,
                                n_nearest_features=nearest,
                                keep_empty_features=True, random_state=self.random_state)

    def _transform(self, X):
        X = self.bridge_.transform(X)
        if self.imputer_ is not None:
            X = self.imputer_.transform(X)
        return X

    def _fit(self, split):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        self.bridge_ = FeatureBridge(min_observed=self.min_observed).fit(split.Xs, split.Xt)
        pool = self.bridge_.transform(np.vstack([split.Xs, split.Xt]))
        self.imputer_ = None
        if np.isnan(pool).any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                self.imputer_ = self._make_imputer().fit(pool)
        X = self._transform(split.X_labelled)
        y = split.y_labelled
        w = None if split.ws is None else np.r_[split.ws, split.wtl]
        self.estimator_ = make_base_estimator(self.base, self.random_state)
        if len(np.unique(y)) < 2:
            self.estimator_ = None
            self._const = np.bincount(y, minlength=split.n_classes) / len(y)
            return
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if self.base == "lr":
            self.estimator_ = make_pipeline(StandardScaler(), self.estimator_)
            self.estimator_.fit(X, y, standardscaler__sample_weight=w,
                                logisticregression__sample_weight=w)
        else:
            self.estimator_.fit(X, y, sample_weight=w)

    def _predict_proba(self, X, sample_domain):
        if self.estimator_ is None:
            return np.tile(self._const, (len(X), 1))
        return proba_full(self.estimator_, self._transform(X), len(self.classes_))


def _mk(cls, random_state=None, **params):
    return cls(random_state=random_state, **params)


METHODS = [
    MethodSpec("graph_label_propagation", "relation", partial(_mk, GraphLabelPropagation),
               "both", "kNN-graph label spreading from source (+ labelled target) rows to the "
               "target in a per-site standardised space, blended with a base classifier.",
               max_rows=20000,
               grid=({"n_neighbors": 5}, {"n_neighbors": 10}, {"n_neighbors": 20})),
    MethodSpec("relation_imputation_lr", "relation",
               partial(_mk, RelationImputation, base="lr"), "both",
               "Impute features the target lacks from relations learned at the source "
               "(feature bridge + iterative imputer), then logistic regression."),
    MethodSpec("relation_imputation_gbm", "relation",
               partial(_mk, RelationImputation, base="gbm"), "both",
               "Impute features the target lacks from relations learned at the source "
               "(feature bridge + iterative imputer), then gradient boosting.",
               grid=({"imputer": "bayes"}, {"imputer": "trees"})),
]
