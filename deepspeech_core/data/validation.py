"""The validate stage: Common Voice import, DeepSpeech CSV reading, row validation.

Every input row either ends in a clean split CSV (DeepSpeech's format, 16 kHz mono
16-bit wav) or in rejected.csv with one reason. The user's files are only ever read.

Order of checks, each row stopping at the first that fails: bad_row (malformed row),
control_character (a line break, tab, other control or invisible character),
missing_file, empty_transcript, alphabet, then the audio (unsupported_format,
unreadable_audio, empty_audio), too_long, too_short, and last duplicate/leakage, which
compare decoded audio across the whole corpus.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deepspeech_core import progress
from deepspeech_core.config import CorpusConfig, FeatureConfig
from deepspeech_core.data.alphabet import Alphabet, UTF8Alphabet
from deepspeech_core.data.audio_import import (
    ImportResult,
    plan_job,
    remove_stale_temporaries,
    run_jobs,
)
from deepspeech_core.data.csv_reader import TableError, read_table
from deepspeech_core.data.sentences import ORTHOGRAPHIC_INVISIBLES, normalize_sentence
from deepspeech_core.features.frame_counts import (
    FRAMES_VERSION,
    ctc_required_frames,
    feature_frames,
)
from deepspeech_core.manifests import CorpusManifest
from deepspeech_core.workdir.atomic_files import (
    atomic_path,
    atomic_write_json,
    file_sha256,
    read_json_or_none,
    text_sha256,
)
from deepspeech_core.workdir.input_overlap import check_inputs_outside_outputs

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
REASONS = (
    "bad_row",
    "control_character",
    "missing_file",
    "empty_transcript",
    "alphabet",
    "unsupported_format",
    "unreadable_audio",
    "empty_audio",
    "too_long",
    "too_short",
    "duplicate",
    "leakage",
)
REJECTED_COLUMNS = ["source", "line", "wav_filename", "reason", "detail"]
SPLIT_COLUMNS = [
    "wav_filename",
    "wav_filesize",
    "transcript",
    "duration",
    "sentence",
    "content_hash",
    "source",
]
_LAYOUT_VERSION = "5"  # 5: normalisation keeps every script


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
    speaker: str = ""
    reason: str | None = None
    detail: str = ""
    wav: Path | None = None
    duration: float = 0.0
    audio_info: ImportResult = field(default_factory=ImportResult)
    labels: np.ndarray | None = None  # the transcript as the model's labels (bytes or chars)

    def reject(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail

    @property
    def ok(self) -> bool:
        return self.reason is None


# --- reading the inputs -------------------------------------------------------------


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
        for t in _read(tsv, "\t", ["path", "sentence"]):
            f = t.fields or {}
            name = f.get("path", "").strip()
            sentence = f.get("sentence", "")
            row = Row(
                split,
                str(tsv),
                t.line,
                corpus_dir / "clips" / name if name else None,
                sentence,
                _normalize(sentence, cfg),
                speaker=f.get("client_id", ""),
            )
            if t.fields is None:
                row.reject("bad_row", t.problem)
            elif not name:
                row.reject("bad_row", "empty 'path' value")
            elif _outside_clips(name):
                row.reject(
                    "bad_row",
                    f"'path' {name!r} is not a file name inside clips/ (it is absolute, "
                    "names a folder or contains '..'); Common Voice paths are bare file names",
                )
            rows.append(row)
    return rows


def read_deepspeech_csvs(split: str, files: Iterable[Path]) -> list[Row]:
    """Rows of DeepSpeech CSVs; relative wav paths are resolved against the CSV's folder."""
    rows: list[Row] = []
    for csv_path in files:
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise CorpusError(f"--{split}_files: {csv_path} does not exist")
        for t in _read(csv_path, ",", ["wav_filename", "transcript"]):
            f = t.fields or {}
            name = f.get("wav_filename", "").strip()
            audio = Path(name) if name else None
            if audio is not None and not audio.is_absolute():
                audio = csv_path.parent / audio
            transcript = f.get("transcript", "")
            row = Row(split, str(csv_path), t.line, audio, transcript, transcript.strip())
            if t.fields is None:
                row.reject("bad_row", t.problem)
            elif not name:
                row.reject("bad_row", "empty 'wav_filename' value")
            rows.append(row)
    return rows


