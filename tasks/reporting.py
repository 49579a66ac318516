"""How stages report: core library logs forwarded into the Prefect run log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.logging import get_run_logger

CORE_LOGGER = "deepspeech_core"


class _ForwardToRunLogger(logging.Handler):
    def __init__(self, run_logger: logging.LoggerAdapter) -> None:
        super().__init__()
        self.run_logger = run_logger

    def emit(self, record: logging.LogRecord) -> None:
        self.run_logger.log(record.levelno, record.getMessage())


@contextmanager
def core_logs_to_run_log() -> Iterator[logging.LoggerAdapter]:
    """Send deepspeech_core's log records to this task run's log (UI and console).

    The library logs with the standard logging module and knows nothing of Prefect;
    this bridge lives only as long as the task body.
    """
    run_logger = get_run_logger()
    core = logging.getLogger(CORE_LOGGER)
    handler = _ForwardToRunLogger(run_logger)
    previous = core.level, core.propagate
    core.addHandler(handler)
    core.setLevel(logging.INFO)
    core.propagate = False  # the run logger prints it already; once is enough
    try:
        yield run_logger
    finally:
        core.removeHandler(handler)
        core.level, core.propagate = previous
