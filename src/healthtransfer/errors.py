"""One error type for everything a user can get wrong.

Messages follow one shape: where (file, site, column or key), what was wrong, what was
expected, and how to fix it. They never contain patient values: only names and counts.

Example
-------
>>> err = UserInputError("is not numeric", where="column 'chol' at site 'va'",
...                      fix="declare it in `categorical` or clean the export")
>>> str(err)
"column 'chol' at site 'va': is not numeric. Fix: declare it in `categorical` or clean the export."
"""

from __future__ import annotations

__all__ = ["HealthTransferError", "UserInputError"]


class HealthTransferError(Exception):
    """Base class of every error healthtransfer raises on purpose."""


class UserInputError(HealthTransferError, ValueError):
    """Bad input: a file, a study key, a column, a site. The CLI prints it without traceback."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        msg = f"{where}: {what}" if where else what
        if fix:
            msg = f"{msg}. Fix: {fix.rstrip('.')}."
        super().__init__(msg)
