"""Turning any audio file into a model-ready wav, in parallel, resumably.

Each job decodes one source file (libsndfile in-process, SoX for the rest), downmixes,
resamples with soxr, writes 16-bit mono wav atomically and returns what validation
needs: sample count, source rate and channels, and a hash of the PCM content (for
duplicate and leakage checks). An output that already exists was completed by an
earlier run (writes are atomic), so a killed import resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import soundfile

from deepspeech_core import stopping
from deepspeech_core.audio import AudioError, is_model_ready_wav, read_audio, write_wav


@dataclass(frozen=True)
class ImportJob:
    source: str
    target: str  # == source when the source is already a model-ready wav
    sample_rate: int


@dataclass(frozen=True)
class ImportResult:
    n_samples: int = 0
    source_rate: int = 0
    source_channels: int = 0
    pcm_sha256: str = ""
    reason: str | None = None
    detail: str = ""
    converted: bool = False  # a new wav was written (not one an earlier run made)


@cache
def supported_extensions() -> frozenset[str]:
    """File endings libsndfile or SoX can decode (SoX's list comes from `sox -h`)."""
    import sox  # late: pysox probes the sox binary at import

    endings = {f.lower() for f in soundfile.available_formats()} | {"wav", "opus", "oga"}
    return frozenset(endings | {f.lower() for f in sox.core.VALID_FORMATS})


def import_name(source: Path) -> str:
    """Output name that changes whenever the source changes (path, size, mtime)."""
    st = source.stat()
    key = f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return f"{source.stem}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.wav"


def plan_job(source: Path, clips_dir: Path, sample_rate: int) -> ImportJob:
    if source.suffix.lower() == ".wav" and is_model_ready_wav(source, sample_rate):
        return ImportJob(str(source), str(source), sample_rate)
    return ImportJob(str(source), str(clips_dir / import_name(source)), sample_rate)


def _pcm_hash(samples: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(samples, dtype="<i2").tobytes()).hexdigest()


def run_job(job: ImportJob) -> ImportResult:
    """Worker: make job.target a model-ready wav of job.source; never raises AudioError."""
    source, target = Path(job.source), Path(job.target)
    if source.suffix.lower().lstrip(".") not in supported_extensions():
        return ImportResult(
            reason="unsupported_format",
            detail=f"'{source.suffix or '(no extension)'}' is not a format SoX or libsndfile reads",
        )
    try:
        if target.is_file():  # the source itself, or an output completed by an earlier run
            samples, _ = soundfile.read(str(target), dtype="int16")
            info = soundfile.info(str(source))
            if len(samples) == 0:
                raise AudioError("empty_audio", f"{source.name} has no samples")
            return ImportResult(len(samples), info.samplerate, info.channels, _pcm_hash(samples))
        audio = read_audio(source, job.sample_rate)
        write_wav(target, audio.samples, job.sample_rate)
        return ImportResult(
            len(audio.samples),
            audio.source_rate,
            audio.source_channels,
            _pcm_hash(audio.samples),
            converted=True,
        )
    except AudioError as exc:
        return ImportResult(reason=exc.reason, detail=exc.detail)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        return ImportResult(reason="unreadable_audio", detail=f"{source.name}: {exc}")


def remove_stale_temporaries(clips_dir: Path) -> int:
    """Delete temp files a killed import left (atomic writes never expose them)."""
    removed = 0
    if clips_dir.is_dir():
        for tmp in clips_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _pool_context() -> multiprocessing.context.BaseContext:
    # forkserver, not fork: the calling process may already run TensorFlow threads.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def run_jobs(jobs: list[ImportJob], workers: int = 0) -> Iterator[ImportResult]:
    """Results in job order, from a process pool when there is enough work for one."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) < 16:
        yield from map(run_job, jobs)
        return
    chunksize = max(1, min(64, len(jobs) // (workers * 8)))
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_pool_context(),
        initializer=stopping.pool_worker_init,
        initargs=(os.getpid(),),
    ) as pool:
        for result in pool.map(run_job, jobs, chunksize=chunksize):
            if stopping.requested() is not None:  # converted clips are kept (atomic)
                pool.shutdown(wait=False, cancel_futures=True)
                stopping.check("importing clips")
            yield result
