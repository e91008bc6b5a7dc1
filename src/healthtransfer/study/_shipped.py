"""The two objects a bundle stores for a study's final model: what the run evaluated, as is.

:class:`ShippedModel` is the fitted transfer estimator scored as *target* rows
(``sample_domain = -1``, as the runner scores its test rows) followed by the calibration map the
selection step fitted; :class:`ReferenceScoreInput` is the fitted preprocessing plus an existing
clinical score (e.g. APACHE IV) appended as ``logit(score)``, the last column the
reference-score methods read. Both are plain attribute holders, so ``skops`` stores them
without pickle (``healthtransfer.`` is on the bundle's trusted list).

Example
-------
>>> import numpy as np
>>> from healthtransfer.evaluation.calibration import PriorShift
>>> m = ShippedModel(None, PriorShift([0.5, 0.5], [0.8, 0.2]))
>>> m.calibrate(np.array([[0.5, 0.5]])).round(2).tolist()
[[0.8, 0.2]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import UserInputError
from ..evaluation.calibration import logit

__all__ = ["ReferenceScoreInput", "ShippedModel"]


class ShippedModel:
    """A fitted estimator and its calibration map (``None``: none), as one predictor."""

    def __init__(self, estimator, calibration=None):
        self.estimator = estimator
        self.calibration = calibration
        if estimator is not None:
            self.classes_ = estimator.classes_

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        """Binary class probabilities through the calibration map."""
        proba = np.asarray(proba, float)
        if self.calibration is None:
            return proba
        p1 = self.calibration.transform(proba[:, 1])
        return np.column_stack([1 - p1, p1])

    def predict_proba(self, X) -> np.ndarray:
        X = np.asarray(X, float)
        proba = self.estimator.predict_proba(X, sample_domain=-np.ones(len(X), int))
        return self.calibrate(proba)

    def predict(self, X) -> np.ndarray:
        return np.asarray(self.classes_)[self.predict_proba(X).argmax(axis=1)]


class ReferenceScoreInput:
    """The fitted preprocessing of the features, then ``logit(score)`` as the last column.

    A record without the score is refused (the model was fitted and evaluated on rows that
    have it; a silent fallback would be a different, unevaluated model).
    """

    def __init__(self, preprocessor, column: str):
        self.preprocessor = preprocessor
        self.column = column
        self.feature_names_in_ = np.array([*map(str, preprocessor.feature_names_in_), column], dtype=object)

    @property
    def transformers_(self):  # the bundle schema reads which inputs are categorical
        return self.preprocessor.transformers_

    def score_logit(self, score: np.ndarray) -> np.ndarray:
        """``logit(score)`` for scores in 0..1; a missing or out-of-range score is refused.
        (The compiled prediction path calls this too, so both paths refuse alike.)"""
        bad = ~np.isfinite(score) | (score < 0) | (score > 1)
        if bad.any():
            raise UserInputError(
                f"{int(bad.sum())} of {len(score)} record(s) lack the reference score '{self.column}' "
                "or give it outside 0..1", where="model input",
                fix=f"send '{self.column}' (a probability from 0 to 1) with every record; this model "
                "recalibrates that score and has no version without it")
        return logit(score)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        score = pd.to_numeric(frame[self.column], errors="coerce").to_numpy(float)
        z = self.score_logit(score)
        feats = [str(c) for c in self.preprocessor.feature_names_in_]
        return np.column_stack([np.asarray(self.preprocessor.transform(frame[feats]), float), z])
