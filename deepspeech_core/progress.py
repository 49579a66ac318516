"""Progress of the long stages, for whoever wants to show it (a terminal, a UI, a test).

The library reports how far a stage is (`report`), and knows nothing of how that is
shown: the command line draws rich progress bars in a terminal, a Prefect task could
update an artifact, a test records the events. With no listener, a report costs one
list check, so stages call it per clip or per step without measuring it.

Listeners are process-wide, like logging handlers, because a stage's work may run on
task-runner threads: the feature shards report from the threads they run on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

STAGES = ("import", "features", "train", "evaluate", "export")


@dataclass(frozen=True)
class StageProgress:
    """One report: `done` of `total` units of `stage` (or `advance` more of them).

    `audio_seconds` is the audio handled by this report's units (throughput); `info`
    carries stage details such as the training's epoch, loss and last dev loss.
    """

    stage: str
    total: float
    done: float | None = None
    advance: float = 0.0
    unit: str = "clips"
    audio_seconds: float = 0.0
    info: dict[str, float | int | str] = field(default_factory=dict)


Listener = Callable[[StageProgress], None]

_listeners: list[Listener] = []
_guard = threading.Lock()


def report(
    stage: str,
    total: float,
    done: float | None = None,
    *,
    advance: float = 0.0,
    unit: str = "clips",
    audio_seconds: float = 0.0,
    **info: float | int | str,
) -> None:
    """Tell every listener how far `stage` is; a no-op when nobody listens."""
    if not _listeners:
        return
    event = StageProgress(stage, total, done, advance, unit, audio_seconds, dict(info))
    with _guard:
        listeners = list(_listeners)
    for listener in listeners:
        listener(event)


@contextmanager
def listening(listener: Listener) -> Iterator[Listener]:
    """Send every report to `listener` for the duration of the block."""
    with _guard:
        _listeners.append(listener)
    try:
        yield listener
    finally:
        with _guard:
            _listeners.remove(listener)
