import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from healthtransfer.data.synthetic import make_shifted_domains
from healthtransfer.methods import make_method
from healthtransfer.methods.feature import (
    CORAL,
    METHODS,
    TCA,
    DomainStandardization,
    FeatureAugmentation,
    OTMapping,
    SubspaceAlignment,
)


@parametrize_with_checks(
    [DomainStandardization(), CORAL(), SubspaceAlignment(), TCA(), OTMapping(),
     FeatureAugmentation()]
)
def test_sklearn_contract(estimator, check):
    check(estimator)
