"""DeepSpeech's `--augment` augmentations: on the fly after the feature cache, or on the
audio before it.

Syntax as DeepSpeech 0.9.3: `name[p=0.5,param=value,...]`, where a value is `v`
(fixed), `v~r` (uniform in [v-r, v+r]), `start:end` (moves from start to end as training
progresses) or `start:end~r`. Each augmentation is applied to a clip with probability p.

Feature-domain augmentations work on the cached MFCC matrix [frames, n_input], so the
cache stays valid:
frequency_mask (zero bands of coefficients), time_mask (zero spans of frames), dropout
(zero single values), add (+ Gaussian noise), multiply (x Gaussian noise around 1),
pitch (rescale the coefficient axis), tempo (rescale the time axis) and speed (both, by
one factor of 0.9/1.0/1.1, the speed perturbation of icefall's recipes). Every random
draw comes from a generator seeded by (seed, epoch, batch, clip), so the same seed gives
the same augmented batches, and a resumed run sees exactly what it would have seen.

Sample-domain augmentations (volume, reverb, resample, codec, overlay) must change the
audio before MFCCs exist. They make an augmented copy of the training clips in a
feature-cache namespace of its own (the original cache is untouched), which training
uses alongside the originals; each clip's draws are seeded by (seed, clip hash).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from deepspeech_core.data.audio_files import AudioError, audio_info, read_audio, to_int16


class AugmentationError(ValueError):
    """An --augment specification that cannot be parsed; says what is accepted."""


@dataclass(frozen=True)
class ValueRange:
    start: float
    end: float
    r: float = 0.0
    integer: bool = False

    def pick(self, rng: np.random.Generator, clock: float) -> float:
        """DeepSpeech's pick_value_from_range: interpolate by clock, then jitter by r."""
        clock = min(1.0, max(0.0, clock))
        value = self.start + clock * (self.end - self.start)
        value = rng.uniform(value - self.r, value + self.r) if self.r else value
        return int(round(value)) if self.integer else float(value)


def parse_value(text: str, integer: bool) -> ValueRange:
    match = re.fullmatch(r"\s*([-+.\deE]+)(?::([-+.\deE]+))?(?:~([-+.\deE]+))?\s*", text)
    if not match:
        raise AugmentationError(f"bad value {text!r}: use v, v~r, start:end or start:end~r")
    start, end, r = match.groups()
    try:
        first = float(start)
        return ValueRange(first, float(end) if end else first, float(r) if r else 0.0, integer)
    except ValueError as exc:
        raise AugmentationError(f"bad value {text!r}: not a number") from exc


@dataclass(frozen=True)
class Augmentation:
    """One parsed augmentation; subclasses implement `apply` on one clip."""

    p: float = 1.0
    params: dict[str, ValueRange] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # parameters that are not numbers
    defaults: ClassVar[dict[str, tuple[str, bool]]] = {}  # name -> (default text, integer)
    text_params: ClassVar[tuple[str, ...]] = ()
    sample_domain: ClassVar[bool] = False

    def check(self) -> None:
        """Raise AugmentationError when the parameters cannot work (before any training)."""

    def value(self, name: str, rng: np.random.Generator, clock: float) -> float:
        return self.params[name].pick(rng, clock)

    def apply(self, x: np.ndarray, rng: np.random.Generator, clock: float, ctx: dict) -> np.ndarray:
        raise NotImplementedError


class FrequencyMask(Augmentation):
    defaults = {"n": ("3", True), "size": ("2", True)}

    def apply(self, x, rng, clock, ctx):
        x = x.copy()
        for _ in range(max(0, int(self.value("n", rng, clock)))):
            # DeepSpeech clamps a drawn size into [1, bands - 1]
            size = max(1, min(x.shape[1] - 1, self.value("size", rng, clock)))
            start = int(rng.integers(0, max(1, x.shape[1] - size + 1)))
            x[:, start : start + size] = 0.0
        return x


