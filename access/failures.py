"""Log an unexpected exception without patient data above DEBUG.

Exception texts and tracebacks can quote what was being processed (a name in a header,
an identifier in a query), so the exception's type goes to ERROR and its text and
traceback only to DEBUG. Call from inside an `except` block.
"""

from __future__ import annotations

import logging
import sys


def log_failure(logger: logging.Logger, message: str, *args: object) -> None:
    error = sys.exc_info()[1]
    kind = type(error).__name__ if error is not None else "error"
    logger.error(message + " (%s)", *args, kind)
    logger.debug("details of: " + message, *args, exc_info=True)
