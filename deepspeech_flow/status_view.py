"""`deepspeech-flow status` as text: a work directory at a glance."""

from __future__ import annotations

from deepspeech_core.workdir.status import LockInfo, WorkdirStatus


def _held(lock: LockInfo | None) -> str:
    return f"in use by pid {lock.pid} on {lock.host} since {lock.since}" if lock else "free"


def _number(value: float | None, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


def _corpus_lines(status: WorkdirStatus) -> list[str]:
    c = status.corpus
    if c is None:
        return ["corpus:     none validated yet (run `deepspeech-flow validate --corpus ...`)"]
    lines = ["corpus:"]
    for split, clips in c.clips.items():
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(c.rejected.get(split, {}).items()))
        lines.append(
            f"  {split:<6} {clips:>7} clips {c.hours.get(split, 0.0):>8.2f} h"
            + (f"   rejected: {rejected}" if rejected else "")
        )
    return lines


def _training_lines(status: WorkdirStatus) -> list[str]:
    if not status.trainings:
        return ["trainings:  none"]
    lines = ["trainings:  (newest last)"]
    for t in status.trainings:
        lines.append(
            f"  {t.fingerprint:<14} step {t.step if t.step is not None else '-':>7}  "
            f"epochs {t.epochs:>3}  best dev loss {_number(t.best_dev_loss, '.3f'):>8}  "
            f"{_held(t.held_by)}  ({t.modified})"
        )
    return lines


def _export_lines(status: WorkdirStatus) -> list[str]:
    if not status.exports:
        return ["exports:    none"]
    lines = ["exports:"]
    for e in status.exports:
        mark = "current ->" if e.current else ""
        lines.append(
            f"  {mark:>10} {e.version:<5} test WER {_number(e.test_wer):>7}  "
            f"CER {_number(e.test_cer):>7}  {e.created or ''}"
        )
    return lines


def _last_run_lines(status: WorkdirStatus) -> list[str]:
    run = status.last_run
    if not run:
        return ["last run:   none recorded"]
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in (run.get("stage_seconds") or {}).items())
    return [
        f"last run:   {run.get('target')} started {run.get('started')}, "
        f"{run.get('seconds')} s, {run.get('outcome')}",
        f"  stages:   {stages or '-'}",
    ]


def status_text(status: WorkdirStatus) -> str:
    if not status.exists:
        return f"{status.workdir}: no such work directory (nothing has run here yet)"
    lines = [f"work dir:   {status.workdir}   ({_held(status.run_lock)})"]
    for part in (_corpus_lines, _training_lines, _export_lines, _last_run_lines):
        lines += part(status)
    return "\n".join(lines)
