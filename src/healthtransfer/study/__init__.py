"""A study end to end: config, data, splits, methods, evaluation and the report."""

from .config import DEFAULT_METHODS, Study, load_study

__all__ = ["DEFAULT_METHODS", "Study", "load_study"]