def _outside_clips(name: str) -> bool:
    """A Common Voice `path` that would reach beyond clips/ (or is not a file name)."""
    return "/" in name or "\\" in name or name in (".", "..") or os.path.isabs(name)


def _read(path: Path, delimiter: str, required: list[str]):
    try:
        return read_table(path, delimiter, required)
    except TableError as exc:
        raise CorpusError(str(exc)) from exc


def _normalize(sentence: str, cfg: CorpusConfig) -> str:
    return normalize_sentence(
        sentence, ascii_fold=cfg.normalize_ascii, lowercase=cfg.lowercase, keep=cfg.keep_characters
    )


# --- checks -------------------------------------------------------------------------


def _check_text(row: Row, alphabet: Alphabet) -> None:
    if not row.ok:
        return
    if not row.transcript.strip():
        row.reject("empty_transcript", f"sentence {row.sentence!r} has no transcribable text")
        return
    missing = alphabet.missing(row.transcript)
    if missing:
        row.reject(
            "alphabet", "characters not in the alphabet: " + " ".join(repr(c) for c in missing)
        )
    else:
        row.labels = alphabet.encode(row.transcript)


# Unicode categories no transcript may hold: control (\n, \t, ...), format (zero-width
# spaces, word joiners, ...) and line/paragraph separators; except the invisibles that
# belong to writing (direction marks, Persian and Indic joiners), which the normaliser
# handles (text.ORTHOGRAPHIC_INVISIBLES).
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _check_characters(row: Row) -> None:
    """Reject a sentence holding characters that would enter the alphabet unseen."""
    if not row.ok:
        return
    sentence = row.sentence
    found = [
        (i, c)
        for i, c in enumerate(sentence)
        if unicodedata.category(c) in _INVISIBLE and c not in ORTHOGRAPHIC_INVISIBLES
    ]
    if found:
        names = ", ".join(
            f"U+{ord(c):04X} {unicodedata.name(c, 'control')} at {i}" for i, c in found[:5]
        )
        row.reject(
            "control_character",
            f"the sentence holds {len(found)} control or invisible character(s): {names}; "
            "remove them from the transcript",
        )


def _check_missing(row: Row) -> None:
    if row.ok and (row.audio is None or not row.audio.is_file()):
        row.reject("missing_file", f"{row.audio} does not exist")


def _check_duration(row: Row, features: FeatureConfig, max_duration: float) -> None:
    n_samples = row.audio_info.n_samples
    row.duration = n_samples / features.audio_sample_rate
    if row.duration > max_duration:
        row.reject("too_long", f"{row.duration:.2f} s > --max_duration {max_duration:g} s")
        return
    labels = list(row.labels) if row.labels is not None else row.transcript
    frames, needed = feature_frames(n_samples, features), ctc_required_frames(labels)
    if frames < needed:
        row.reject("too_short", f"{frames} feature frames for a transcript that needs {needed}")


def _check_duplicates(rows: list[Row]) -> None:
    """Same decoded audio twice: keep one copy.

    Splits are visited test, dev, train, so a clip in both train and test stays in
    test and its train copy is rejected as leakage (the test set stays as published);
    a repeat inside one split is a duplicate.
    """
    seen: dict[str, Row] = {}
    for split in ("test", "dev", "train"):
        for row in rows:
            if row.split != split or not row.ok:
                continue
            first = seen.setdefault(row.audio_info.pcm_sha256, row)
            if first is row:
                continue
            where = f"{Path(first.source).name}:{first.line}"
            if first.split == row.split:
                row.reject("duplicate", f"same audio as {where} ({first.audio})")
            else:
                row.reject("leakage", f"same audio as {first.split} row {where} ({first.audio})")


IMPORTED_COLUMNS = [
    "wav",
    "wav_size",
    "wav_mtime_ns",
    "sample_rate",
    "n_samples",
    "source_rate",
    "source_channels",
    "pcm_sha256",
]


