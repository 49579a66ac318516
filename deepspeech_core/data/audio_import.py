"""Turning any audio file into a model-ready wav, in parallel, resumably.

Each job decodes one source file (libsndfile in-process, SoX for the rest), downmixes,
resamples with soxr, writes 16-bit mono wav atomically and returns what validation
needs: sample count, source rate and channels, and a hash of the PCM content (for
duplicate and leakage checks). An output that already exists was completed by an
earlier run (writes are atomic), so a killed import resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import stat
import struct
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import soundfile

from deepspeech_core import stopping
from deepspeech_core.data.audio_files import (
    AudioError,
    TooLongError,
    audio_info,
    is_model_ready_wav,
    read_audio,
    write_wav,
)

# Longest file name most filesystems take (bytes). An output name leaves room for the
# temporary name it is written under first (".NAME.xxxxxxxx.tmp", atomic_files.atomic_path).
NAME_MAX = 255
_TEMP_EXTRA = 16


@dataclass(frozen=True)
class ImportJob:
    source: str
    target: str  # == source when the source is already a model-ready wav
    sample_rate: int
    max_duration: float = math.inf  # longer clips are rejected from their header, undecoded


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


def import_name(source: Path, real_dirs: dict[str, str] | None = None) -> str:
    """Output name that changes whenever the source changes (path, size, mtime).

    The source's stem is shortened (at a character boundary) so that the name, with its
    hash and `.wav` (and the temporary name's extra), fits NAME_MAX bytes: a source name
    near the limit stays importable. `real_dirs` caches resolved folders over one
    planning pass (one lstat per clip instead of one per path component).
    """
    real, st = _resolved(source, {} if real_dirs is None else real_dirs)
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    tail = f"-{hashlib.sha1(key.encode()).hexdigest()[:10]}.wav"
    stem = source.stem.encode("utf-8", "surrogateescape")[: NAME_MAX - _TEMP_EXTRA - len(tail)]
    return stem.decode("utf-8", "ignore") + tail


def _resolved(source: Path, real_dirs: dict[str, str]) -> tuple[str, os.stat_result]:
    """str(source.resolve()) and source.stat(), the folder's resolution cached."""
    st = os.lstat(source)
    if stat.S_ISLNK(st.st_mode):
        return str(source.resolve()), source.stat()
    folder = os.path.dirname(os.path.abspath(source))
    real = real_dirs.get(folder)
    if real is None:
        real = real_dirs[folder] = os.path.realpath(folder)
    return os.path.join(real, source.name), st


def plan_job(
    source: Path,
    clips_dir: Path,
    sample_rate: int,
    max_duration: float = math.inf,
    real_dirs: dict[str, str] | None = None,
) -> ImportJob:
    if source.suffix.lower() == ".wav" and is_model_ready_wav(source, sample_rate):
        return ImportJob(str(source), str(source), sample_rate, max_duration)
    target = os.path.join(clips_dir, import_name(source, real_dirs))
    return ImportJob(str(source), target, sample_rate, max_duration)


def _pcm_hash(samples: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(samples, dtype="<i2").tobytes()).hexdigest()


def _check_header(source: Path, max_duration: float) -> None:
    info = audio_info(source)
    if info.duration > max_duration:
        raise TooLongError(source, info, max_duration)


def _earlier_output(source: Path, target: Path) -> ImportResult | None:
    """The result of an output a previous run completed, or None to (re)convert.

    An output of ours that is empty or unreadable (a power loss after its rename, a full
    disk) is deleted so that it is converted again; the user's own wav is never touched.
    """
    if not target.is_file():
        return None
    try:
        samples, _ = soundfile.read(str(target), dtype="int16")
    except (soundfile.LibsndfileError, RuntimeError):
        samples = None
    if target != source and (samples is None or len(samples) == 0 or not _whole_wav(target)):
        target.unlink(missing_ok=True)
        return None
    if samples is None:
        raise AudioError("unreadable_audio", f"{source.name} cannot be read")
    if len(samples) == 0:
        raise AudioError("empty_audio", f"{source.name} has no samples")
    info = soundfile.info(str(source))
    return ImportResult(len(samples), info.samplerate, info.channels, _pcm_hash(samples))


def _whole_wav(path: Path) -> bool:
    """The file is as long as its RIFF header says (libsndfile reads a cut-short one)."""
    with open(path, "rb") as f:
        head = f.read(8)
    return (
        len(head) == 8
        and head[:4] == b"RIFF"
        and struct.unpack("<I", head[4:])[0] + 8 == path.stat().st_size
    )


def run_job(job: ImportJob) -> ImportResult:
    """Worker: make job.target a model-ready wav of job.source; never raises AudioError.

    The source is opened once: its header rejects a clip over --max_duration before any
    sample is decoded, and the samples are read from the same handle.
    """
    source, target = Path(job.source), Path(job.target)
    if source.suffix.lower().lstrip(".") not in supported_extensions():
        return ImportResult(
            reason="unsupported_format",
            detail=f"'{source.suffix or '(no extension)'}' is not a format SoX or libsndfile reads",
        )
    try:
        if source == target:  # the user's own wav, read whole below: check its header first
            _check_header(source, job.max_duration)
        done = _earlier_output(source, target)
        if done is not None:
            return done
        audio = read_audio(source, job.sample_rate, job.max_duration)
        write_wav(target, audio.samples, job.sample_rate)
        return ImportResult(
            len(audio.samples),
            audio.source_rate,
            audio.source_channels,
            _pcm_hash(audio.samples),
            converted=True,
        )
    except TooLongError as exc:
        return ImportResult(
            n_samples=round(exc.info.duration * job.sample_rate),
            source_rate=exc.info.sample_rate,
            source_channels=exc.info.channels,
            reason=exc.reason,
            detail=exc.detail,
        )
    except AudioError as exc:
        return ImportResult(reason=exc.reason, detail=exc.detail)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        return ImportResult(reason="unreadable_audio", detail=f"{source.name}: {exc}")
    except OSError as exc:  # a name the filesystem refuses, a vanished file: this row only
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


# Fewer jobs than this convert in the calling process. A pool costs about a second of
# CPU and wall time to start (forkserver, each worker importing numpy/soundfile/soxr),
# which is what a clip costs to convert 200-300 times over: the new clips of a grown
# corpus (1 % of 2,000) took 3x longer on a pool than they take in-process
# (bench/scale.py, docs/PERFORMANCE.md).
MIN_POOL_JOBS = 256


def run_jobs(jobs: list[ImportJob], workers: int = 0) -> Iterator[ImportResult]:
    """Results in job order, from a process pool when there is enough work for one."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) < MIN_POOL_JOBS:
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
