"""The validate stage: Common Voice import, DeepSpeech CSV reading, row validation.

Every input row either ends in a clean split CSV (DeepSpeech's format, 16 kHz mono
16-bit wav) or in rejected.csv with a reason. The user's files are only ever read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import soundfile

from deepspeech_core.alphabet import Alphabet
from deepspeech_core.audio import AudioError, is_model_ready_wav, read_audio, write_wav
from deepspeech_core.config import CorpusConfig, FeatureConfig
from deepspeech_core.io_utils import atomic_path, atomic_write_json, file_sha256, text_sha256
from deepspeech_core.manifests import CorpusManifest
from deepspeech_core.text import normalize_sentence

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
REJECTED_COLUMNS = ["source", "line", "wav_filename", "reason", "detail"]
SPLIT_COLUMNS = ["wav_filename", "wav_filesize", "transcript", "duration", "sentence"]
_LAYOUT_VERSION = "1"


class CorpusError(ValueError):
    """The corpus cannot be used as given; the message says what to fix."""


@dataclass
class Row:
    """One input row on its way through validation."""

    split: str
    source: str
    line: int
    audio: Path | None
    sentence: str
    transcript: str
    reason: str | None = None
    detail: str = ""
    wav: Path | None = None
    duration: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


# --- reading the inputs -------------------------------------------------------------


def _read_table(path: Path, sep: str) -> pd.DataFrame:
    """Read a tsv/csv as strings, tolerating a BOM and CRLF line ends."""
    return pd.read_csv(
        path,
        sep=sep,
        dtype=str,
        keep_default_na=False,
        encoding="utf-8-sig",
        quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL,
    )


def _require_columns(df: pd.DataFrame, path: Path, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CorpusError(
            f"{path} has no column(s) {missing}; found {list(df.columns)}. "
            "Common Voice tsv files need 'path' and 'sentence'; DeepSpeech CSVs need "
            "'wav_filename' and 'transcript'."
        )


def read_common_voice(corpus_dir: Path, cfg: CorpusConfig) -> list[Row]:
    """Rows of train/dev/test.tsv of a Common Voice locale directory."""
    corpus_dir = Path(corpus_dir)
    if not (corpus_dir / "clips").is_dir():
        raise CorpusError(
            f"{corpus_dir} is not a Common Voice locale directory: it has no clips/ folder. "
            "Point --corpus at the folder holding clips/ and train.tsv (e.g. cv-corpus/en)."
        )
    rows: list[Row] = []
    for split in SPLITS:
        tsv = corpus_dir / f"{split}.tsv"
        if not tsv.is_file():
            raise CorpusError(f"{tsv} is missing; a Common Voice release has {split}.tsv")
        df = _read_table(tsv, "\t")
        _require_columns(df, tsv, ["path", "sentence"])
        for i, rec in enumerate(df.to_dict("records")):
            name, sentence = rec["path"].strip(), rec["sentence"]
            rows.append(
                Row(
                    split=split,
                    source=str(tsv),
                    line=i + 2,
                    audio=corpus_dir / "clips" / name if name else None,
                    sentence=sentence,
                    transcript=_normalize(sentence, cfg),
                    reason=None if name else "bad_row",
                    detail="" if name else "empty 'path' value",
                )
            )
    return rows


def read_deepspeech_csvs(split: str, files: Iterable[Path]) -> list[Row]:
    """Rows of DeepSpeech CSVs; relative wav paths are resolved against the CSV's folder."""
    rows: list[Row] = []
    for csv_path in files:
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise CorpusError(f"--{split}_files: {csv_path} does not exist")
        df = _read_table(csv_path, ",")
        _require_columns(df, csv_path, ["wav_filename", "transcript"])
        for i, rec in enumerate(df.to_dict("records")):
            name, transcript = rec["wav_filename"].strip(), rec["transcript"]
            audio = Path(name) if name else None
            if audio is not None and not audio.is_absolute():
                audio = csv_path.parent / audio
            rows.append(
                Row(
                    split=split,
                    source=str(csv_path),
                    line=i + 2,
                    audio=audio,
                    sentence=transcript,
                    transcript=transcript.strip(),
                    reason=None if name else "bad_row",
                    detail="" if name else "empty 'wav_filename' value",
                )
            )
    return rows


