import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

from deepspeech_core.config import CorpusConfig, FeatureConfig
from deepspeech_core.data.validation import (
    REJECTED_COLUMNS,
    CorpusError,
    validate_corpus,
)
from deepspeech_core.features.frame_counts import ctc_required_frames, feature_frames
from deepspeech_core.workdir.atomic_files import file_sha256
from tests.helpers import SHARED_FSDD

FEATURES = FeatureConfig()


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ctc_frame_rules():
    assert ctc_required_frames("abc") == 3
    assert ctc_required_frames("aab") == 4  # a blank must separate the repeated a's
    assert ctc_required_frames("hello") == 6
    # every full window, plus the client's final frame of what is left (frames.py)
    assert feature_frames(0, FEATURES) == 0
    assert feature_frames(511, FEATURES) == 1
    assert feature_frames(512, FEATURES) == 2
    assert feature_frames(16000, FEATURES) == 2 + (16000 - 512) // 320


def test_imports_common_voice(tiny_cv, tmp_path):
    before = _snapshot(tiny_cv)
    manifest = validate_corpus(CorpusConfig(corpus=tiny_cv, import_workers=2), FEATURES, tmp_path)
    assert _snapshot(tiny_cv) == before, "the input corpus must never be modified"
    assert set(manifest.splits) == {"train", "dev", "test"}
    assert sum(manifest.counts.values()) == 40
    train = pd.read_csv(manifest.splits["train"], keep_default_na=False)
    assert list(train.columns[:3]) == ["wav_filename", "wav_filesize", "transcript"]
    first = train.iloc[0]
    info = soundfile.info(first["wav_filename"])
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert first["wav_filesize"] == Path(first["wav_filename"]).stat().st_size
    assert first["transcript"] == first["transcript"].lower()
    assert first["sentence"].endswith((".", "!"))  # the original is kept for the record
    alphabet = (tmp_path / "corpus" / "alphabet.txt").read_text()
    assert "\n \n" in alphabet
    assert "\n.\n" not in alphabet

    again = validate_corpus(CorpusConfig(corpus=tiny_cv, import_workers=2), FEATURES, tmp_path)
    assert again.reused
    assert again.fingerprint == manifest.fingerprint


def _make_csv_corpus(tmp_path: Path, tiny_cv: Path) -> Path:
    """A DeepSpeech CSV with one good clip per reason to reject, and one bad row."""
    src = tmp_path / "input"
    src.mkdir()
    mp3s = sorted((tiny_cv / "clips").glob("*.mp3"))[:3]
    for m in mp3s:
        shutil.copy(m, src / m.name)
    (src / "garbage.wav").write_bytes(b"RIFF nonsense" * 20)
    soundfile.write(src / "short.wav", np.zeros(1600, np.int16), 16000, subtype="PCM_16")
    rows = [
        (mp3s[0].name, "three red cats"),
        (mp3s[1].name, "green dogs"),
        (mp3s[2].name, ""),
        ("missing.wav", "red"),
        ("garbage.wav", "red"),
        ("short.wav", "a long sentence for a tenth of a second"),
        (mp3s[0].name, "red cats!"),
        ("", "no file"),
    ]
    csv_path = src / "train.csv"
    lines = ["wav_filename,wav_filesize,transcript"] + [f"{w},,{t}" for w, t in rows]
    # A BOM and CRLF line ends, as CSVs saved on Windows have.
    csv_path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    return csv_path


def test_rejects_every_bad_row_with_a_reason(tiny_cv, tmp_path):
    csv_path = _make_csv_corpus(tmp_path, tiny_cv)
    alphabet = tmp_path / "alphabet.txt"
    alphabet.write_text(" \n" + "\n".join("abcdefghijklmnopqrstuvwxyz'") + "\n")
    dev_csv = tmp_path / "dev.csv"  # an absolute path, and no wav_filesize column
    dev_clip = sorted((tiny_cv / "clips").glob("*.mp3"))[5]
    dev_csv.write_text(f"wav_filename,transcript\n{dev_clip},red\n")
    before = _snapshot(csv_path.parent)
    cfg = CorpusConfig(
        train_files=[csv_path],
        dev_files=[dev_csv],
        alphabet_config_path=alphabet,
        import_workers=1,
    )
    manifest = validate_corpus(cfg, FEATURES, tmp_path / "work")
    assert _snapshot(csv_path.parent) == before
    rejected = pd.read_csv(manifest.rejected_csv, keep_default_na=False)
    assert list(rejected.columns) == REJECTED_COLUMNS
    reasons = dict(zip(rejected.line, rejected.reason, strict=True))
    assert reasons == {
        4: "empty_transcript",
        5: "missing_file",
        6: "unreadable_audio",
        7: "too_short",
        8: "alphabet",
        9: "bad_row",
    }
    detail = rejected[rejected.reason == "alphabet"].detail.iloc[0]
    assert "'!'" in detail
    assert manifest.counts == {"train": 2, "dev": 1}
    kept = pd.read_csv(manifest.splits["train"], keep_default_na=False)
    assert kept.transcript.tolist() == ["three red cats", "green dogs"]


def test_empty_split_fails_with_a_fix(tmp_path):
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("wav_filename,wav_filesize,transcript\nnope.wav,0,hello\n")
    cfg = CorpusConfig(train_files=[csv_path], alphabet_config_path=None)
    with pytest.raises(CorpusError, match="no alphabet|no usable clips"):
        validate_corpus(cfg, FEATURES, tmp_path / "work")


def test_missing_column_is_named(tmp_path):
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("filename,text\na.wav,hello\n")
    with pytest.raises(CorpusError, match="wav_filename"):
        validate_corpus(CorpusConfig(train_files=[csv_path]), FEATURES, tmp_path / "work")


def test_not_a_common_voice_dir(tmp_path):
    with pytest.raises(CorpusError, match="clips/"):
        validate_corpus(CorpusConfig(corpus=tmp_path), FEATURES, tmp_path / "work")


@pytest.mark.skipif(
    not SHARED_FSDD.is_dir(), reason=f"shared FSDD corpus not found at {SHARED_FSDD}"
)
def test_real_recorded_common_voice_subset(tmp_path):
    """A copy of 12 rows per split of the shared FSDD release imports cleanly."""
    copy = tmp_path / "fsdd" / "en"
    (copy / "clips").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        df = pd.read_csv(SHARED_FSDD / f"{split}.tsv", sep="\t", dtype=str, keep_default_na=False)
        df = df.head(12)
        df.to_csv(copy / f"{split}.tsv", sep="\t", index=False)
        for name in df.path:
            shutil.copy(SHARED_FSDD / "clips" / name, copy / "clips" / name)
    alphabet = tmp_path / "alphabet.txt"  # 12 train rows do not use every letter
    alphabet.write_text(" \n" + "\n".join("abcdefghijklmnopqrstuvwxyz'") + "\n")
    cfg = CorpusConfig(corpus=copy, alphabet_config_path=alphabet)
    manifest = validate_corpus(cfg, FEATURES, tmp_path / "work")
    assert manifest.counts == {"train": 12, "dev": 12, "test": 12}
    train = pd.read_csv(manifest.splits["train"], keep_default_na=False)
    assert set("".join(train.transcript)) <= set("abcdefghijklmnopqrstuvwxyz '")