def _load_imported(path: Path, sample_rate: int) -> dict[str, tuple]:
    """What earlier imports learnt of each wav: {wav: (size, mtime_ns, ImportResult)}.

    A damaged or missing table only costs reading those wavs again.
    """
    if not path.is_file():
        return {}
    try:
        table = pd.read_csv(
            path, sep="\t", dtype={"wav": str, "pcm_sha256": str}, keep_default_na=False
        )
        table = table[table.sample_rate == sample_rate]
        return {
            t.wav: (
                int(t.wav_size),
                int(t.wav_mtime_ns),
                ImportResult(
                    int(t.n_samples), int(t.source_rate), int(t.source_channels), t.pcm_sha256
                ),
            )
            for t in table[IMPORTED_COLUMNS].itertuples(index=False)
        }
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        log.warning("%s is damaged (%s); reading the imported clips again", path, exc)
        return {}


def _known_result(known: dict[str, tuple], wav: str) -> ImportResult | None:
    """An earlier run's result for `wav`, if the file is still the one it described."""
    entry = known.get(wav)
    if entry is None:
        return None
    try:
        st = os.stat(wav)
    except OSError:
        return None
    return entry[2] if (st.st_size, st.st_mtime_ns) == entry[:2] else None


def _save_imported(path: Path, rows: list[Row], known: dict[str, tuple], rate: int) -> None:
    records = []
    for r in rows:
        if r.wav is None or r.audio_info.reason or not r.audio_info.pcm_sha256:
            continue
        wav = str(r.wav)
        entry = known.get(wav)
        if entry is not None and entry[2] is r.audio_info:  # unchanged: no second stat
            size, mtime_ns = entry[:2]
        else:
            st = os.stat(wav)
            size, mtime_ns = st.st_size, st.st_mtime_ns
        info = r.audio_info
        records.append(
            (wav, size, mtime_ns, rate, info.n_samples)
            + (info.source_rate, info.source_channels, info.pcm_sha256)
        )
    with atomic_path(path, suffix=".tsv") as tmp:
        pd.DataFrame(records, columns=IMPORTED_COLUMNS).to_csv(tmp, sep="\t", index=False)


def import_audio(rows: list[Row], clips_dir: Path, cfg: CorpusConfig, features: FeatureConfig):
    """Give every still-valid row a model-ready wav (converting in parallel where needed).

    A wav an earlier run imported (or read) and that is unchanged since (size, mtime)
    is not read again: its length, source format and content hash come from
    corpus/import_cache.tsv (a state file beside the split CSVs), so a grown corpus
    reads only its new clips.
    """
    todo = [r for r in rows if r.ok]
    if not todo:
        return
    clips_dir.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_temporaries(clips_dir)
    if stale:
        log.info("removed %d partial file(s) left by an interrupted import", stale)
    rate = features.audio_sample_rate
    real_dirs: dict[str, str] = {}
    # a row without audio was rejected before (missing_audio), so every todo row has one
    jobs = [
        plan_job(r.audio, clips_dir, rate, cfg.max_duration, real_dirs)  # type: ignore[arg-type]
        for r in todo
    ]
    imported_csv = clips_dir.parent / "import_cache.tsv"
    known = _load_imported(imported_csv, rate)
    results: list[ImportResult | None] = [_known_result(known, j.target) for j in jobs]
    pending = [j for j, r in zip(jobs, results, strict=True) if r is None]
    workers = cfg.import_workers or os.cpu_count() or 1
    to_convert = sum(j.source != j.target and not os.path.isfile(j.target) for j in pending)
    log.info(
        "reading %d clips (%d to convert, %d unchanged since an earlier import) with %d workers",
        len(jobs),
        to_convert,
        len(jobs) - len(pending),
        workers,
    )
    progress.report("import", len(jobs), 0)
    fresh = run_jobs(pending, workers)
    for done, (row, job, known_result) in enumerate(zip(todo, jobs, results, strict=True), 1):
        result = known_result if known_result is not None else next(fresh)
        row.audio_info = result
        if result.reason:
            row.reject(result.reason, result.detail)
        else:
            row.wav = Path(job.target)
            _check_duration(row, features, cfg.max_duration)
        progress.report("import", len(jobs), done, audio_seconds=row.duration)
        if done % 2000 == 0:
            log.info("read %d/%d clips", done, len(jobs))
    next(fresh, None)  # lets run_jobs close its pool
    _save_imported(imported_csv, todo, known, rate)


