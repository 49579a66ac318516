"""Progress bars in the terminal: one rich bar per stage, with throughput and ETA.

deepspeech_core reports progress (deepspeech_core.progress); this module draws it when
stderr is a terminal. Elsewhere (CI, Docker logs, Prefect workers) nothing is drawn and
the stages' periodic log lines say how far they are, as before.

While the bars are shown, Prefect's console log is printed through the bars' console,
so log lines scroll above the bars instead of tearing them.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Column

from deepspeech_core import progress
from deepspeech_core.progress import StageProgress

MIN_SECONDS = 0.5  # no rate is shown before the stage has run this long

LABELS = {
    "import": "import audio",
    "features": "features",
    "train": "train",
    "evaluate": "evaluate",
    "export": "export",
}


def duration(seconds: float) -> str:
    """`1:02:03`, `4:05`, or `?` when it cannot be known yet."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class _Stage:
    """What one bar has seen: where it started (for rates) and the audio it handled."""

    task: TaskID
    started: float
    first_done: float
    total: float = 0.0
    done: float = 0.0
    audio_seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def rate(self, now: float) -> float:
        """Units per second since this display first saw the stage (resumes excluded)."""
        elapsed = now - self.started
        return (self.done - self.first_done) / elapsed if elapsed >= MIN_SECONDS else 0.0

    def eta(self, now: float, remaining: float) -> float:
        rate = self.rate(now)
        return remaining / rate if rate > 0 else math.inf


class StageBars:
    """A deepspeech_core.progress listener that draws one bar per stage."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.bars = Progress(
            TextColumn("{task.description}", markup=False, table_column=Column(no_wrap=True)),
            BarColumn(bar_width=20),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            TextColumn("{task.fields[unit]}", markup=False, table_column=Column(no_wrap=True)),
            TextColumn("{task.fields[detail]}", markup=False),
            console=console,
            auto_refresh=console.is_terminal,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.stages: dict[str, _Stage] = {}

    def __call__(self, event: StageProgress) -> None:
        now = self.clock()
        seen = event.stage in self.stages
        stage = self._stage(event, now)
        if event.total:
            stage.total = event.total
        stage.done = event.done if event.done is not None else stage.done + event.advance
        if seen:  # the first report's work happened before the clock started
            stage.audio_seconds += event.audio_seconds
        stage.info.update(event.info)
        self.bars.update(
            stage.task,
            total=stage.total or None,
            completed=stage.done,
            detail=self._detail(event.stage, stage, now),
        )

    def _stage(self, event: StageProgress, now: float) -> _Stage:
        stage = self.stages.get(event.stage)
        if stage is None:
            task = self.bars.add_task(
                LABELS.get(event.stage, event.stage), total=None, unit=event.unit, detail=""
            )
            start = event.done if event.done is not None else event.advance
            stage = self.stages[event.stage] = _Stage(task, now, start)
        return stage

    def _detail(self, name: str, stage: _Stage, now: float) -> str:
        elapsed = now - stage.started
        speed = ""
        if stage.audio_seconds and elapsed >= MIN_SECONDS:
            speed = f"{stage.audio_seconds / elapsed:,.0f} audio-s/s"
        if name == "train":
            return self._train_detail(stage, now, speed)
        if name == "export":
            return f"{stage.info.get('step', '')}  {duration(elapsed)}"
        eta = stage.eta(now, stage.total - stage.done)
        rate = stage.rate(now)
        parts = [f"{rate:,.1f}/s" if rate else "", speed, f"ETA {duration(eta)}"]
        return "  ".join(p for p in parts if p)

    @staticmethod
    def _train_detail(stage: _Stage, now: float, speed: str) -> str:
        info = stage.info
        per_epoch = int(info.get("steps_per_epoch", 0)) or 1
        epoch = int(info.get("epoch", 0))
        dev = float(info.get("dev_loss", math.nan))
        end_of_epoch = min((epoch + 1) * per_epoch, stage.total or math.inf)
        parts = [
            f"epoch {epoch + 1}/{info.get('epochs', '?')}",
            f"loss {float(info.get('loss', math.nan)):.3f}",
            f"dev {dev:.3f}" if math.isfinite(dev) else "dev -",
            speed,
            f"ETA epoch {duration(stage.eta(now, end_of_epoch - stage.done))}",
            f"run {duration(stage.eta(now, stage.total - stage.done))}",
        ]
        return "  ".join(p for p in parts if p)


def _console_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if hasattr(h, "console")]


@contextmanager
def stage_bars(console: Console | None = None, force: bool = False) -> Iterator[StageBars | None]:
    """Show progress bars for the block when stderr is a terminal (or `force`)."""
    console = console or Console(stderr=True)
    if not (force or (sys.stderr.isatty() and console.is_terminal)):
        yield None
        return
    bars = StageBars(console)
    handlers = _console_handlers()
    previous = [h.console for h in handlers]  # type: ignore[attr-defined]
    with bars.bars, progress.listening(bars):
        for handler in handlers:
            handler.console = console  # type: ignore[attr-defined]
        try:
            yield bars
        finally:
            for handler, old in zip(handlers, previous, strict=True):
                handler.console = old  # type: ignore[attr-defined]
