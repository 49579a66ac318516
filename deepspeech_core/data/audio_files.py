"""Reading any audio SoX or libsndfile can read, as 16-bit mono PCM at the model's rate.

Decoding and resampling run in-process (libsndfile through soundfile, SoX's resampler
through soxr): one `sox` process per short clip spends most of its time starting up.
The `sox` program remains the fallback for formats libsndfile does not read.
"""

from __future__ import annotations

import math
import re
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from deepspeech_core.workdir.atomic_files import atomic_binary_file


class AudioError(Exception):
    """The file is missing, not audio, truncated or empty; `reason` names which."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TooLongError(AudioError):
    """The header says the file is longer than --max_duration; nothing was decoded."""

    def __init__(self, path: Path, info: AudioInfo, max_duration: float) -> None:
        super().__init__("too_long", f"{info.duration:.2f} s > --max_duration {max_duration:g} s")
        self.info = info


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # int16, mono
    sample_rate: int
    source_rate: int
    source_channels: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


# A name SoX reads as something other than a plain file: a URL it fetches with wget.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Playlists: SoX reads every name listed in them, each with the same special meanings.
_PLAYLISTS = frozenset({".m3u", ".pls"})


def sox_safe_path(path: Path) -> str:
    """The name to hand SoX: absolute, or AudioError if SoX would not read it as a file.

    SoX runs a name that starts with `|` as a shell command, fetches `http:`/`ftp:`
    names with wget, reads `-` as standard input and `.m3u`/`.pls` files as lists of
    further names. Such names are refused; every other one is made absolute, so no
    name given to SoX can start with `|`, `-` or a URL scheme.
    """
    name = str(path)
    if name.startswith("|") or name == "-" or _URL.match(name):
        raise AudioError(
            "unsafe_file_name",
            f"{name!r}: SoX would run or fetch this name instead of reading a file; "
            "rename the file",
        )
    if Path(name).suffix.lower() in _PLAYLISTS:
        raise AudioError(
            "unsafe_file_name", f"{name!r} is a playlist; give the audio files it lists"
        )
    return str(Path(name).absolute())


def _decode_with_sox(path: Path) -> tuple[np.ndarray, int]:
    import sox  # imported late: pysox logs a warning at import when sox is missing

    safe = sox_safe_path(path)
    try:
        info_rate = int(sox.file_info.sample_rate(safe))
        data = sox.Transformer().build_array(input_filepath=safe)
    except Exception as exc:  # pysox raises several types; all mean "cannot decode"
        raise AudioError("unreadable_audio", f"sox could not decode {path.name}: {exc}") from exc
    if data.ndim == 1:
        data = data[:, None]
    return data.astype(np.float32) / 32768.0 if data.dtype == np.int16 else data, info_rate


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, read without decoding the samples."""

    frames: int
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: Path) -> AudioInfo:
    """Length, rate and channels from the header (libsndfile, else `soxi`).

    Cheap for any length of file, so a clip can be rejected as too long before its
    samples are decoded: decoding a 2-hour 48 kHz stereo wav takes gigabytes.
    """
    path = Path(path)
    try:
        info = soundfile.info(str(path))
        if 0 <= info.frames < 2**62 and info.samplerate > 0:  # 2**63-1: length unknown
            return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))
    except (soundfile.LibsndfileError, RuntimeError):
        pass
    import sox  # late, as in _decode_with_sox

    safe = sox_safe_path(path)
    try:
        rate = int(sox.file_info.sample_rate(safe))
        frames = sox.file_info.num_samples(safe)
        channels = int(sox.file_info.channels(safe))
    except Exception as exc:  # pysox raises several types; all mean "cannot read"
        raise AudioError("unreadable_audio", f"sox could not read {path.name}: {exc}") from exc
    if frames is None:  # soxi does not know (a stream without a length): count by decoding
        frames = len(_decode_with_sox(path)[0])
    return AudioInfo(int(frames), rate, channels)


def _check_length(path: Path, info: AudioInfo, max_duration: float) -> None:
    if info.duration > max_duration:
        raise TooLongError(path, info, max_duration)


def _decode(path: Path, max_duration: float = math.inf) -> tuple[np.ndarray, int]:
    """Float32 samples [frames, channels] and the file's sample rate.

    The file is opened once: its header is checked against `max_duration` (TooLongError,
    before any sample is decoded) and the samples are read from the same handle.
    """
    try:
        with soundfile.SoundFile(str(path)) as f:
            header = AudioInfo(int(f.frames), int(f.samplerate), int(f.channels))
            if 0 <= header.frames < 2**62 and header.sample_rate > 0:
                _check_length(path, header, max_duration)
            elif math.isfinite(max_duration):  # length unknown to libsndfile: ask soxi
                _check_length(path, audio_info(path), max_duration)
            data = f.read(dtype="float32", always_2d=True)
        return data, header.sample_rate
    except soundfile.LibsndfileError:
        if math.isfinite(max_duration):
            _check_length(path, audio_info(path), max_duration)
        return _decode_with_sox(path)
    except (RuntimeError, ValueError) as exc:
        raise AudioError("unreadable_audio", f"{path.name}: {exc}") from exc


def to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def read_audio(path: Path, sample_rate: int, max_duration: float = math.inf) -> Audio:
    """Decode `path`, downmix to mono, resample to `sample_rate` (SoX's default quality).

    A file whose header says it is longer than `max_duration` raises TooLongError
    without being decoded (decoding a 2-hour 48 kHz stereo wav takes gigabytes).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = -1
    if size < 0 or not path.is_file():
        raise AudioError("missing_file", f"{path} does not exist")
    if size == 0:
        raise AudioError("unreadable_audio", f"{path.name} is an empty file")
    data, rate = _decode(path, max_duration)
    channels = data.shape[1]
    mono = data.mean(axis=1) if channels > 1 else data[:, 0]
    if rate != sample_rate and len(mono):
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    if len(mono) == 0:
        raise AudioError("empty_audio", f"{path.name} has no samples")
    return Audio(to_int16(mono), sample_rate, rate, channels)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM mono wav atomically (temp file, then rename).

    The stdlib's `wave` writes the 44-byte header and the samples into the temporary
    file's handle directly: libsndfile took a third of the import's writing time for the
    same bytes, and its sync on close cost more than the encoding on a slow filesystem
    while buying nothing here (a rename already makes the file appear whole or not at
    all; an imported clip found empty or unreadable later is converted again).
    """
    pcm = np.ascontiguousarray(samples, dtype="<i2")
    with atomic_binary_file(Path(path)) as f, wave.open(f, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.setnframes(len(pcm))  # header written once, with the final length
        out.writeframesraw(pcm.tobytes())


def read_wav_int16(path: Path) -> tuple[np.ndarray, int]:
    """Read a wav exactly as stored (no resampling); used on the pipeline's own wavs."""
    data, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    return data[:, 0] if data.shape[1] == 1 else data.mean(axis=1).astype(np.int16), int(rate)


def is_model_ready_wav(path: Path, sample_rate: int) -> bool:
    """True when `path` already is 16-bit mono wav at `sample_rate` (no import needed)."""
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError):
        return False
    return (
        info.format == "WAV"
        and info.subtype == "PCM_16"
        and info.channels == 1
        and info.samplerate == sample_rate
    )
