"""Registry entries for the baselines (kept apart so `baselines.py` stays import-light)."""

from functools import partial

from ._spec import MethodSpec
from .baselines import Pooled, SourceOnly, TargetOnly, make_base_estimator


def _mk(cls, kind, random_state=None):
    return cls(estimator=make_base_estimator(kind, random_state), random_state=random_state)


METHODS = [
    MethodSpec("source_lr", "baseline", partial(_mk, SourceOnly, "lr"), "none",
               "Logistic regression trained on the source sites only."),
    MethodSpec("source_gbm", "baseline", partial(_mk, SourceOnly, "gbm"), "none",
               "Gradient boosting trained on the source sites only."),
    MethodSpec("target_lr", "baseline", partial(_mk, TargetOnly, "lr"), "labelled",
               "Logistic regression trained on the labelled target rows only.", needs_labels=True),
    MethodSpec("target_gbm", "baseline", partial(_mk, TargetOnly, "gbm"), "labelled",
               "Gradient boosting trained on the labelled target rows only.", needs_labels=True),
    MethodSpec("pooled_lr", "baseline", partial(_mk, Pooled, "lr"), "labelled",
               "Logistic regression on source + labelled target rows.", needs_labels=True),
    MethodSpec("pooled_gbm", "baseline", partial(_mk, Pooled, "gbm"), "labelled",
               "Gradient boosting on source + labelled target rows.", needs_labels=True),
]