# --- reporting ----------------------------------------------------------------------


def _overlap_warning(rows: list[Row]) -> dict:
    """Speakers and sentences in both train and test: allowed, but worth knowing."""
    kept = [r for r in rows if r.ok]
    found = {}
    for key, attr in (("speakers", "speaker"), ("sentences", "transcript")):
        train = {getattr(r, attr) for r in kept if r.split == "train" and getattr(r, attr)}
        test = {getattr(r, attr) for r in kept if r.split == "test" and getattr(r, attr)}
        shared = sorted(train & test)
        found[key] = {"count": len(shared), "examples": shared[:10]}
        if shared:
            log.warning(
                "%d %s appear in both train and test (e.g. %s): test scores may be optimistic",
                len(shared),
                key,
                ", ".join(repr(s[:16]) for s in shared[:3]),
            )
    return found


def _split_stats(rows: list[Row], split: str, sample_rate: int) -> dict:
    kept = [r for r in rows if r.split == split and r.ok]
    durations = np.array([r.duration for r in kept]) if kept else np.zeros(1)
    p5, p50, p95 = np.percentile(durations, [5, 50, 95])
    return {
        "clips": len(kept),
        "hours": round(float(durations.sum()) / 3600, 4),
        "rejected": dict(Counter(r.reason for r in rows if r.split == split and not r.ok)),
        "resampled": sum(r.audio_info.source_rate not in (0, sample_rate) for r in kept),
        "downmixed": sum(r.audio_info.source_channels > 1 for r in kept),
        "duration_seconds": {
            "min": round(float(durations.min()), 3),
            "p5": round(float(p5), 3),
            "median": round(float(p50), 3),
            "p95": round(float(p95), 3),
            "max": round(float(durations.max()), 3),
        },
    }


def _rejected_examples(rows: list[Row], per_reason: int = 5) -> dict[str, list[dict]]:
    examples: dict[str, list[dict]] = {}
    for r in rows:
        if r.reason is not None and len(examples.setdefault(r.reason, [])) < per_reason:
            examples[r.reason].append(
                {
                    "source": r.source,
                    "line": r.line,
                    "wav_filename": str(r.audio or ""),
                    "detail": r.detail,
                }
            )
    return examples


# --- the stage ----------------------------------------------------------------------


def _source_rows(cfg: CorpusConfig) -> list[Row]:
    if cfg.corpus is not None:
        return read_common_voice(cfg.corpus, cfg)
    if not any(getattr(cfg, f"{s}_files") for s in SPLITS):
        raise CorpusError(
            "no input: give --corpus CV_DIR or --train_files/--dev_files/--test_files"
        )
    rows: list[Row] = []
    for split in SPLITS:
        rows += read_deepspeech_csvs(split, getattr(cfg, f"{split}_files"))
    return rows


def _input_key(cfg: CorpusConfig, features: FeatureConfig) -> str:
    """Hash of the inputs and settings validation depends on (the alphabet aside)."""
    settings = cfg.model_dump_json(exclude={"alphabet_config_path", "import_workers"})
    parts = [_LAYOUT_VERSION, settings, str(features.audio_sample_rate)]
    parts.append(str(features.window_samples) + "/" + str(features.step_samples))
    parts.append(FRAMES_VERSION)  # "too short" depends on the frame formula
    if cfg.filter_alphabet is not None and Path(cfg.filter_alphabet).is_file():
        parts.append(f"filter|{file_sha256(cfg.filter_alphabet)}")
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
    previous = read_json_or_none(manifest_path, "corpus manifest")
    if not isinstance(previous, dict) or previous.get("input_key") != key:
        return None
    try:
        manifest = CorpusManifest.model_validate(previous["manifest"])
    except (KeyError, ValueError) as exc:
        log.warning("corpus manifest %s is damaged (%s); validating again", manifest_path, exc)
        return None
    if not all(p.is_file() for p in [*manifest.splits.values(), manifest.alphabet_path]):
        return None
    if not _clips_intact(manifest):
        return None
    if alphabet_path is None:
        same_alphabet = not previous.get("alphabet_given")
    else:
        same_alphabet = alphabet_path.is_file() and (
            Alphabet.load(alphabet_path) == Alphabet.load(manifest.alphabet_path)
        )
    return manifest.model_copy(update={"reused": True}) if same_alphabet else None


