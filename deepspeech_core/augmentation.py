"""DeepSpeech's `--augment` augmentations that run after the feature cache, on the fly.

Syntax as DeepSpeech 0.9.3: `name[p=0.5,param=value,...]`, where a value is `v`
(fixed), `v~r` (uniform in [v-r, v+r]), `start:end` (moves from start to end as training
progresses) or `start:end~r`. Each augmentation is applied to a clip with probability p.

They work on the cached MFCC matrix [frames, n_input], so the cache stays valid:
frequency_mask (zero bands of coefficients), time_mask (zero spans of frames), dropout
(zero single values), add (+ Gaussian noise), multiply (x Gaussian noise around 1),
pitch (rescale the coefficient axis) and tempo (rescale the time axis). Every random
draw comes from a generator seeded by (seed, epoch, batch, clip), so the same seed gives
the same augmented batches, and a resumed run sees exactly what it would have seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np


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
    defaults: ClassVar[dict[str, tuple[str, bool]]] = {}  # name -> (default text, integer)

    def value(self, name: str, rng: np.random.Generator, clock: float) -> float:
        return self.params[name].pick(rng, clock)

    def apply(self, x: np.ndarray, rng: np.random.Generator, clock: float, ctx: dict) -> np.ndarray:
        raise NotImplementedError


class FrequencyMask(Augmentation):
    defaults = {"n": ("3", True), "size": ("2", True)}

    def apply(self, x, rng, clock, ctx):
        x = x.copy()
        for _ in range(max(0, self.value("n", rng, clock))):
            size = max(0, self.value("size", rng, clock))
            start = int(rng.integers(0, max(1, x.shape[1] - size + 1)))
            x[:, start : start + size] = 0.0
        return x


class TimeMask(Augmentation):
    defaults = {"n": ("3", True), "size": ("10.0", False)}  # size in milliseconds

    def apply(self, x, rng, clock, ctx):
        x = x.copy()
        for _ in range(max(0, self.value("n", rng, clock))):
            frames = int(round(self.value("size", rng, clock) / ctx["win_step_ms"]))
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
        noise = rng.normal(0.0, self.value("stddev", rng, clock), x.shape)
        return (x + noise).astype(np.float32)


class Multiply(Augmentation):
    defaults = {"stddev": ("5", False)}

    def apply(self, x, rng, clock, ctx):
        return (x * rng.normal(1.0, self.value("stddev", rng, clock), x.shape)).astype(np.float32)


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


AUGMENTATIONS: dict[str, type[Augmentation]] = {
    "frequency_mask": FrequencyMask,
    "time_mask": TimeMask,
    "dropout": Dropout,
    "add": Add,
    "multiply": Multiply,
    "pitch": Pitch,
    "tempo": Tempo,
}
BEFORE_CACHE = ("volume", "overlay", "reverb", "resample", "codec")


def parse_augmentation(spec: str) -> Augmentation:
    """`name[p=0.8,n=2:4,size=2:4]` -> an Augmentation with every parameter filled."""
    match = re.fullmatch(r"\s*([a-z_]+)\s*(?:\[(.*)\])?\s*", spec)
    if not match:
        raise AugmentationError(f"bad --augment {spec!r}: use name[param=value,...]")
    name, body = match.group(1), match.group(2) or ""
    if name in BEFORE_CACHE:
        raise AugmentationError(
            f"--augment {name} changes the audio before features are computed; this "
            f"version supports after-cache augmentations only: {', '.join(AUGMENTATIONS)}"
        )
    cls = AUGMENTATIONS.get(name)
    if cls is None:
        raise AugmentationError(f"unknown augmentation {name!r}; known: {', '.join(AUGMENTATIONS)}")
    given: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise AugmentationError(f"bad parameter {part!r} in {spec!r}: use key=value")
        given[key.strip()] = value.strip()
    p = float(given.pop("p", "1.0"))
    if not 0 <= p <= 1:
        raise AugmentationError(f"{spec!r}: p must be between 0 and 1")
    unknown = set(given) - set(cls.defaults)
    if unknown:
        raise AugmentationError(
            f"{spec!r}: unknown parameter(s) {sorted(unknown)}; {name} takes p, "
            + ", ".join(cls.defaults)
        )
    params = {
        key: parse_value(given.get(key, default), integer)
        for key, (default, integer) in cls.defaults.items()
    }
    return cls(p=p, params=params)


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
