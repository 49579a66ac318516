"""The features stage: MFCCs computed once per clip, stored in shards, reused forever.

Layout under WORKDIR/features:

    <namespace>/params.json                  the feature parameters of this namespace
    <namespace>/shards/<id>.npy              frames of many clips, concatenated [N, n_input]
    <namespace>/shards/<id>.index.csv        content_hash, offset, n_frames per clip
    <namespace>/index_<split>.csv            a split's clips: where their frames are
    <namespace>/manifest.json                the corpus fingerprint the indexes are for

Clips are keyed by the hash of their decoded audio (from validation), so a clip seen in
any earlier run, split or corpus is never recomputed, and a change of feature parameters
writes a new namespace beside the old one. A shard's array is written first and its
index last, each to a temporary name renamed into place: a shard without an index is
invisible, so a killed build leaves nothing half-done that a later one would trust.
Shards are independent jobs, so the build fans out over processes, threads or a Dask
cluster; `build_feature_cache` takes the map function to use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from deepspeech_core import progress
from deepspeech_core.config import FeatureConfig
from deepspeech_core.data.audio_files import read_wav_int16
from deepspeech_core.data.audio_import import remove_stale_temporaries
from deepspeech_core.features.augmentation import augment_audio, parse_augmentations
from deepspeech_core.features.frame_counts import FRAMES_VERSION
from deepspeech_core.features.mfcc import MfccExtractor
from deepspeech_core.manifests import CorpusManifest, FeatureCacheManifest
from deepspeech_core.workdir.atomic_files import (
    atomic_path,
    atomic_write_json,
    read_json_or_none,
    text_sha256,
)

log = logging.getLogger(__name__)

# In every namespace's name: features made with another frame formula (before the
# client's final frame, frames.FRAMES_VERSION) live in another namespace, never mixed in.
FEATURE_VERSION = f"deepspeech-0.9.3-mfcc-2+{FRAMES_VERSION}"
INDEX_COLUMNS = [
    "wav_filename",
    "content_hash",
    "shard",
    "offset",
    "n_frames",
    "duration",
    "transcript",
    "source",
]
_MFCC_BATCH = 64  # clips per op call: amortises call overhead, bounds memory


def namespace_for(features: FeatureConfig) -> str:
    """Directory name for one set of feature parameters (n_context is not stored)."""
    params = features.model_dump(exclude={"n_context"})
    return "mfcc-" + text_sha256(FEATURE_VERSION, json.dumps(params, sort_keys=True))[:16]


@dataclass(frozen=True)
class ShardJob:
    """Clips to featurise into one shard: (content hash, wav path) pairs."""

    namespace_dir: str
    name: str
    clips: tuple[tuple[str, str], ...]
    features: FeatureConfig
    sample_augment: tuple[str, ...] = ()  # sample-domain --augment specs (augmented copies)
    augment_seed: int = 0


@dataclass(frozen=True)
class ShardResult:
    name: str
    clips: int
    frames: int
    audio_seconds: float
    seconds: float


def read_catalog(ns_dir: Path) -> pd.DataFrame:
    """Every clip in every complete shard: content_hash, shard, offset, n_frames."""
    indexes = sorted((Path(ns_dir) / "shards").glob("*.index.csv"))
    if not indexes:
        return pd.DataFrame(columns=["content_hash", "shard", "offset", "n_frames"])
    frames = [pd.read_csv(p, dtype={"content_hash": str, "shard": str}) for p in indexes]
    return pd.concat(frames, ignore_index=True).drop_duplicates("content_hash")


def _shard_problem(index_csv: Path, n_input: int) -> str | None:
    """Why a complete-looking shard cannot be trusted (None: it can)."""
    npy = index_csv.with_name(index_csv.name.removesuffix(".index.csv") + ".npy")
    try:
        index = pd.read_csv(index_csv, dtype={"content_hash": str, "shard": str})
        array = np.load(npy, mmap_mode="r")
    except (OSError, ValueError, pd.errors.ParserError) as exc:  # EmptyDataError included
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    needed = int((index.offset + index.n_frames).max()) if len(index) else 0
    if array.ndim != 2 or array.shape[0] < needed or (needed and array.shape[1] != n_input):
        return f"array of shape {array.shape} for clips needing {needed} frames of {n_input}"
    return None


def heal_shards(ns_dir: Path, n_input: int) -> int:
    """Delete damaged shards (truncated array, empty index) so they are computed again.

    A power loss or a full disk can leave a shard whose rename happened but whose data
    did not reach the disk; every later run would fail on it. Returns how many.
    """
    removed = 0
    for index_csv in sorted((Path(ns_dir) / "shards").glob("*.index.csv")):
        problem = _shard_problem(index_csv, n_input)
        if problem is None:
            continue
        log.warning("feature shard %s is damaged (%s); computing it again", index_csv, problem)
        npy = index_csv.with_name(index_csv.name.removesuffix(".index.csv") + ".npy")
        index_csv.unlink(missing_ok=True)
        npy.unlink(missing_ok=True)
        removed += 1
    return removed


def plan_shards(
    ns_dir: Path,
    missing: Iterable[tuple[str, str]],
    features: FeatureConfig,
    shard_size: int,
    sample_augment: tuple[str, ...] = (),
    augment_seed: int = 0,
) -> list[ShardJob]:
    """Group clips (sorted by hash, so a plan is reproducible) into shard jobs."""
    clips = sorted(set(missing))
    jobs = []
    for i in range(0, len(clips), shard_size):
        chunk = tuple(clips[i : i + shard_size])
        name = hashlib.sha256("".join(h for h, _ in chunk).encode()).hexdigest()[:20]
        jobs.append(ShardJob(str(ns_dir), name, chunk, features, sample_augment, augment_seed))
    return jobs


def build_shard(job: ShardJob) -> ShardResult:
    """Featurise one shard's clips; array first, index last, both atomically."""
    started = time.perf_counter()
    shards = Path(job.namespace_dir) / "shards"
    extractor = _extractor(job.features.model_dump_json())
    rate = job.features.audio_sample_rate
    augmentations = parse_augmentations(list(job.sample_augment))
    arrays: list[np.ndarray] = []
    augmented: list[bool] = []
    audio_samples = 0
    for i in range(0, len(job.clips), _MFCC_BATCH):
        batch = []
        for content_hash, wav in job.clips[i : i + _MFCC_BATCH]:
            samples, wav_rate = read_wav_int16(Path(wav))
            if wav_rate != rate:
                raise ValueError(
                    f"{wav} is {wav_rate} Hz but features are for {rate} Hz; "
                    "run the validate stage, which resamples"
                )
            changed = False
            if augmentations:  # one generator per clip: the same copy in any shard or order
                rng = np.random.default_rng([job.augment_seed, int(content_hash[:15], 16)])
                samples, changed = augment_audio(samples, augmentations, rate, rng)
            batch.append(samples)
            augmented.append(changed)
            audio_samples += len(samples)
        arrays += extractor.batch(batch)
        seconds = sum(len(s) for s in batch) / rate
        progress.report("features", 0, advance=len(batch), audio_seconds=seconds)
    lengths = np.array([len(a) for a in arrays], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    data = np.concatenate(arrays).astype(np.float32) if arrays else np.zeros((0, 26), np.float32)
    with atomic_path(shards / f"{job.name}.npy", suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, data, allow_pickle=False)
    index = pd.DataFrame(
        {
            "content_hash": [h for h, _ in job.clips],
            "shard": f"{Path(job.namespace_dir).name}/{job.name}",
            "offset": offsets,
            "n_frames": lengths,
            "augmented": augmented,
        }
    )
    with atomic_path(shards / f"{job.name}.index.csv", suffix=".csv") as tmp:
        index.to_csv(tmp, index=False)
    return ShardResult(
        job.name,
        len(job.clips),
        int(lengths.sum()),
        audio_samples / rate,
        time.perf_counter() - started,
    )


@lru_cache(maxsize=4)
def _extractor(features_json: str) -> MfccExtractor:
    """One traced MFCC function per process and parameter set, reused by every shard."""
    return MfccExtractor(FeatureConfig.model_validate_json(features_json))


MapFn = Callable[[Callable[[ShardJob], ShardResult], list[ShardJob]], list[ShardResult]]


def serial_map(fn: Callable[[ShardJob], ShardResult], jobs: list[ShardJob]) -> list[ShardResult]:
    return [fn(job) for job in jobs]


@dataclass(frozen=True)
class _OpenShard:
    fd: int
    data_offset: int  # where the .npy's rows begin
    n_rows: int


class ShardReader:
    """Reads clips' frames from shards with positional reads (pread), thread-safe.

    Not memory-mapped: every page of a mapping an epoch touches stays in the process's
    RSS, so training on a 20,000-clip corpus held all its features (hundreds of MB,
    growing with the corpus) in its resident set. Reads copy one clip's rows straight
    into the caller's batch buffer instead; the page cache still serves them.

    Shard ids are `<namespace>/<name>`, relative to the features root, so one reader
    serves a split's clips and their augmented copies in a namespace beside it.
    """

    _MAX_OPEN = 64  # shards whose file stays open; reads from others open and close

    def __init__(self, root: Path, n_input: int) -> None:
        self.root = Path(root)
        self.n_input = n_input
        self._open: dict[str, _OpenShard] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_index(cls, index_csv: Path) -> ShardReader:
        params = json.loads((Path(index_csv).parent / "params.json").read_text())
        return cls(Path(index_csv).parent.parent, int(params["n_input"]))

    def _path(self, shard_id: str) -> Path:
        ns, name = shard_id.split("/", 1)
        return self.root / ns / "shards" / f"{name}.npy"

    def shard(self, shard_id: str) -> np.ndarray:
        """The whole shard, memory-mapped (for inspection; reads use read/read_into)."""
        return np.load(self._path(shard_id), mmap_mode="r")

    def _header(self, path: Path) -> tuple[int, int]:
        """(offset of the first row, rows) of a shard's .npy."""
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read(f)
            data_offset = f.tell()
        if fortran or dtype != np.float32 or len(shape) != 2 or shape[1] != self.n_input:
            raise ValueError(f"{path}: not float32 rows of {self.n_input} features")
        return data_offset, shape[0]

    def _read(self, opened: _OpenShard, shard: str, offset: int, target: np.ndarray) -> None:
        if offset + len(target) > opened.n_rows:
            needed = offset + len(target)
            raise ValueError(f"shard {shard} has {opened.n_rows} frames, not {needed}")
        start = opened.data_offset + offset * self.n_input * 4
        if os.preadv(opened.fd, [target.data.cast("B")], start) != target.nbytes:
            raise OSError(f"shard {shard} is shorter than its header says (a damaged cache)")

    def read_into(self, shard: str, offset: int, n_frames: int, out: np.ndarray) -> None:
        """Clip frames [offset, offset+n_frames) of `shard` into out[:n_frames]."""
        target = out[:n_frames]
        if not (target.flags.c_contiguous and target.dtype == np.float32):
            target[...] = self.read(shard, offset, n_frames)
            return
        with self._lock:
            opened = self._open.get(shard)
            if opened is None and len(self._open) < self._MAX_OPEN:
                path = self._path(shard)
                opened = _OpenShard(os.open(path, os.O_RDONLY), *self._header(path))
                self._open[shard] = opened
        if opened is not None:  # open until close(): no other thread closes it
            self._read(opened, shard, offset, target)
            return
        path = self._path(shard)
        fd = os.open(path, os.O_RDONLY)
        try:
            self._read(_OpenShard(fd, *self._header(path)), shard, offset, target)
        finally:
            os.close(fd)

    def read(self, shard: str, offset: int, n_frames: int) -> np.ndarray:
        out = np.empty((n_frames, self.n_input), np.float32)
        self.read_into(shard, offset, n_frames, out)
        return out

    def close(self) -> None:
        with self._lock:
            for opened in self._open.values():
                os.close(opened.fd)
            self._open.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except (OSError, AttributeError):
            pass


def _split_clips(csv_path: Path) -> pd.DataFrame:
    df = pd.read_csv(
        csv_path,
        dtype={"transcript": str, "content_hash": str, "source": str},
        keep_default_na=False,
    )
    if "content_hash" not in df.columns:
        raise ValueError(f"{csv_path} has no content_hash column: rerun the validate stage")
    return df


def _ensure_clips(
    ns_dir: Path,
    clips: set[tuple[str, str]],
    features: FeatureConfig,
    shard_size: int,
    map_fn: MapFn,
    sample_augment: tuple[str, ...] = (),
    augment_seed: int = 0,
) -> tuple[pd.DataFrame, int]:
    """Compute the shards for clips this namespace lacks; (catalog by hash, clips computed)."""
    atomic_write_json(
        ns_dir / "params.json",
        {
            "version": FEATURE_VERSION,
            **features.model_dump(),
            "sample_augment": list(sample_augment),
            "augment_seed": augment_seed,
        },
    )
    stale = remove_stale_temporaries(ns_dir / "shards")
    if stale:
        log.info("removed %d partial file(s) left by an interrupted build", stale)
    heal_shards(ns_dir, features.n_input)
    known = set(read_catalog(ns_dir).content_hash)
    missing = {(h, w) for h, w in clips if h not in known}
    jobs = plan_shards(ns_dir, missing, features, shard_size, sample_augment, augment_seed)
    log.info(
        "features %s: %d clips cached, %d to compute in %d shard(s)",
        ns_dir.name,
        len({h for h, _ in clips} & known),
        len({h for h, _ in missing}),
        len(jobs),
    )
    progress.report("features", len(missing), 0)
    results = map_fn(build_shard, jobs) if jobs else []
    progress.report("features", len(missing), len(missing))
    for r in results:
        rate = r.audio_seconds / max(r.seconds, 1e-9)
        log.info(
            "shard %s: %d clips, %.0f audio-s in %.1f s (%.0f audio-s/s)",
            r.name,
            r.clips,
            r.audio_seconds,
            r.seconds,
            rate,
        )
    return read_catalog(ns_dir).set_index("content_hash"), sum(r.clips for r in results)


def _write_index(path: Path, df: pd.DataFrame, catalog: pd.DataFrame) -> None:
    located = catalog.loc[df.content_hash]
    index = pd.DataFrame(
        {
            "wav_filename": df.wav_filename.to_numpy(),
            "content_hash": df.content_hash.to_numpy(),
            "shard": located.shard.to_numpy(),
            "offset": located.offset.to_numpy(),
            "n_frames": located.n_frames.to_numpy(),
            "duration": df.duration.to_numpy(),
            "transcript": df.transcript.to_numpy(),
            "source": df.source.to_numpy(),
        },
        columns=INDEX_COLUMNS,
    )
    with atomic_path(path, suffix=".csv") as tmp:
        index.to_csv(tmp, index=False)


def _clip_set(frames: Iterable[pd.DataFrame]) -> set[tuple[str, str]]:
    return {(h, w) for df in frames for h, w in zip(df.content_hash, df.wav_filename, strict=True)}


def _previous_manifest(path: Path) -> FeatureCacheManifest | None:
    """The last build's manifest; None if absent or damaged (then the cache is checked)."""
    data = read_json_or_none(path, "feature cache manifest")
    try:
        return None if data is None else FeatureCacheManifest.model_validate(data)
    except ValueError as exc:
        log.warning("feature cache manifest %s is damaged (%s); rebuilding", path, exc)
        return None


def _intact(manifest: FeatureCacheManifest, features: FeatureConfig) -> bool:
    """The manifest's indexes, their params.json and every shard they use are readable."""
    dirs = {p.parent for p in manifest.indexes.values()}
    return (
        all(p.is_file() and p.stat().st_size > 0 for p in manifest.indexes.values())
        and all(read_json_or_none(d / "params.json", "feature parameters") for d in dirs)
        and sum(heal_shards(d, features.n_input) for d in dirs) == 0
    )


def build_feature_cache(
    corpus: CorpusManifest,
    features: FeatureConfig,
    workdir: Path,
    shard_size: int = 2000,
    map_fn: MapFn = serial_map,
    sample_augment: list[str] | tuple[str, ...] = (),
    augment_seed: int = 0,
) -> FeatureCacheManifest:
    """Make sure every clip of every split has cached features; write the split indexes.

    With sample-domain augmentations, the training clips also get an augmented copy in
    a namespace of its own (keyed by the specs and seed), listed as `train_augmented`.
    """
    sample_augment = tuple(sample_augment)
    ns = namespace_for(features)
    root = Path(workdir) / "features"
    ns_dir = root / ns
    manifest_path = ns_dir / "manifest.json"
    aug_key = text_sha256(json.dumps(sample_augment), str(augment_seed)) if sample_augment else ""
    fingerprint = text_sha256(corpus.fingerprint, ns, aug_key)
    previous = _previous_manifest(manifest_path)
    if previous is not None and previous.fingerprint == fingerprint and _intact(previous, features):
        log.info("feature cache %s is up to date; nothing to compute", ns)
        total = sum(previous.counts.values())
        return previous.model_copy(update={"computed": 0, "reused_clips": total})

    splits = {split: _split_clips(path) for split, path in corpus.splits.items()}
    catalog, computed = _ensure_clips(
        ns_dir, _clip_set(splits.values()), features, shard_size, map_fn
    )
    indexes: dict[str, Path] = {}
    for split, df in splits.items():
        indexes[split] = ns_dir / f"index_{split}.csv"
        _write_index(indexes[split], df, catalog)
    counts = {split: len(df) for split, df in splits.items()}

    if sample_augment and "train" in splits:
        aug_dir = root / f"{ns}-aug-{aug_key[:12]}"
        aug_catalog, aug_computed = _ensure_clips(
            aug_dir,
            _clip_set([splits["train"]]),
            features,
            shard_size,
            map_fn,
            sample_augment,
            augment_seed,
        )
        computed += aug_computed
        train = splits["train"]
        changed = aug_catalog.loc[train.content_hash, "augmented"].to_numpy(bool)
        indexes["train_augmented"] = aug_dir / "index_train_augmented.csv"
        _write_index(indexes["train_augmented"], train[changed], aug_catalog)
        counts["train_augmented"] = int(changed.sum())
        log.info(
            "augmented copies of %d training clips (%s)", changed.sum(), ", ".join(sample_augment)
        )

    manifest = FeatureCacheManifest(
        cache_dir=ns_dir,
        namespace=ns,
        indexes=indexes,
        alphabet_path=corpus.alphabet_path,
        counts=counts,
        computed=computed,
        reused_clips=sum(counts.values()) - computed,
        fingerprint=fingerprint,
    )
    atomic_write_json(manifest_path, manifest.model_dump(mode="json"))
    return manifest