def _clips_intact(manifest: CorpusManifest) -> bool:
    """Every clip the splits list still has the size it was written with (stat only).

    An imported clip emptied or cut short by a power loss or a full disk makes the
    corpus be validated again, which converts that clip anew.
    """
    for split_csv in manifest.splits.values():
        try:
            listed = pd.read_csv(split_csv, usecols=["wav_filename", "wav_filesize"])
        except (OSError, ValueError) as exc:
            log.warning("%s is damaged (%s); validating again", split_csv, exc)
            return False
        for wav, size in zip(listed.wav_filename, listed.wav_filesize, strict=True):
            try:
                actual = os.stat(wav).st_size
            except OSError:
                actual = -1
            if actual != size:
                log.warning("%s has %d bytes, %d expected; validating again", wav, actual, size)
                return False
    return True


def _choose_alphabet(
    rows: list[Row], alphabet_path: Path | None, bytes_output_mode: bool = False
) -> Alphabet:
    if alphabet_path is not None:
        if not alphabet_path.is_file():
            raise CorpusError(f"--alphabet_config_path {alphabet_path} does not exist")
        alphabet = Alphabet.load(alphabet_path)
        if bytes_output_mode and not alphabet.bytes_output_mode:
            raise CorpusError(
                f"--bytes_output_mode asks for a UTF-8 bytes model, but {alphabet_path} is a "
                "character alphabet (of the model being resumed or warm-started from?): drop "
                "--alphabet_config_path, or start afresh with --retrain_from scratch"
            )
        return alphabet
    if bytes_output_mode:
        return UTF8Alphabet()
    train = [r.transcript for r in rows if r.split == "train" and r.ok and r.transcript]
    if not train:
        raise CorpusError(
            "no alphabet: give --alphabet_config_path, or training transcripts to derive it from"
        )
    return Alphabet.from_transcripts(train)


def _filter_alphabet(rows: list[Row], path: Path | None) -> None:
    """DeepSpeech's --filter_alphabet: rows writing other characters are rejected."""
    if path is None:
        return
    if not Path(path).is_file():
        raise CorpusError(f"--filter_alphabet {path} does not exist")
    allowed = Alphabet.load(path)
    for row in rows:
        if row.ok and row.transcript.strip():
            _check_text(row, allowed)
            row.labels = None


def _kept_characters(rows: list[Row], derived: Alphabet) -> Alphabet:
    """The derived alphabet narrowed to the characters of the kept training transcripts.

    It was derived before the audio checks; a character only a rejected clip had would
    otherwise stay in alphabet.txt. Dev/test rows that need it are rejected as alphabet.
    """
    kept = [r.transcript for r in rows if r.split == "train" and r.ok]
    alphabet = Alphabet.from_transcripts(kept) if kept else derived
    if alphabet != derived:
        for row in rows:
            _check_text(row, alphabet)
    return alphabet


def _write_csv(path: Path, records: list[dict], columns: list[str]) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        pd.DataFrame(records, columns=columns).to_csv(tmp, index=False)


def _split_record(r: Row) -> dict:
    return {
        "wav_filename": str(r.wav),
        "wav_filesize": r.wav.stat().st_size,  # type: ignore[union-attr]  # kept rows have a wav
        "transcript": r.transcript,
        "duration": round(r.duration, 4),
        "sentence": r.sentence,
        "content_hash": r.audio_info.pcm_sha256,
        "source": r.source,
    }


