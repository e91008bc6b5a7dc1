"""The ``healthtransfer`` application: the typer app, ``--debug``, the error guard every command
runs through, and the console-script entry point.

Errors a user can fix print as one paragraph (no traceback unless ``--debug``) and exit 2;
nothing half-written is left behind.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from ..errors import HealthTransferError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="healthtransfer: harmonise multi-site health data, measure shift, transfer models "
    "between sites and evaluate them honestly on held-out target data.",
)

_state: dict = {"debug": False, "argv": None}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, so a handler installed by
    one in-process invocation (tests, notebooks, CliRunner) never writes to a closed stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    _state["debug"] = debug
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        handlers=[_StderrHandler()], force=True)


def _fail(exc: BaseException, code: int) -> None:
    if _state["debug"]:
        raise exc
    msg = str(exc) if isinstance(exc, HealthTransferError) else (
        f"internal error ({type(exc).__name__}). For the traceback, run again as\n"
        f"  {rerun_command(_state['argv'])}\nand report it."
    )
    typer.echo(f"Error: {msg}", err=True)
    raise typer.Exit(code)


def _guard(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except HealthTransferError as exc:
        _fail(exc, 2)
    except (KeyboardInterrupt, typer.Exit):
        raise
    except Exception as exc:  # anything else is our bug: say so, hide internals unless --debug
        _fail(exc, 1)


def _width() -> int:
    import shutil

    return max(40, min(100, shutil.get_terminal_size((80, 24)).columns))


def rerun_command(argv: list[str] | None) -> str:
    """The command line to paste to see a traceback: the user's own, with ``--debug``.

    >>> rerun_command(["demo", "--out", "my demo"])
    "healthtransfer --debug demo --out 'my demo'"
    """
    import shlex

    args = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--debug"]
    return shlex.join(["healthtransfer", "--debug", *args])


def route(argv: list[str]) -> list[str]:
    """Normalise argv before typer sees it.

    ``--debug`` is accepted anywhere (``healthtransfer demo --debug`` as well as
    ``healthtransfer --debug demo``), and ``serve keys ...`` becomes ``serve-keys ...`` (see the
    comment at ``keys_app``).

    >>> route(["demo", "--debug"])
    ['--debug', 'demo']
    """
    if "--debug" in argv:
        stop = argv.index("--") if "--" in argv else len(argv)
        if "--debug" in argv[:stop]:
            argv = ["--debug", *[a for i, a in enumerate(argv) if not (a == "--debug" and i < stop)]]
    for i, a in enumerate(argv):
        if a == "serve" and argv[i + 1: i + 2] == ["keys"]:
            return argv[:i] + ["serve-keys"] + argv[i + 2:]
        if not a.startswith("-"):
            break
    return argv


def main() -> None:  # console-script entry point
    # Keep third-party chatter (joblib, torch) off a user's terminal unless --debug.
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    _state["argv"] = sys.argv[1:]
    try:
        app(args=route(sys.argv[1:]))
    except SystemExit as exc:
        sys.exit(exc.code)
