"""The ``healthtransfer`` command line, one module per concern.

``_app`` holds the typer app, ``--debug``, the error guard and ``main``; the commands register on
it when their module is imported, in the order ``healthtransfer --help`` lists them: ``_study``
(demo, run, methods), ``_data`` (data inspect), ``_diagnose``, ``_service`` (serve, keys, audit,
bundle) and ``_federate``. ``healthtransfer.cli`` re-exports what scripts and tests use.
"""

from __future__ import annotations

from . import _study  # noqa: F401  (registration order = the order of `--help`)
from . import _data  # noqa: F401
from . import _diagnose  # noqa: F401
from . import _service  # noqa: F401
from . import _federate  # noqa: F401
from ._app import app, main, rerun_command, route

__all__ = ["app", "main", "rerun_command", "route"]
