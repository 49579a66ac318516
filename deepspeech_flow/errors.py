"""How the command line reports an error: one line for expected ones, a traceback otherwise.

An expected error (deepspeech_core.error_kinds) already says what is wrong and what to
do; a traceback in front of it only hides that sentence. So it is printed alone, as
`error: ...` on stderr, and the command exits with the kind's code (README: "Exit
codes"). `--debug` (or DEEPSPEECH_FLOW_DEBUG=1) re-raises it for the full traceback.
Anything else is a bug or a crash and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from deepspeech_core.error_kinds import ErrorKind, error_kind

DEBUG_ENV = "DEEPSPEECH_FLOW_DEBUG"


class ConfigError(ValueError):
    """A flag, a --config file or a combination of settings that cannot work."""


class DataError(ValueError):
    """An input path (corpus, CSV, scorer, ...) that is missing or unreadable."""


_debug = {"on": False}


def debug_enabled() -> bool:
    return _debug["on"] or os.environ.get(DEBUG_ENV, "") not in ("", "0", "false")


def set_debug(on: bool) -> None:
    """--debug: this command's errors show their traceback (set again by every command)."""
    _debug["on"] = on


def _validation_message(exc: Any) -> str:
    """pydantic's multi-line report as `section.field: problem (given X)` items."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        given = err.get("input")
        shown = "" if isinstance(given, dict | list) or given is None else f" (given {given!r})"
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}{shown}" if where else f"{msg}{shown}")
    return "invalid settings: " + "; ".join(parts)


def one_line(exc: BaseException) -> str:
    """The error's message on one line (pydantic's reports condensed)."""
    if type(exc).__name__ == "ValidationError" and hasattr(exc, "errors"):
        text = _validation_message(exc)
    else:
        text = str(exc) or type(exc).__name__
    return re.sub(r"\s*\n\s*", " ", text).strip()


def exit_code(exc: BaseException) -> int | None:
    """The command's exit code for an expected error, None for an unexpected one."""
    kind = error_kind(exc)
    return None if kind is None else int(kind)


def fail(exc: BaseException) -> typer.Exit:
    """Print `error: <message>` and return the Exit to raise (code by kind)."""
    typer.echo(f"error: {one_line(exc)}", err=True)
    return typer.Exit(code=exit_code(exc) or 1)


def reported(command: Callable) -> Callable:
    """Run a command; an expected error becomes one line and its exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if exit_code(exc) is None or debug_enabled():
                raise
            raise fail(exc) from None

    return wrapper


class _HideExpectedTracebacks(logging.Filter):
    """Drops Prefect's records about an expected error: the command prints it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and error_kind(exc) is not None:
            return False
        message = record.getMessage()
        return not (
            "Finished in state Failed" in message
            and any(kind_name in message for kind_name in _expected_names())
        )


@functools.cache
def _expected_names() -> tuple[str, ...]:
    from deepspeech_core.error_kinds import _KINDS

    return tuple(name.rsplit(".", 1)[1] for name in _KINDS)


@contextmanager
def quiet_expected_errors_in_prefect_log() -> Iterator[None]:
    """While a flow runs from the CLI, keep expected errors' tracebacks off the console.

    The run's log in the Prefect API (and UI) keeps them; only the terminal copy goes.
    """
    if debug_enabled():
        yield
        return
    handlers = [h for h in logging.getLogger().handlers if "Console" in type(h).__name__]
    filt = _HideExpectedTracebacks()
    for handler in handlers:
        handler.addFilter(filt)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(filt)


__all__ = ["ConfigError", "DataError", "ErrorKind", "fail", "one_line", "reported"]