def _normalize(sentence: str, cfg: CorpusConfig) -> str:
    return normalize_sentence(
        sentence, ascii_fold=cfg.normalize_ascii, lowercase=cfg.lowercase, keep=cfg.keep_characters
    )


# --- checks -------------------------------------------------------------------------


def ctc_required_frames(labels: str) -> int:
    """Frames CTC needs for a transcript: one per label, plus a blank between repeats."""
    repeats = sum(1 for a, b in zip(labels, labels[1:], strict=False) if a == b)
    return len(labels) + repeats


def feature_frames(n_samples: int, features: FeatureConfig) -> int:
    """MFCC frames AudioSpectrogram makes from `n_samples` (no padding at the end)."""
    if n_samples < features.window_samples:
        return 0
    return 1 + (n_samples - features.window_samples) // features.step_samples


def _check_text(row: Row, alphabet: Alphabet) -> None:
    if row.reason:
        return
    if not row.transcript.strip():
        row.reason, row.detail = "empty_transcript", f"sentence {row.sentence!r} is empty"
        return
    missing = alphabet.missing(row.transcript)
    if missing:
        row.reason = "alphabet"
        row.detail = "characters not in the alphabet: " + " ".join(repr(c) for c in missing)


def _check_missing(row: Row) -> None:
    if not row.reason and (row.audio is None or not row.audio.is_file()):
        row.reason, row.detail = "missing_file", f"{row.audio} does not exist"


def _check_duration(row: Row, n_samples: int, features: FeatureConfig, max_duration: float):
    row.duration = n_samples / features.audio_sample_rate
    if row.duration > max_duration:
        row.reason = "too_long"
        row.detail = f"{row.duration:.2f} s > --max_duration {max_duration:g} s"
        return
    frames, needed = feature_frames(n_samples, features), ctc_required_frames(row.transcript)
    if frames < needed:
        row.reason = "too_short"
        row.detail = f"{frames} feature frames for a transcript that needs {needed}"


# --- audio import -------------------------------------------------------------------


def _import_name(src: Path) -> str:
    """Output name that changes whenever the source file changes (path, size, mtime)."""
    st = src.stat()
    key = f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return f"{src.stem}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.wav"


def _import_one(job: tuple[str, str, int]) -> tuple[int, str | None, str]:
    """Worker: make `dst` a 16 kHz mono wav of `src`. Returns (samples, reason, detail)."""
    src, dst, rate = Path(job[0]), Path(job[1]), job[2]
    try:
        if dst.is_file():  # written atomically, so an existing file is complete
            return soundfile.info(str(dst)).frames, None, ""
        audio = read_audio(src, rate)
        write_wav(dst, audio.samples, rate)
        return len(audio.samples), None, ""
    except AudioError as exc:
        return 0, exc.reason, exc.detail


def _pool_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def import_audio(rows: list[Row], clips_dir: Path, cfg: CorpusConfig, features: FeatureConfig):
    """Give every still-valid row a model-ready wav, converting in parallel where needed."""
    rate = features.audio_sample_rate
    todo: list[Row] = []
    for row in rows:
        if row.reason:
            continue
        assert row.audio is not None
        if row.audio.suffix.lower() == ".wav" and is_model_ready_wav(row.audio, rate):
            row.wav = row.audio
            _check_duration(row, soundfile.info(str(row.audio)).frames, features, cfg.max_duration)
        else:
            row.wav = clips_dir / _import_name(row.audio)
            todo.append(row)
    if not todo:
        return
    clips_dir.mkdir(parents=True, exist_ok=True)
    workers = cfg.import_workers or os.cpu_count() or 1
    jobs = [(str(r.audio), str(r.wav), rate) for r in todo]
    log.info("importing %d clips to %d Hz mono wav with %d workers", len(jobs), rate, workers)
    for done, (row, (n_samples, reason, detail)) in enumerate(
        zip(todo, _run_import_jobs(jobs, workers), strict=True), start=1
    ):
        if reason:
            row.reason, row.detail, row.wav = reason, detail, None
        else:
            _check_duration(row, n_samples, features, cfg.max_duration)
        if done % 1000 == 0:
            log.info("imported %d/%d clips", done, len(jobs))


