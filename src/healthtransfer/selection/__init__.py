"""Model selection without target test labels: criteria and the selection rule."""

from ._criteria import OOF, dev_risk, entropy, importance_weights
from ._explain import explanation_html
from ._select import Candidate, Selection, expand_candidates, recalibration_evidence, select

__all__ = ["OOF", "Candidate", "Selection", "dev_risk", "entropy", "expand_candidates", "explanation_html",
           "importance_weights", "recalibration_evidence", "select"]
