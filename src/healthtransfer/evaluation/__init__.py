"""Evaluation on held-out target rows: metrics, bootstrap CIs, summaries."""

from .metrics import (
    BINARY_METRICS,
    LOWER_IS_BETTER,
    MULTICLASS_METRICS,
    expected_calibration_error,
    fast_bootstrap_ci,
    score,
    target_sample_ci,
)

__all__ = ["BINARY_METRICS", "LOWER_IS_BETTER", "MULTICLASS_METRICS", "expected_calibration_error", "fast_bootstrap_ci", "score", "target_sample_ci"]