class TimeMask(Augmentation):
    defaults = {"n": ("3", True), "size": ("10.0", False)}  # size in milliseconds

    def apply(self, x, rng, clock, ctx):
        x = x.copy()
        for _ in range(max(0, int(self.value("n", rng, clock)))):
            frames = int(round(self.value("size", rng, clock) / ctx["win_step_ms"]))
            frames = max(1, min(len(x) - 1, frames))  # DeepSpeech's clamp of a drawn size
            start = int(rng.integers(0, max(1, len(x) - frames + 1)))
            x[start : start + frames] = 0.0
        return x


class Dropout(Augmentation):
    defaults = {"rate": ("0.05", False)}

    def apply(self, x, rng, clock, ctx):
        keep = rng.random(x.shape) >= self.value("rate", rng, clock)
        return (x * keep).astype(np.float32)


class Add(Augmentation):
    defaults = {"stddev": ("5", False)}

    def apply(self, x, rng, clock, ctx):
        # A draw below 0 (e.g. from 0~0.5) acts as its magnitude, as in DeepSpeech, whose
        # stateless_normal scales unit noise by the (signed) stddev.
        noise = rng.normal(0.0, abs(self.value("stddev", rng, clock)), x.shape)
        return (x + noise).astype(np.float32)


class Multiply(Augmentation):
    defaults = {"stddev": ("5", False)}

    def apply(self, x, rng, clock, ctx):
        stddev = abs(self.value("stddev", rng, clock))  # as Add: a negative draw flips sign
        return (x * rng.normal(1.0, stddev, x.shape)).astype(np.float32)


def _resize(x: np.ndarray, length: int, axis: int) -> np.ndarray:
    """Linear resampling of one axis to `length` points (bilinear resize on one axis)."""
    old = x.shape[axis]
    if length == old or old < 2:
        return x
    positions = np.linspace(0, old - 1, length)
    return np.apply_along_axis(lambda v: np.interp(positions, np.arange(old), v), axis, x).astype(
        np.float32
    )


class Pitch(Augmentation):
    defaults = {"pitch": ("1.075~0.125", False)}  # DeepSpeech's (1.075, 1.075, 0.125)

    def apply(self, x, rng, clock, ctx):
        n = x.shape[1]
        scaled = _resize(x, max(1, int(round(n * self.value("pitch", rng, clock)))), axis=1)
        if scaled.shape[1] >= n:
            return scaled[:, :n]
        return np.pad(scaled, [(0, 0), (0, n - scaled.shape[1])])


class Tempo(Augmentation):
    defaults = {"factor": ("1.1", False), "max_time": ("-1", False)}

    def apply(self, x, rng, clock, ctx):
        factor = self.value("factor", rng, clock)
        if factor <= 0:
            return x
        length = int(round(len(x) / factor))
        max_time = self.value("max_time", rng, clock)
        if max_time > 0:
            length = min(length, int(max_time * 1000 / ctx["win_step_ms"]))
        # Never shorter than CTC needs for the transcript: that would be an infinite loss.
        length = max(length, ctx["min_frames"])
        return _resize(x, length, axis=0)


class Speed(Augmentation):
    """Speed perturbation (icefall's and SpeechBrain's 0.9/1.0/1.1) on cached MFCCs.

    Each clip gets one of the factors 1 - delta, 1, 1 + delta with equal probability;
    as with audio played faster, the clip is shortened in time by the factor (tempo)
    and its coefficient axis stretched by it (pitch), one draw for both.
    """

    defaults = {"delta": ("0.1", False)}

    def apply(self, x, rng, clock, ctx):
        delta = self.value("delta", rng, clock)
        factor = 1.0 + delta * float(rng.integers(-1, 2))
        if factor == 1.0 or factor <= 0:
            return x
        length = max(int(round(len(x) / factor)), ctx["min_frames"])
        x = _resize(x, length, axis=0)
        n = x.shape[1]
        scaled = _resize(x, max(1, int(round(n * factor))), axis=1)
        return (
            scaled[:, :n]
            if scaled.shape[1] >= n
            else np.pad(scaled, [(0, 0), (0, n - scaled.shape[1])])
        )


AUGMENTATIONS: dict[str, type[Augmentation]] = {
    "speed": Speed,
    "frequency_mask": FrequencyMask,
    "time_mask": TimeMask,
    "dropout": Dropout,
    "add": Add,
    "multiply": Multiply,
    "pitch": Pitch,
    "tempo": Tempo,
}


