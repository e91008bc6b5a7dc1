"""Registry entries for the deep methods, kept apart from :mod:`.deep` so that listing the
catalogue (or running a study without deep methods) never imports torch."""

from functools import partial

from ._spec import MethodSpec

def _mk(cls, random_state=None, **params):
    # torch is imported only when a deep method is built, not when the catalogue is listed
    from . import deep

    return getattr(deep, cls)(random_state=random_state, **params)


METHODS = [
    MethodSpec("mlp_source", "baseline", partial(_mk, "MLPSource"), "none",
               "MLP (64-32, dropout) trained on the source sites only: the deep reference.",
               deep=True),
    MethodSpec("joint_mmd", "feature", partial(_mk, "JointMMD"), "both",
               "MLP trained on source + labelled target cross-entropy plus a multi-kernel MMD "
               "between source and target embeddings (quadratic-time estimator).",
               deep=True, max_rows=20000,
               grid=tuple({"lambda_target": lt, "mu": mu}
                          for lt in (1.0, 5.0) for mu in (0.0, 0.5, 2.0)),
               skada_counterpart="skada.deep.DAN"),
    MethodSpec("joint_mmd_linear", "feature", partial(_mk, "JointMMD", mmd="linear"), "both",
               "As joint_mmd with the linear-time MMD estimator (Gretton et al. 2012).",
               deep=True,
               grid=tuple({"lambda_target": lt, "mu": mu}
                          for lt in (1.0, 5.0) for mu in (0.0, 0.5, 2.0)),
               skada_counterpart="skada.deep.DAN"),
    MethodSpec("dann", "feature", partial(_mk, "DANN"), "both",
               "Domain-adversarial MLP: gradient reversal against a source/target classifier; "
               "labelled target rows join the classification loss.",
               deep=True, grid=tuple({"mu": mu} for mu in (0.1, 0.5, 1.0)),
               skada_counterpart="skada.deep.DANN"),
    MethodSpec("deep_coral", "feature", partial(_mk, "DeepCORAL"), "both",
               "MLP with CORAL alignment of source and target embedding covariances; "
               "labelled target rows join the classification loss.",
               deep=True, grid=tuple({"mu": mu} for mu in (0.5, 1.0, 5.0)),
               skada_counterpart="skada.deep.DeepCoral"),
    MethodSpec("finetune_full", "model", partial(_mk, "FineTuneMLP", mode="full"), "labelled",
               "MLP pretrained on the sources, every layer fine-tuned on the labelled target "
               "rows.", needs_labels=True, deep=True,
               grid=tuple({"finetune_epochs": e} for e in (50, 100))),
    MethodSpec("finetune_last", "model", partial(_mk, "FineTuneMLP", mode="last_layer"),
               "labelled",
               "MLP pretrained on the sources, only the classifier head re-trained on the "
               "labelled target rows.", needs_labels=True, deep=True,
               grid=tuple({"finetune_epochs": e} for e in (50, 100))),
    MethodSpec("finetune_l2sp", "model", partial(_mk, "FineTuneMLP", mode="l2sp"), "labelled",
               "MLP pretrained on the sources, fine-tuned on the labelled target rows with an "
               "L2-SP penalty towards the source weights (Li et al. 2018).",
               needs_labels=True, deep=True,
               grid=tuple({"alpha": a} for a in (0.01, 0.1, 1.0))),
    MethodSpec("joint_mmd_minibatch", "feature", partial(_mk, "JointMMDMinibatch"), "both",
               "MLP with source + labelled target cross-entropy and a linear-time MMD over "
               "minibatches, with a step budget (scalable joint_mmd).", deep=True,
               grid=tuple({"lambda_target": lt, "mu": mu} for lt in (1.0, 5.0) for mu in (0.5, 2.0)),
               skada_counterpart="skada.deep.DAN"),
]
