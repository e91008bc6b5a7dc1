"""Transfer methods from the four families, plus the baselines.

Every method is a scikit-learn classifier taking skada's ``sample_domain`` convention; see
:mod:`healthtransfer.methods._base`. ``available_methods()`` lists them by name.
"""

from ._base import DomainSplit, TransferClassifier, split_domains
from ._registry import MethodSpec, available_methods, get_method, make_method
from .baselines import Pooled, SourceOnly, TargetOnly, make_base_estimator

__all__ = [
    "DomainSplit",
    "MethodSpec",
    "Pooled",
    "SourceOnly",
    "TargetOnly",
    "TransferClassifier",
    "available_methods",
    "get_method",
    "make_base_estimator",
    "make_method",
    "split_domains",
]