# DeepSpeech's `domain` parameter: where time_mask, dropout, add and multiply apply.
DOMAINS = ("signal", "spectrogram", "features")
DOMAIN_AWARE = ("time_mask", "dropout", "add", "multiply")


def _domain(name: str, domain: str | None, spec: str) -> str | None:
    """The `domain` given to an augmentation that has one (DeepSpeech's values).

    `signal` applies the augmentation to the audio samples (in the augmented copy of
    the training clips); `spectrogram` and `features` both apply it to the cached MFCCs,
    the one representation this pipeline keeps (DeepSpeech's spectrogram is not stored).
    """
    if domain is None:
        return None
    if name not in DOMAIN_AWARE:
        raise AugmentationError(
            f"{spec!r}: {name} has no domain parameter; DeepSpeech's "
            + ", ".join(DOMAIN_AWARE)
            + " have one"
        )
    if domain not in DOMAINS:
        raise AugmentationError(f"{spec!r}: domain must be one of {', '.join(DOMAINS)}")
    return domain


def parse_augmentation(spec: str) -> Augmentation:
    """`name[p=0.8,n=2:4,size=2:4]` -> an Augmentation with every parameter filled."""
    match = re.fullmatch(r"\s*([a-z_]+)\s*(?:\[(.*)\])?\s*", spec)
    if not match:
        raise AugmentationError(f"bad --augment {spec!r}: use name[param=value,...]")
    name, body = match.group(1), match.group(2) or ""
    cls = AUGMENTATIONS.get(name) or SAMPLE_AUGMENTATIONS.get(name)
    if cls is None:
        known = ", ".join([*AUGMENTATIONS, *SAMPLE_AUGMENTATIONS])
        raise AugmentationError(f"unknown augmentation {name!r}; known: {known}")
    given: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise AugmentationError(f"bad parameter {part!r} in {spec!r}: use key=value")
        given[key.strip()] = value.strip()
    p = float(given.pop("p", "1.0"))
    if not 0 <= p <= 1:
        raise AugmentationError(f"{spec!r}: p must be between 0 and 1")
    domain = _domain(name, given.pop("domain", None), spec)
    unknown = set(given) - set(cls.defaults)
    if unknown:
        raise AugmentationError(
            f"{spec!r}: unknown parameter(s) {sorted(unknown)}; {name} takes p, "
            + ", ".join(cls.defaults)
        )
    params = {
        key: parse_value(given.get(key, default), integer)
        for key, (default, integer) in cls.defaults.items()
        if key not in cls.text_params
    }
    texts = {key: given.get(key, cls.defaults[key][0]) for key in cls.text_params}
    if domain == "signal":
        return OnSignal(p=p, params=params, texts={"name": name})
    augmentation = cls(p=p, params=params, texts=texts)
    augmentation.check()
    return augmentation


def parse_augmentations(specs: list[str]) -> list[Augmentation]:
    return [parse_augmentation(s) for s in specs]


def augment_clip(
    x: np.ndarray,
    augmentations: list[Augmentation],
    rng: np.random.Generator,
    clock: float,
    win_step_ms: float,
    min_frames: int,
) -> np.ndarray:
    """Apply each augmentation with its probability, in the order given."""
    ctx = {"win_step_ms": win_step_ms, "min_frames": min_frames}
    for aug in augmentations:
        if rng.random() < aug.p:
            x = aug.apply(x, rng, clock, ctx)
    return x


@dataclass(frozen=True)
class AugmentationPlan:
    """What the input pipeline needs to augment one epoch's batches reproducibly."""

    augmentations: tuple[Augmentation, ...]
    seed: int
    epoch: int
    epochs: int
    batches_per_epoch: int
    win_step_ms: float

    def rng(self, batch_number: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, batch_number])

    def clock(self, batch_number: int) -> float:
        """Training progress in [0, 1], for start:end values."""
        done = self.epoch + batch_number / max(self.batches_per_epoch, 1)
        return done / max(self.epochs, 1)


# --- sample domain: applied to float audio in [-1, 1] before MFCCs ------------------


