"""The estimator contract every transfer method follows.

All methods are scikit-learn classifiers that also take skada's domain convention:
``fit(X, y, sample_domain=...)`` where source domains are >= 1, target domains <= -1 and
unlabelled target rows carry ``y = -1``. Without ``sample_domain`` every row is treated as a
labelled source row, so a method degrades to its source-only behaviour and passes the
scikit-learn estimator checks. At prediction time a missing ``sample_domain`` means "target".

Subclasses implement ``_fit(split)`` and ``_predict_proba(X, sample_domain)``; the base class
does the validation, the label encoding and the source/target bookkeeping once for everyone.

Example
-------
>>> import numpy as np
>>> from healthtransfer.methods._base import split_domains
>>> X = np.zeros((4, 2)); y = np.array([0, 1, -1, 1]); d = np.array([1, 1, -1, -1])
>>> s = split_domains(X, y, d)
>>> s.Xs.shape, s.Xt.shape, s.Xtl.shape
((2, 2), (2, 2), (1, 2))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

__all__ = ["DomainSplit", "TransferClassifier", "proba_full", "split_domains", "UNLABELLED"]

UNLABELLED = -1


def proba_full(est, X, n_classes: int, **predict_params) -> np.ndarray:
    """``est.predict_proba(X, **predict_params)`` with the columns of classes ``est`` never saw
    put back at 0 (``predict_params``: e.g. ``sample_domain=`` for a domain-aware method).

    ``est`` was fitted on encoded labels 0..n_classes-1 (a fold or a labelled subset may miss
    a class); every method and the selection criteria use this one helper.

    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> est = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 2])
    >>> proba_full(est, np.array([[0.5]]), 3).shape
    (1, 3)
    """
    p = np.asarray(est.predict_proba(X, **predict_params), float)
    if p.shape[1] == n_classes:  # every class seen: already in label order
        return p
    out = np.zeros((X.shape[0], n_classes))
    out[:, np.asarray(est.classes_).astype(int)] = p
    return out


@dataclass
class DomainSplit:
    """Rows of one ``fit`` call, sorted by role.

    ``ys`` and ``ytl`` are label-encoded (0..n_classes-1). ``Xt`` holds every target row,
    labelled or not; ``Xtl``/``ytl`` only the labelled ones.
    """

    Xs: np.ndarray
    ys: np.ndarray
    ds: np.ndarray  # source domain id per source row (>= 1)
    Xt: np.ndarray
    Xtl: np.ndarray
    ytl: np.ndarray
    n_classes: int
    ws: np.ndarray | None = None  # sample_weight of source rows, if given
    wtl: np.ndarray | None = None  # sample_weight of labelled target rows, if given

    @property
    def source_domains(self) -> np.ndarray:
        return np.unique(self.ds)

    @property
    def X_labelled(self) -> np.ndarray:
        return np.vstack([self.Xs, self.Xtl])

    @property
    def y_labelled(self) -> np.ndarray:
        return np.concatenate([self.ys, self.ytl])


def split_domains(X, y, sample_domain=None, classes=None, sample_weight=None) -> DomainSplit:
    """Split rows into source, target and labelled-target parts.

    ``y`` may be raw labels; if ``classes`` is given, labels are encoded against it (rows with
    ``y == -1`` in a target domain stay unlabelled).
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y)
    n = X.shape[0]
    if sample_domain is None:
        sample_domain = np.ones(n, dtype=int)
    sample_domain = np.asarray(sample_domain).astype(int)
    if sample_domain.shape != (n,):
        raise ValueError(
            f"sample_domain has shape {sample_domain.shape}, expected ({n},): one domain id per "
            "row of X (sources >= 1, targets <= -1)."
        )
    if np.any(sample_domain == 0):
        raise ValueError("sample_domain contains 0; use ids >= 1 for sources and <= -1 for targets.")
    src = sample_domain > 0
    tgt = ~src
    unl = tgt & _is_unlabelled(y)
    tl = tgt & ~unl
    if classes is not None:
        enc = {c: i for i, c in enumerate(classes)}
        code = np.full(n, -1, dtype=int)
        keep = src | tl
        code[keep] = [enc[v] for v in y[keep]]
    else:
        code = y.astype(int)
    n_classes = len(classes) if classes is not None else int(code[src | tl].max()) + 1
    return DomainSplit(
        Xs=X[src],
        ys=code[src],
        ds=sample_domain[src],
        Xt=X[tgt],
        Xtl=X[tl],
        ytl=code[tl],
        n_classes=n_classes,
        ws=None if sample_weight is None else np.asarray(sample_weight, float)[src],
        wtl=None if sample_weight is None else np.asarray(sample_weight, float)[tl],
    )


