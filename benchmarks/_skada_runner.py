"""skada's DA pipelines for the benchmarks: each ends in ``LogisticRegression`` and is fitted on the
very matrices our methods see (:func:`_units.unit_context`). skada masks target labels
(``mask_target_labels=True``), so a pipeline is fitted once per unit and scored at every budget.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

# name -> (builder(seed, n_classes), max_rows). Built inside functions only: importing skada
# flips scikit-learn's metadata routing globally.
SKADA_DEFAULT = [
    "SourceOnly", "CORAL", "SubspaceAlignment", "TCA", "LinearOTMapping", "OTMapping",
    "EntropicOTMapping", "KMM", "KLIEP", "DiscriminatorReweight", "DensityReweight",
    "GaussianReweight", "JDOT",
]
SKADA_MAX_ROWS = {"TCA": 1500, "KMM": 3000, "KLIEP": 8000, "OTMapping": 8000, "EntropicOTMapping": 8000,
                  "JDOT": 3000}



def _import_skada():
    import sklearn

    prev = sklearn.get_config()
    try:
        import skada  # noqa: F401  (flips metadata routing on import)
    finally:
        sklearn.set_config(**prev)
    import skada

    return skada


def make_skada(name: str, seed: int, n_classes: int, n_features: int):
    """A skada DA pipeline ending in LogisticRegression. Must be called with metadata routing on."""
    from sklearn.linear_model import LogisticRegression

    skada = _import_skada()
    lr = LogisticRegression(C=1.0, max_iter=2000)
    lr_w = LogisticRegression(C=1.0, max_iter=2000).set_fit_request(sample_weight=True)
    mk = skada.make_da_pipeline
    k = max(1, min(n_features - 1, 10))
    if name == "SourceOnly":
        return mk(lr)
    if name == "CORAL":
        return mk(skada.CORALAdapter(), lr)
    if name == "SubspaceAlignment":
        return mk(skada.SubspaceAlignmentAdapter(n_components=k, random_state=seed), lr)
    if name == "TCA":
        return mk(skada.TransferComponentAnalysisAdapter(n_components=k), lr)
    if name == "LinearOTMapping":
        return mk(skada.LinearOTMappingAdapter(), lr)
    if name == "OTMapping":
        return mk(skada.OTMappingAdapter(), lr)
    if name == "EntropicOTMapping":
        return mk(skada.EntropicOTMappingAdapter(reg_e=1.0), lr)
    if name == "KMM":
        return mk(skada.KMMReweightAdapter(gamma=1.0 / n_features), lr_w)
    if name == "KLIEP":
        return mk(skada.KLIEPReweightAdapter(gamma=[0.1 / n_features, 1.0 / n_features, 10.0 / n_features],
                                             random_state=seed), lr_w)
    if name == "DiscriminatorReweight":
        return mk(skada.DiscriminatorReweightAdapter(), lr_w)
    if name == "DensityReweight":
        return mk(skada.DensityReweightAdapter(), lr_w)
    if name == "GaussianReweight":
        return mk(skada.GaussianReweightAdapter(), lr_w)
    if name == "JDOT":
        return skada.JDOTClassifier(base_estimator=LogisticRegression(C=1.0, max_iter=2000),
                                    metric="multinomial")
    raise ValueError(f"unknown skada method {name!r}")


def run_skada(ctx, names: list[str]) -> list[tuple[str, np.ndarray | None, float, str]]:
    """Fit each skada pipeline once on (source labelled, whole pool unlabelled); return
    (name, test proba or None, fit seconds, error)."""
    import sklearn

    X = np.vstack([ctx.Xs, ctx.Xp])
    y = np.r_[ctx.ys, -np.ones(len(ctx.Xp), int)]
    sd = np.r_[np.ones(len(ctx.Xs), int), -np.ones(len(ctx.Xp), int)]
    out = []
    for name in names:
        if name in SKADA_MAX_ROWS and len(X) > SKADA_MAX_ROWS[name]:
            out.append((name, None, 0.0, f"skipped: more than {SKADA_MAX_ROWS[name]} rows"))
            continue
        try:
            with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est = make_skada(name, ctx.seed, ctx.n_classes, X.shape[1])
                t0 = time.perf_counter()
                est.fit(X, y.copy(), sample_domain=sd)
                fit_s = time.perf_counter() - t0
                p = est.predict_proba(ctx.Xte, sample_domain=-np.ones(len(ctx.Xte), int))
            p = np.asarray(p, float)
            if p.shape[1] != ctx.n_classes:  # a class absent from training: put it back at 0
                full = np.zeros((len(p), ctx.n_classes))
                full[:, est.classes_.astype(int)] = p
                p = full
            if not np.all(np.isfinite(p)):
                raise FloatingPointError("non-finite probabilities")
            out.append((name, p, fit_s, ""))
        except Exception as exc:  # a failing baseline is a result, not a crash
            out.append((name, None, 0.0, f"{type(exc).__name__}: {str(exc)[:200]}"))
    return out
