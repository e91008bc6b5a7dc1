import numpy as np
import pytest
import sklearn
from sklearn.utils.estimator_checks import parametrize_with_checks

from healthtransfer.data.synthetic import make_shifted_domains
from healthtransfer.methods import make_method
from healthtransfer.methods.instance import (
    KLIEPIW,
    KMMIW,
    METHODS,
    DomainClassifierIW,
    LabelShiftEM,
    TrAdaBoost,
    em_prior,
)


@parametrize_with_checks(
    [DomainClassifierIW(), KMMIW(), KLIEPIW(random_state=0), TrAdaBoost(n_estimators=4),
     LabelShiftEM(), LabelShiftEM(method="bbse")]
)
def test_sklearn_contract(estimator, check):
    check(estimator)
