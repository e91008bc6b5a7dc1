"""Keep patient values out of the server log.

Exception messages and tracebacks may quote request values (a parser quoting its input, a
model quoting a feature), so :class:`RedactFilter` replaces any record's exception with its
type name and drops the traceback; the service's own log lines carry only ids, routes,
status codes and timings. :func:`install` puts the filter on the loggers and handlers of the
service, uvicorn, FastAPI/Starlette and the root logger.

Example
-------
>>> import logging
>>> rec = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1,
...                         "Exception in ASGI application", None, None)
>>> try:
...     raise ValueError("chol=287.625")
... except ValueError:
...     import sys; rec.exc_info = sys.exc_info()
>>> RedactFilter().filter(rec) and rec.getMessage()
'Exception in ASGI application [ValueError; details withheld from the log]'
>>> rec.exc_info is None
True
"""

from __future__ import annotations

import logging

__all__ = ["RedactFilter", "install", "LOGGERS"]

LOGGERS = ("", "healthtransfer", "healthtransfer.serve", "uvicorn", "uvicorn.error",
           "uvicorn.access", "fastapi", "starlette")


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info or record.exc_text or record.stack_info:
            exc = record.exc_info[1] if record.exc_info and record.exc_info[1] else None
            kind = type(exc).__name__ if exc is not None else "exception"
            record.msg = f"{record.getMessage().rstrip()} [{kind}; details withheld from the log]"
            record.args = None
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


_FILTER = RedactFilter()


def install() -> RedactFilter:
    """Add the filter to the named loggers and to every handler they have (idempotent)."""
    for name in LOGGERS:
        lg = logging.getLogger(name)
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)
        for h in lg.handlers:
            if _FILTER not in h.filters:
                h.addFilter(_FILTER)
    return _FILTER