def _run_import_jobs(jobs: list[tuple[str, str, int]], workers: int) -> Iterator[tuple]:
    """Results of `_import_one` in job order, from a process pool when it pays off."""
    if workers == 1 or len(jobs) < 8:
        yield from map(_import_one, jobs)
        return
    # forkserver, not fork: the calling process may already run TensorFlow threads.
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
        yield from pool.map(_import_one, jobs, chunksize=max(1, min(64, len(jobs) // workers // 4)))


# --- the stage ----------------------------------------------------------------------


def _source_rows(cfg: CorpusConfig) -> list[Row]:
    if cfg.corpus is not None:
        return read_common_voice(cfg.corpus, cfg)
    rows: list[Row] = []
    for split in SPLITS:
        rows += read_deepspeech_csvs(split, getattr(cfg, f"{split}_files"))
    if not rows and not any(getattr(cfg, f"{s}_files") for s in SPLITS):
        raise CorpusError(
            "no input: give --corpus CV_DIR or --train_files/--dev_files/--test_files"
        )
    return rows


def _input_key(cfg: CorpusConfig, features: FeatureConfig) -> str:
    """Hash of the inputs and settings validation depends on (the alphabet aside)."""
    settings = cfg.model_dump_json(exclude={"alphabet_config_path", "import_workers"})
    parts = [_LAYOUT_VERSION, settings, str(features.audio_sample_rate)]
    parts.append(str(features.window_samples) + "/" + str(features.step_samples))
    sources: list[Path] = []
    if cfg.corpus is not None:
        sources = [cfg.corpus / f"{s}.tsv" for s in SPLITS]
        clips = cfg.corpus / "clips"
        if clips.is_dir():
            st = clips.stat()
            parts.append(f"clips|{st.st_mtime_ns}|{sum(1 for _ in os.scandir(clips))}")
    else:
        sources = [p for s in SPLITS for p in getattr(cfg, f"{s}_files")]
    for p in sources:
        parts.append(f"{p}|{file_sha256(p) if Path(p).is_file() else 'missing'}")
    return text_sha256(*parts)


def _reusable(manifest_path: Path, key: str, alphabet_path: Path | None) -> CorpusManifest | None:
    """The previous run's manifest, if its inputs, settings and alphabet are the same.

    A given alphabet equal to the one used before (a checkpoint's alphabet that was
    derived from this very corpus, typically) does not force a new validation.
    """
    if not manifest_path.is_file():
        return None
    previous = json.loads(manifest_path.read_text())
    if previous.get("input_key") != key:
        return None
    manifest = CorpusManifest.model_validate(previous["manifest"])
    if not all(p.is_file() for p in [*manifest.splits.values(), manifest.alphabet_path]):
        return None
    if alphabet_path is None:
        same_alphabet = not previous.get("alphabet_given")
    else:
        same_alphabet = alphabet_path.is_file() and (
            Alphabet.load(alphabet_path) == Alphabet.load(manifest.alphabet_path)
        )
    return manifest.model_copy(update={"reused": True}) if same_alphabet else None


def _choose_alphabet(rows: list[Row], alphabet_path: Path | None) -> Alphabet:
    if alphabet_path is not None:
        if not alphabet_path.is_file():
            raise CorpusError(f"--alphabet_config_path {alphabet_path} does not exist")
        return Alphabet.load(alphabet_path)
    train = [r.transcript for r in rows if r.split == "train" and not r.reason and r.transcript]
    if not train:
        raise CorpusError(
            "no alphabet: give --alphabet_config_path, or training transcripts to derive it from"
        )
    return Alphabet.from_transcripts(train)


def _write_split(path: Path, rows: list[Row]) -> None:
    df = pd.DataFrame(
        [
            {
                "wav_filename": str(r.wav),
                "wav_filesize": r.wav.stat().st_size if r.wav else 0,
                "transcript": r.transcript,
                "duration": round(r.duration, 4),
                "sentence": r.sentence,
            }
            for r in rows
        ],
        columns=SPLIT_COLUMNS,
    )
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)


def _write_rejected(path: Path, rows: list[Row]) -> None:
    df = pd.DataFrame(
        [
            {
                "source": r.source,
                "line": r.line,
                "wav_filename": str(r.audio) if r.audio else "",
                "reason": r.reason,
                "detail": r.detail,
            }
            for r in rows
        ],
        columns=REJECTED_COLUMNS,
    )
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)


def validate_corpus(
    cfg: CorpusConfig, features: FeatureConfig, workdir: Path, alphabet_path: Path | None = None
) -> CorpusManifest:
    """Import and validate the configured corpus into WORKDIR/corpus.

    `alphabet_path` overrides the configured alphabet (the flow passes a checkpoint's
    alphabet, so a resumed or evaluated model keeps the characters it was trained on).
    A rerun on unchanged input returns the previous manifest without reading any audio.
    """
    out = Path(workdir) / "corpus"
    alphabet_path = alphabet_path or cfg.alphabet_config_path
    key = _input_key(cfg, features)
    previous = _reusable(out / "manifest.json", key, alphabet_path)
    if previous is not None:
        log.info("corpus unchanged since the last run; reusing %s", out)
        return previous

    rows = _source_rows(cfg)
    for row in rows:
        _check_missing(row)
    alphabet = _choose_alphabet(rows, alphabet_path)
    for row in rows:
        _check_text(row, alphabet)
    import_audio(rows, out / "clips", cfg, features)

    splits_present = sorted({r.split for r in rows}, key=SPLITS.index)
    splits: dict[str, Path] = {}
    for split in splits_present:
        good = [r for r in rows if r.split == split and not r.reason]
        if not good:
            reasons = Counter(r.reason for r in rows if r.split == split)
            raise CorpusError(
                f"the {split} split has no usable clips after validation "
                f"(rejected: {dict(reasons)}); see {out / 'rejected.csv'}"
            )
        splits[split] = out / f"{split}.csv"
        _write_split(splits[split], good)
    rejected_rows = [r for r in rows if r.reason]
    _write_rejected(out / "rejected.csv", rejected_rows)
    alphabet.save(out / "alphabet.txt")

    rejected = {
        s: dict(Counter(r.reason for r in rejected_rows if r.split == s)) for s in splits_present
    }
    counts = {s: sum(1 for r in rows if r.split == s and not r.reason) for s in splits_present}
    hours = {
        s: round(sum(r.duration for r in rows if r.split == s and not r.reason) / 3600, 4)
        for s in splits_present
    }
    fingerprint = text_sha256(alphabet.to_text(), *(file_sha256(splits[s]) for s in splits_present))
    report_path = Path(workdir) / "reports" / "validation.json"
    atomic_write_json(
        report_path,
        {
            "counts": counts,
            "hours": hours,
            "rejected": rejected,
            "alphabet": "".join(alphabet.characters),
            "rejected_examples": [
                {"source": r.source, "line": r.line, "reason": r.reason, "detail": r.detail}
                for r in rejected_rows[:20]
            ],
        },
    )
    manifest = CorpusManifest(
        corpus_dir=out,
        splits=splits,
        rejected_csv=out / "rejected.csv",
        alphabet_path=out / "alphabet.txt",
        report_path=report_path,
        counts=counts,
        rejected=rejected,
        hours=hours,
        fingerprint=fingerprint,
    )
    atomic_write_json(
        out / "manifest.json",
        {
            "input_key": key,
            "alphabet_given": alphabet_path is not None,
            "manifest": manifest.model_dump(mode="json"),
        },
    )
    for split in splits_present:
        log.info(
            "%s: %d clips (%.2f h) kept, %d rejected %s",
            split,
            counts[split],
            hours[split],
            sum(rejected[split].values()),
            rejected[split],
        )
    return manifest
