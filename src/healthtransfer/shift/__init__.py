"""Shift diagnostics: how a target site differs from its source sites, before any transfer.

:func:`diagnose` measures, for one target and its sources:

1. per feature and (source, target) pair: standardised mean difference (numeric) or Cramér's V
   (categorical), a KS / chi-square test with Benjamini–Hochberg q-values, missingness at each
   site, features never measured at a site;
2. whole-table shift: a domain-classifier two-sample test (cross-validated AUROC with a
   permutation p-value) and a Gaussian-kernel MMD permutation test;
3. label shift: the target's class prior estimated by EM from a source-trained classifier
   applied to the target's UNLABELLED rows, with a bootstrap CI (BBSE beside it);
4. the effective sample size of domain-classifier importance weights;
5. a plain-language summary (thresholds in :data:`THRESHOLDS`), an HTML report section and a
   terminal rendering.

Example
-------
>>> from healthtransfer.data import load_dataset
>>> rep = diagnose(load_dataset("uci_heart"), ["cleveland"], "va", n_permutations=20)
>>> rep.domain_classifier["auroc"] > 0.8
True
>>> rep.sections()[0].title
'Shift diagnostics'
"""

from ._diagnose import diagnose, diagnose_study_cli
from ._features import bh_adjust, feature_shift
from ._label import em_prior, estimate_label_shift
from ._report import ShiftReport
from ._summary import THRESHOLDS
from ._tests import domain_classifier_test, importance_ess, mmd_test

__all__ = [
    "diagnose",
    "diagnose_study_cli",
    "ShiftReport",
    "THRESHOLDS",
    "feature_shift",
    "bh_adjust",
    "domain_classifier_test",
    "mmd_test",
    "importance_ess",
    "estimate_label_shift",
    "em_prior",
]
