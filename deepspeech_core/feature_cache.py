"""The features stage: MFCCs computed once per clip, keyed by audio content and params.

Layout under WORKDIR/features:

    <namespace>/params.json             feature parameters this namespace was made with
    <namespace>/clips/ab/<sha256>.npy   MFCCs [frames, n_input] float32 of one wav's bytes
    <namespace>/index_<split>.csv       wav_filename, content_hash, n_frames, transcript, ...
    <namespace>/manifest.json           the corpus fingerprint the indexes were built for

A change of feature parameters gives a new namespace beside the old one; a clip whose
bytes were seen before (in any split, any run) is never recomputed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from deepspeech_core.audio import read_wav_int16
from deepspeech_core.config import FeatureConfig
from deepspeech_core.features import MfccExtractor
from deepspeech_core.io_utils import (
    atomic_path,
    atomic_write_json,
    file_sha256,
    text_sha256,
)
from deepspeech_core.manifests import CorpusManifest, FeatureCacheManifest

log = logging.getLogger(__name__)

FEATURE_VERSION = "deepspeech-0.9.3-mfcc-1"
INDEX_COLUMNS = [
    "wav_filename",
    "content_hash",
    "n_frames",
    "duration",
    "transcript",
    "feature_file",
]


def namespace_for(features: FeatureConfig) -> str:
    """Directory name for one set of feature parameters (n_context is not stored)."""
    params = features.model_dump(exclude={"n_context"})
    return "mfcc-" + text_sha256(FEATURE_VERSION, json.dumps(params, sort_keys=True))[:16]


def feature_path(ns_dir: Path, content_hash: str) -> Path:
    return ns_dir / "clips" / content_hash[:2] / f"{content_hash}.npy"


def load_features(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


class FeatureCache:
    """Compute-or-reuse MFCCs for wav files; counts what it computed for tests and logs."""

    def __init__(self, cache_dir: Path, features: FeatureConfig) -> None:
        self.features = features
        self.namespace = namespace_for(features)
        self.dir = Path(cache_dir) / self.namespace
        self._extract: MfccExtractor | None = None
        self.computed = 0
        self.reused = 0

    def _extractor(self) -> MfccExtractor:
        if self._extract is None:
            self._extract = MfccExtractor(self.features)
        return self._extract

    def ensure(self, wav: Path) -> tuple[str, int]:
        """Return (content hash, frame count) for `wav`, computing its MFCCs if new."""
        content_hash = file_sha256(wav)
        path = feature_path(self.dir, content_hash)
        if path.is_file():
            self.reused += 1
            return content_hash, int(np.load(path, mmap_mode="r").shape[0])
        samples, rate = read_wav_int16(wav)
        if rate != self.features.audio_sample_rate:
            raise ValueError(
                f"{wav} is {rate} Hz but features are for {self.features.audio_sample_rate} Hz; "
                "run the validate stage, which resamples"
            )
        mfccs = self._extractor()(samples)
        with atomic_path(path, suffix=".npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, mfccs.astype(np.float32), allow_pickle=False)
        self.computed += 1
        return content_hash, int(mfccs.shape[0])


def build_feature_cache(
    corpus: CorpusManifest, features: FeatureConfig, workdir: Path
) -> FeatureCacheManifest:
    """Make sure every clip of every split has cached features; write the split indexes."""
    cache = FeatureCache(Path(workdir) / "features", features)
    manifest_path = cache.dir / "manifest.json"
    fingerprint = text_sha256(corpus.fingerprint, cache.namespace)
    if manifest_path.is_file():
        previous = FeatureCacheManifest.model_validate_json(manifest_path.read_text())
        if previous.fingerprint == fingerprint and all(
            p.is_file() for p in previous.indexes.values()
        ):
            log.info("feature cache %s is up to date; nothing to compute", cache.namespace)
            return previous.model_copy(
                update={"computed": 0, "reused_clips": sum(previous.counts.values())}
            )

    atomic_write_json(
        cache.dir / "params.json", {"version": FEATURE_VERSION, **features.model_dump()}
    )
    indexes: dict[str, Path] = {}
    counts: dict[str, int] = {}
    for split, csv_path in corpus.splits.items():
        df = pd.read_csv(csv_path, dtype={"transcript": str}, keep_default_na=False)
        rows = []
        for i, rec in enumerate(df.to_dict("records")):
            content_hash, n_frames = cache.ensure(Path(rec["wav_filename"]))
            rows.append(
                {
                    "wav_filename": rec["wav_filename"],
                    "content_hash": content_hash,
                    "n_frames": n_frames,
                    "duration": rec["duration"],
                    "transcript": rec["transcript"],
                    "feature_file": str(feature_path(Path("."), content_hash)),
                }
            )
            if (i + 1) % 2000 == 0:
                log.info("%s: %d/%d clips featurised", split, i + 1, len(df))
        indexes[split] = cache.dir / f"index_{split}.csv"
        with atomic_path(indexes[split], suffix=".csv") as tmp:
            pd.DataFrame(rows, columns=INDEX_COLUMNS).to_csv(tmp, index=False)
        counts[split] = len(rows)
    manifest = FeatureCacheManifest(
        cache_dir=cache.dir,
        namespace=cache.namespace,
        indexes=indexes,
        alphabet_path=corpus.alphabet_path,
        counts=counts,
        computed=cache.computed,
        reused_clips=cache.reused,
        fingerprint=fingerprint,
    )
    atomic_write_json(manifest_path, manifest.model_dump(mode="json"))
    log.info("features: %d computed, %d reused from the cache", cache.computed, cache.reused)
    return manifest