def _is_unlabelled(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind in "iuf":
        return y == UNLABELLED
    return np.array([v == UNLABELLED or v == str(UNLABELLED) for v in y], dtype=bool)


# Above this many rows the imputer's medians come from a uniform sample: scikit-learn's median
# sorts a masked copy of the whole matrix (4.7 s of an 8.7 s fit at 200k x 60; minutes at 2M).
IMPUTER_SAMPLE_ROWS = 200_000


def _fit_imputer(X: np.ndarray, max_rows: int = IMPUTER_SAMPLE_ROWS) -> SimpleImputer:
    """Median imputer with missingness indicators, fitted on ``X`` or on a sample of it.

    The sample is ``max_rows`` uniform rows plus, for every column missing anywhere in ``X``,
    one row where it is missing, so the indicator columns are exactly those of a full fit.
    """
    imp = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
    if len(X) <= max_rows:
        return imp.fit(X)
    missing = np.isnan(X)
    cols = np.flatnonzero(missing.any(axis=0))
    # without any missing value the medians only serve rows that are missing at predict time
    size = max_rows if len(cols) else min(max_rows, 20_000)
    rows = np.random.default_rng(0).choice(len(X), size, replace=False)
    first_missing = missing[:, cols].argmax(axis=0)
    return imp.fit(X[np.unique(np.r_[rows, first_missing])])


def _impute(imputer: SimpleImputer | None, X: np.ndarray) -> np.ndarray:
    """``imputer.transform(X)``, skipped (no copy) when it would return ``X`` unchanged: no
    indicator columns and nothing missing (e.g. a study's preprocessed matrices)."""
    if imputer is None:
        return X
    indicator = getattr(imputer, "indicator_", None)
    if (indicator is None or len(indicator.features_) == 0) and not np.isnan(X).any():
        return X
    return imputer.transform(X)


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """Base class: validation, label encoding and domain bookkeeping.

    Class attributes describe the method for the registry and the report:

    - ``family``: ``baseline``, ``instance``, ``feature``, ``model`` or ``relation``;
    - ``uses_target``: which target information ``fit`` uses: ``"none"``, ``"unlabelled"``
      (the target rows' features), ``"labelled"`` (the n_t labelled rows) or ``"both"``.
    """

    family: ClassVar[str] = "baseline"
    uses_target: ClassVar[str] = "none"
    # Methods that cope with NaN themselves (e.g. histogram gradient boosting) set this; for
    # the others the base class imputes medians and adds missingness indicators, fitted on the
    # rows given to ``fit`` (source + target pool, never test rows).
    handles_nan: ClassVar[bool] = False

    # -- public API ---------------------------------------------------------------------
    def fit(self, X, y, *, sample_domain=None, sample_weight=None):
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=float)
        y = np.asarray(y)
        if sample_domain is None:
            sample_domain = np.ones(X.shape[0], dtype=int)
        sample_domain = np.asarray(sample_domain).astype(int)
        labelled = (sample_domain > 0) | ~_is_unlabelled(y)
        check_classification_targets(y[labelled])
        self._label_encoder = LabelEncoder().fit(y[labelled])
        self.classes_ = self._label_encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in the labelled rows; got "
                f"{len(self.classes_)} class. Check the label column and the source sites."
            )
        self._imputer = None
        if not self.handles_nan:
            self._imputer = _fit_imputer(X)
            X = _impute(self._imputer, X)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        split = split_domains(
            X, y, sample_domain, classes=self.classes_, sample_weight=sample_weight
        )
        if split.Xs.shape[0] == 0:
            raise ValueError(
                "no source rows: give at least one row with sample_domain >= 1 (labelled source)."
            )
        self._fit(split)
        return self

    def predict_proba(self, X, *, sample_domain=None):
        check_is_fitted(self, "classes_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=float)
        X = _impute(self._imputer, X)
        if sample_domain is None:
            sample_domain = -np.ones(X.shape[0], dtype=int)
        proba = np.asarray(self._predict_proba(X, np.asarray(sample_domain).astype(int)))
        return proba

    def predict(self, X, *, sample_domain=None):
        proba = self.predict_proba(X, sample_domain=sample_domain)
        return self.classes_[np.argmax(proba, axis=1)]

    def decision_function(self, X, *, sample_domain=None):
        proba = self.predict_proba(X, sample_domain=sample_domain)
        if proba.shape[1] == 2:
            p = np.clip(proba[:, 1], 1e-12, 1 - 1e-12)
            return np.log(p / (1 - p))
        return np.log(np.clip(proba, 1e-12, None))

    # -- for subclasses -----------------------------------------------------------------
    def _fit(self, split: DomainSplit) -> None:  # pragma: no cover
        raise NotImplementedError

    def _predict_proba(self, X: np.ndarray, sample_domain: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