def _rms_dbfs(audio: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(audio)))) if len(audio) else 0.0
    return 20 * np.log10(max(rms, 1e-10))


def _max_dbfs(audio: np.ndarray) -> float:
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    return 20 * np.log10(max(peak, 1e-10))


def _normalize_to(audio: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale so the peak is at `dbfs` (DeepSpeech's normalize_audio with max dBFS)."""
    return audio * 10 ** ((dbfs - _max_dbfs(audio)) / 20)


class SampleAugmentation(Augmentation):
    sample_domain = True

    def apply_audio(
        self, audio: np.ndarray, rate: int, rng: np.random.Generator, clock: float
    ) -> np.ndarray:
        raise NotImplementedError


class Volume(SampleAugmentation):
    defaults = {"dbfs": ("3.0103", False)}

    def apply_audio(self, audio, rate, rng, clock):
        # DeepSpeech: the peak normalised to -dbfs (3.0103 dB below full scale by default)
        return _normalize_to(audio, -abs(self.value("dbfs", rng, clock)))


class Reverb(SampleAugmentation):
    defaults = {"delay": ("20.0", False), "decay": ("10.0", False)}

    def apply_audio(self, audio, rate, rng, clock):
        """DeepSpeech's reverb: five echo layers at prime-ratio delays, decaying by dB."""
        peak = _max_dbfs(audio)
        delay = self.value("delay", rng, clock)
        decay = 10 ** (-self.value("decay", rng, clock) / 20)
        result = audio.astype(np.float64).copy()
        primes = [17, 19, 23, 29, 31]
        for prime in primes:
            layer = audio.astype(np.float64).copy()
            n_delay = max(16, int(delay * (prime / primes[0]) * rate / 1000.0))
            for w in range(len(audio) // n_delay):
                w1, w2 = w * n_delay, (w + 1) * n_delay
                width = min(len(audio) - w2, n_delay)
                layer[w2 : w2 + width] += decay * layer[w1 : w1 + width]
            result += layer
        return _normalize_to(result, peak)


class Resample(SampleAugmentation):
    defaults = {"rate": ("8000", True)}

    def apply_audio(self, audio, rate, rng, clock):
        import soxr

        target = max(1000, self.value("rate", rng, clock))
        down = soxr.resample(audio, rate, target, quality="HQ")
        back = soxr.resample(down, target, rate, quality="HQ")
        return _fit_length(back, len(audio))


class Codec(SampleAugmentation):
    defaults = {"bitrate": ("3200", True)}

    def apply_audio(self, audio, rate, rng, clock):
        """Round trip through Opus (libsndfile); bitrate maps onto its compression level.

        libsndfile sets Opus bitrates through a 0-1 compression level spanning about
        256 kbit/s down to 6 kbit/s, so bitrates below 6 kbit/s (DeepSpeech's default
        3,200) give its strongest compression.
        """
        import io

        import soundfile

        bitrate = self.value("bitrate", rng, clock)
        level = float(np.clip((256_000 - bitrate) / (256_000 - 6_000), 0.0, 1.0))
        buffer = io.BytesIO()
        soundfile.write(
            buffer,
            audio.astype(np.float32),
            rate,
            format="OGG",
            subtype="OPUS",
            compression_level=level,
        )
        buffer.seek(0)
        decoded, _ = soundfile.read(buffer, dtype="float64")
        return _fit_length(decoded, len(audio))


class Overlay(SampleAugmentation):
    defaults = {"source": ("", False), "snr": ("3.0", False), "layers": ("1", True)}
    text_params = ("source",)

    def check(self) -> None:
        path = Path(self.texts["source"])
        if not (path.is_dir() or (path.suffix.lower() == ".csv" and path.is_file())):
            raise AugmentationError(
                f"overlay source {str(path)!r} is neither a folder of audio nor a DeepSpeech CSV"
            )

    def apply_audio(self, audio, rate, rng, clock):
        """Mix `layers` random stretches of the source audio in at `snr` dB."""
        sources = _overlay_sources(self.texts["source"])
        if not sources:
            raise AugmentationError(f"overlay source {self.texts['source']!r} holds no audio")
        result = audio.astype(np.float64).copy()
        signal_power = float(np.mean(np.square(audio))) or 1e-10
        for _ in range(max(1, int(self.value("layers", rng, clock)))):
            noise = _noise_from(sources, int(rng.integers(len(sources))), rate)
            reps = -(-len(audio) // len(noise)) + 1
            tiled = np.tile(noise, reps)
            start = int(rng.integers(0, len(noise)))
            chunk = tiled[start : start + len(audio)]
            noise_power = float(np.mean(np.square(chunk))) or 1e-10
            snr = self.value("snr", rng, clock)
            result += chunk * np.sqrt(signal_power / (noise_power * 10 ** (snr / 10)))
        return result


def _fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    return audio[:length] if len(audio) >= length else np.pad(audio, (0, length - len(audio)))


@lru_cache(maxsize=4)
def _overlay_sources(source: str) -> tuple[str, ...]:
    """The audio files of an overlay source (a folder or a DeepSpeech CSV), not their audio.

    Only headers are read here; a file is decoded when a draw picks it (`_noise`), so a
    large noise corpus never sits whole in each worker's memory.
    """
    import pandas as pd

    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    elif path.suffix.lower() == ".csv" and path.is_file():
        names = pd.read_csv(path, dtype=str)["wav_filename"]
        files = [Path(p) if Path(p).is_absolute() else path.parent / p for p in names]
    else:
        raise AugmentationError(
            f"overlay source {source!r} is neither a folder of audio nor a DeepSpeech CSV"
        )
    readable = []
    for f in files:
        try:
            if audio_info(f).frames > 0:
                readable.append(str(f.absolute()))
        except (AudioError, OSError):
            continue
    return tuple(readable)


@lru_cache(maxsize=8)
def _noise(path: str, rate: int) -> np.ndarray:
    """One noise file as float32 at `rate` (a few recently drawn files stay cached)."""
    return read_audio(Path(path), rate).samples.astype(np.float32) / np.float32(32768.0)


def _noise_from(sources: tuple[str, ...], first: int, rate: int) -> np.ndarray:
    """The drawn file's audio, or the next one's when its body turns out unreadable."""
    for i in range(len(sources)):
        try:
            noise = _noise(sources[(first + i) % len(sources)], rate)
        except AudioError:
            continue
        if len(noise):
            return noise
    raise AugmentationError(f"no overlay source file could be decoded (of {len(sources)})")


class OnSignal(SampleAugmentation):
    """time_mask, dropout, add or multiply with domain=signal: on the audio samples.

    The same code as on features, with one "frame" per sample: a time_mask size in
    milliseconds covers that much audio, add's stddev is in full-scale units ([-1, 1]).
    """

    def apply_audio(self, audio, rate, rng, clock):
        inner = AUGMENTATIONS[self.texts["name"]](p=1.0, params=self.params)
        ctx = {"win_step_ms": 1000.0 / rate, "min_frames": 0}
        return inner.apply(audio.reshape(-1, 1), rng, clock, ctx).reshape(-1).astype(np.float64)


SAMPLE_AUGMENTATIONS: dict[str, type[SampleAugmentation]] = {
    "volume": Volume,
    "reverb": Reverb,
    "resample": Resample,
    "codec": Codec,
    "overlay": Overlay,
}


def split_specs(specs: list[str]) -> tuple[list[str], list[str]]:
    """(sample-domain specs, feature-domain specs), each in the order given."""
    parsed = [(s, parse_augmentation(s)) for s in specs]
    return [s for s, a in parsed if a.sample_domain], [s for s, a in parsed if not a.sample_domain]


def augment_audio(
    pcm16: np.ndarray, augmentations: list[Augmentation], rate: int, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """Apply sample augmentations with their probabilities; (int16 audio, changed?)."""
    audio = pcm16.astype(np.float64) / 32768.0
    changed = False
    for aug in augmentations:
        if not isinstance(aug, SampleAugmentation):
            raise AugmentationError(f"{type(aug).__name__} works on features, not on audio")
        if rng.random() < aug.p:
            audio = aug.apply_audio(audio, rate, rng, 0.0)
            changed = True
    return to_int16(audio), changed
