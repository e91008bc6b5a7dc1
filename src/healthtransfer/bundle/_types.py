"""The exact types and functions a bundle's skops files may name: a reviewed whitelist.

A bundle travels between sites, so loading one is loading untrusted input. skops constructs
only what it is told to trust; this list is that trust, name by name. It was made by writing
the preprocessor and every registered method to skops (``tests/bundle/test_malicious.py``
re-checks that every registered method still fits inside it), then reviewed: no entry
reads or writes files, runs code or opens connections when constructed or called the way a
fitted estimator calls it. A new method whose bundle needs a new type fails that test; add
the type here only after the same review. Module prefixes are never enough: ``sklearn.``
alone contains ``sklearn.datasets.dump_svmlight_file``, which writes any file it is given.

Example
-------
>>> "sklearn.linear_model._logistic.LogisticRegression" in TRUSTED_TYPES
True
>>> "sklearn.datasets._svmlight_format_io.dump_svmlight_file" in TRUSTED_NAMES
False
"""

from __future__ import annotations

__all__ = ["TRUSTED_FUNCTIONS", "TRUSTED_NAMES", "TRUSTED_TYPES"]

# Containers and scalars skops writes for any object.
_PRIMITIVES = {
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.slice",
    "builtins.int", "builtins.float", "builtins.bool", "builtins.NoneType",
    "numpy.dtype", "numpy.ndarray", "numpy.float64", "numpy.float32", "numpy.int64",
    "numpy.int32", "numpy.uint64", "numpy.uint8", "numpy.bool_",
    "numpy.random._generator.Generator",
}

_SKLEARN = {
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.pipeline.Pipeline", "sklearn.pipeline.FeatureUnion",
    "sklearn.impute._base.SimpleImputer", "sklearn.impute._base.MissingIndicator",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._stochastic_gradient.SGDClassifier",
    "sklearn.neighbors._unsupervised.NearestNeighbors",
    "sklearn.tree._classes.DecisionTreeRegressor", "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss.link.Interval", "sklearn._loss.link.LogitLink",
    "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss._loss.CyHalfBinomialLoss",
    # probability calibration of the final model (study.final)
    "sklearn.calibration.CalibratedClassifierCV", "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration", "sklearn.isotonic.IsotonicRegression",
    "sklearn.frozen._frozen.FrozenEstimator",
}

# POT / skada objects kept inside the optimal-transport and TCA methods.
_THIRD_PARTY = {
    "ot.backend.NumpyBackend", "ot.da.EMDTransport",
    "skada._mapping.OTMappingAdapter", "skada._subspace.TransferComponentAnalysisAdapter",
}

_HEALTHTRANSFER = {f"healthtransfer.methods.{n}" for n in (
    "baselines.Pooled", "baselines.SourceOnly", "baselines.TargetOnly",
    "deep.DANN", "deep.DeepCORAL", "deep.FineTuneMLP", "deep.JointMMD",
    "deep.JointMMDMinibatch", "deep.MLPSource",
    "feature.CORAL", "feature.DomainStandardization", "feature.FeatureAugmentation",
    "feature.OTMapping", "feature.SubspaceAlignment", "feature.TCA",
    "instance.DomainClassifierIW", "instance.KLIEPIW", "instance.KMMIW", "_label_shift_em.LabelShiftEM",
    "instance.TrAdaBoost",
    "model.ContinuedBoosting", "model.LinearPriorTransfer", "model.Recalibration",
    "_reference.ReferenceBoosting", "_reference.ReferenceRecalibration", "_reference.ReferenceStacking",
    "model.Stacking", "_reference._LocalFallback", "_linear._SourceLinear",
    "multisource.SourceMixture", "multisource.SourceWeighting",
    "relation.FeatureBridge", "relation.GraphLabelPropagation", "relation.RelationImputation",
    "_scalable_weights.ChunkedDomainIW", "_scalable_features.MinibatchOT", "_scalable_weights.NystroemKLIEP",
    "_scalable_weights.NystroemKMM", "_scalable_features.NystroemTCA", "_scalable_features.StreamedCORAL",
    "_chunked._Nystroem",
)}

# The shipped model's wrappers (issue 14): the fitted estimator with its calibration map, and
# the preprocessing that appends a declared reference score. Each was read: arithmetic on the
# arrays they are given, no I/O.
_SHIPPED = {
    "healthtransfer.study._shipped.ShippedModel", "healthtransfer.study._shipped.ReferenceScoreInput",
    "healthtransfer.evaluation.calibration.Recalibrator", "healthtransfer.evaluation.calibration.PriorShift",
}

TRUSTED_TYPES: frozenset[str] = frozenset(_PRIMITIVES | _SKLEARN | _THIRD_PARTY | _HEALTHTRANSFER | _SHIPPED)

# Functions a bundle may hold as a value (FunctionTransformer(func=...), estimator parameters).
# Each was read: pure computation on the array it is given.
TRUSTED_FUNCTIONS: frozenset[str] = frozenset({
    "healthtransfer.data.preprocess._as_category_text",   # category codes -> text
    "ot.da.distribution_estimation_uniform",               # uniform sample weights
})

TRUSTED_NAMES: frozenset[str] = TRUSTED_TYPES | TRUSTED_FUNCTIONS
