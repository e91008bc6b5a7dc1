"""The command line: one command per job; ``healthtransfer demo`` runs the whole flow.

The commands live in :mod:`healthtransfer._cli` (one module per concern); this module is the
console-script entry point (``healthtransfer.cli:main``) and re-exports what scripts and tests use.
"""

from __future__ import annotations

from ._cli import app, main, rerun_command, route
from ._cli._app import _state  # noqa: F401  (tests reset --debug through it)
from ._cli._study import _execute  # noqa: F401  (benchmarks/study_speed.py times it)
from ._cli._study import demo_study, format_methods, format_summary, summary_tables

__all__ = ["app", "main", "rerun_command", "route", "demo_study", "format_methods", "format_summary",
           "summary_tables"]

if __name__ == "__main__":
    main()