def _rejected_record(r: Row) -> dict:
    return {
        "source": r.source,
        "line": r.line,
        "wav_filename": str(r.audio or ""),
        "reason": r.reason,
        "detail": r.detail,
    }


def validate_corpus(
    cfg: CorpusConfig, features: FeatureConfig, workdir: Path, alphabet_path: Path | None = None
) -> CorpusManifest:
    """Import and validate the configured corpus into WORKDIR/corpus.

    `alphabet_path` overrides the configured alphabet (the flow passes a checkpoint's
    alphabet, so a resumed or evaluated model keeps the characters it was trained on).
    A rerun on unchanged input returns the previous manifest without reading any audio.
    """
    check_inputs_outside_outputs(cfg, workdir)  # nothing of the user's is written
    out = Path(workdir) / "corpus"
    alphabet_path = alphabet_path or cfg.alphabet_config_path
    key = _input_key(cfg, features)
    previous = _reusable(out / "manifest.json", key, alphabet_path)
    if previous is not None:
        log.info("corpus unchanged since the last run; reusing %s", out)
        return previous

    rows = _source_rows(cfg)
    for row in rows:
        _check_characters(row)
        _check_missing(row)
    _filter_alphabet(rows, cfg.filter_alphabet)
    alphabet = _choose_alphabet(rows, alphabet_path, cfg.bytes_output_mode)
    for row in rows:
        _check_text(row, alphabet)
    import_audio(rows, out / "clips", cfg, features)
    _check_duplicates(rows)
    if alphabet_path is None and not alphabet.bytes_output_mode:
        alphabet = _kept_characters(rows, alphabet)

    present = [s for s in SPLITS if any(r.split == s for r in rows)]
    for split in present:
        if not any(r.split == split and r.ok for r in rows):
            reasons = dict(Counter(r.reason for r in rows if r.split == split))
            raise CorpusError(
                f"the {split} split has no usable clips after validation (rejected: {reasons}). "
                f"Check the {split} files and audio paths; details in {out / 'rejected.csv'}"
            )
    splits = {s: out / f"{s}.csv" for s in present}
    for split in present:
        _write_csv(
            splits[split],
            [_split_record(r) for r in rows if r.split == split and r.ok],
            SPLIT_COLUMNS,
        )
    _write_csv(
        out / "rejected.csv", [_rejected_record(r) for r in rows if not r.ok], REJECTED_COLUMNS
    )
    alphabet.save(out / "alphabet.txt")

    stats = {s: _split_stats(rows, s, features.audio_sample_rate) for s in present}
    report_path = Path(workdir) / "reports" / "validation.json"
    atomic_write_json(
        report_path,
        {
            "splits": stats,
            "alphabet": alphabet.display,
            "overlap_train_test": _overlap_warning(rows),
            "rejected_examples": _rejected_examples(rows),
        },
    )
    manifest = CorpusManifest(
        corpus_dir=out,
        splits=splits,
        rejected_csv=out / "rejected.csv",
        alphabet_path=out / "alphabet.txt",
        report_path=report_path,
        counts={s: stats[s]["clips"] for s in present},
        rejected={s: stats[s]["rejected"] for s in present},
        hours={s: stats[s]["hours"] for s in present},
        fingerprint=text_sha256(alphabet.to_text(), *(file_sha256(splits[s]) for s in present)),
        imported=sum(r.audio_info.converted for r in rows),
    )
    atomic_write_json(
        out / "manifest.json",
        {
            "input_key": key,
            "alphabet_given": alphabet_path is not None,
            "manifest": manifest.model_dump(mode="json"),
        },
    )
    log.info(
        "%d clips converted this run; the others were imported by earlier runs", manifest.imported
    )
    for s in present:
        log.info(
            "%s: %d clips (%.2f h) kept, %d rejected %s; %d resampled, %d downmixed",
            s,
            stats[s]["clips"],
            stats[s]["hours"],
            sum(stats[s]["rejected"].values()),
            stats[s]["rejected"],
            stats[s]["resampled"],
            stats[s]["downmixed"],
        )
    return manifest
