"""Every rejection reason, resampling, odd encodings and a killed import (issue 3)."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

from deepspeech_core.config import CorpusConfig, FeatureConfig
from deepspeech_core.data.validation import REASONS, validate_corpus
from tests.helpers import sigkill_when

FEATURES = FeatureConfig()
HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent\tlocale\tsegment"


def _noise(path: Path, seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    data = (rng.normal(scale=0.1, size=(int(rate * seconds), channels))).astype(np.float32)
    soundfile.write(path, data if channels > 1 else data[:, 0], rate, subtype="PCM_16")


def _tsv_line(path: str, sentence: str, speaker: str = "spk1") -> bytes:
    # extra and reordered columns must not matter: 'path' and 'sentence' are found by name
    return f"{speaker}\t{path}\t{sentence}\t2\t0\t\t\t\ten\t".encode()


@pytest.fixture(scope="module")
def every_reason_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reasons") / "en"
    clips = root / "clips"
    clips.mkdir(parents=True)
    _noise(clips / "a.flac", 1.5, seed=1)
    _noise(clips / "stereo44.flac", 1.5, rate=44100, channels=2, seed=2)
    _noise(clips / "low8k.wav", 1.5, rate=8000, seed=3)
    shutil.copy(clips / "a.flac", clips / "dup_a.flac")
    _noise(clips / "test_b.flac", 1.5, seed=4)
    shutil.copy(clips / "test_b.flac", clips / "leak_b.flac")
    (clips / "corrupt.mp3").write_bytes(b"\xff\xfb not really an mp3 frame " * 40)
    soundfile.write(clips / "empty.wav", np.zeros(0, np.int16), 16000, subtype="PCM_16")
    (clips / "clip.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " * 10)
    _noise(clips / "long.flac", 11.0, seed=5)
    _noise(clips / "short.wav", 0.1, seed=6)
    _noise(clips / "digits.flac", 1.5, seed=7)
    _noise(clips / "punct.flac", 1.5, seed=8)
    _noise(clips / "dev_c.flac", 1.5, seed=9)
    train = [
        HEADER.encode(),
        _tsv_line("a.flac", "A b c."),  # line 2: kept
        _tsv_line("stereo44.flac", "Red cat."),  # 3: kept after downmix + resample
        _tsv_line("low8k.wav", "Blue dog."),  # 4: kept after resample
        _tsv_line("dup_a.flac", "A b c."),  # 5: duplicate
        _tsv_line("leak_b.flac", "Green fish."),  # 6: leakage
        _tsv_line("corrupt.mp3", "Hello."),  # 7: unreadable_audio
        _tsv_line("empty.wav", "Hello."),  # 8: empty_audio
        _tsv_line("clip.m4a", "Hello."),  # 9: unsupported_format
        _tsv_line("long.flac", "Long one."),  # 10: too_long
        _tsv_line("short.wav", "A much longer sentence than a tenth of a second allows."),  # 11
        _tsv_line("digits.flac", "Room 101."),  # 12: alphabet
        _tsv_line("punct.flac", "?!"),  # 13: empty_transcript
        _tsv_line("missing.mp3", "Hello."),  # 14: missing_file
        b"spk1\tonly_two_fields.flac",  # 15: bad_row (field count)
        b"spk1\ta.flac\tCaf\xe9 au lait.\t2\t0\t\t\t\ten\t",  # 16: bad_row (not UTF-8)
        _tsv_line("", "No path."),  # 17: bad_row (empty path)
        _tsv_line("a.flac", "Zero\u200bwidth."),  # 18: control_character
    ]
    (root / "train.tsv").write_bytes(b"\n".join(train) + b"\n")
    (root / "dev.tsv").write_bytes(
        HEADER.encode() + b"\n" + _tsv_line("dev_c.flac", "Pink frog.") + b"\n"
    )
    (root / "test.tsv").write_bytes(
        HEADER.encode() + b"\n" + _tsv_line("test_b.flac", "Red cat.", speaker="spk1") + b"\n"
    )
    alphabet = root.parent / "alphabet.txt"
    alphabet.write_text(" \n" + "\n".join("abcdefghijklmnopqrstuvwxyz'") + "\n")
    return root


EXPECTED = {
    5: "duplicate",
    6: "leakage",
    7: "unreadable_audio",
    8: "empty_audio",
    9: "unsupported_format",
    10: "too_long",
    11: "too_short",
    12: "alphabet",
    13: "empty_transcript",
    14: "missing_file",
    15: "bad_row",
    16: "bad_row",
    17: "bad_row",
    18: "control_character",
}


def test_every_reason_gives_exactly_the_expected_rejected_csv(every_reason_corpus, tmp_path):
    root = every_reason_corpus
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    cfg = CorpusConfig(corpus=root, alphabet_config_path=root.parent / "alphabet.txt")
    manifest = validate_corpus(cfg, FEATURES, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before, "inputs untouched"

    rejected = pd.read_csv(manifest.rejected_csv, keep_default_na=False)
    assert list(rejected.columns) == ["source", "line", "wav_filename", "reason", "detail"]
    assert set(rejected.source) == {str(root / "train.tsv")}
    assert dict(zip(rejected.line, rejected.reason, strict=True)) == EXPECTED
    assert set(EXPECTED.values()) == set(REASONS)
    detail = dict(zip(rejected.line, rejected.detail, strict=True))
    assert "'1'" in detail[12]
    assert "'0'" in detail[12]
    assert "test_b.flac" in detail[6]
    assert "test" in detail[6]
    assert "a.flac" in detail[5]
    assert "11.00 s" in detail[10]
    assert "UTF-8" in detail[16]
    assert "fields" in detail[15]
    assert rejected.set_index("line").wav_filename[14] == str(root / "clips" / "missing.mp3")

    assert manifest.counts == {"train": 3, "dev": 1, "test": 1}
    train = pd.read_csv(manifest.splits["train"], keep_default_na=False)
    assert train.transcript.tolist() == ["a b c", "red cat", "blue dog"]
    for wav in train.wav_filename:
        info = soundfile.info(wav)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(info.frames / 16000 - 1.5) < 0.01

    report = json.loads(manifest.report_path.read_text())
    stats = report["splits"]["train"]
    assert (stats["resampled"], stats["downmixed"]) == (2, 1)
    assert stats["rejected"]["bad_row"] == 3
    assert stats["duration_seconds"]["median"] == pytest.approx(1.5, abs=0.01)
    assert report["overlap_train_test"]["sentences"]["examples"] == ["red cat"]
    assert report["overlap_train_test"]["speakers"]["count"] == 1
    assert set(report["rejected_examples"]) == set(REASONS)


def test_unchanged_rerun_is_instant_and_growth_imports_only_new_clips(
    every_reason_corpus, tmp_path
):
    root = tmp_path / "cv"
    shutil.copytree(every_reason_corpus, root)
    cfg = CorpusConfig(
        corpus=root, alphabet_config_path=every_reason_corpus.parent / "alphabet.txt"
    )
    first = validate_corpus(cfg, FEATURES, tmp_path / "w")
    imported = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "w/corpus/clips").iterdir()}

    started = time.perf_counter()
    again = validate_corpus(cfg, FEATURES, tmp_path / "w")
    assert again.reused
    assert time.perf_counter() - started < 1.0

    _noise(root / "clips" / "new.flac", 1.0, rate=22050, seed=42)
    with open(root / "train.tsv", "ab") as f:
        f.write(_tsv_line("new.flac", "New clip.") + b"\n")
    grown = validate_corpus(cfg, FEATURES, tmp_path / "w")
    assert grown.counts["train"] == first.counts["train"] + 1
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "w/corpus/clips").iterdir()}
    assert {k: after[k] for k in imported} == imported, "earlier imports were not redone"
    assert len(after) == len(imported) + 1


KILL_SCRIPT = """
import sys
from pathlib import Path
from deepspeech_core.config import CorpusConfig, FeatureConfig
from deepspeech_core.data.validation import validate_corpus
cfg = CorpusConfig(corpus=Path(sys.argv[1]), import_workers=1)
validate_corpus(cfg, FeatureConfig(), Path(sys.argv[2]))
"""


@pytest.fixture(scope="module")
def slow_corpus(tmp_path_factory) -> Path:
    """80 clips of 6 s stereo 44.1 kHz: long enough to kill the import half way."""
    root = tmp_path_factory.mktemp("slow") / "en"
    (root / "clips").mkdir(parents=True)
    lines = [HEADER.encode()]
    for i in range(80):
        _noise(root / "clips" / f"c{i:03d}.flac", 6.0, rate=44100, channels=2, seed=100 + i)
        lines.append(_tsv_line(f"c{i:03d}.flac", f"clip {'abcdefghij'[i % 10]} {i // 10}"))
    (root / "train.tsv").write_bytes(b"\n".join(lines) + b"\n")
    for split in ("dev", "test"):
        shutil.copy(root / "clips" / "c000.flac", root / "clips" / f"{split}.flac")
        _noise(root / "clips" / f"{split}.flac", 1.0, seed=7 if split == "dev" else 8)
        (root / f"{split}.tsv").write_bytes(
            HEADER.encode() + b"\n" + _tsv_line(f"{split}.flac", "clip a 1") + b"\n"
        )
    return root


def _normalised_csvs(workdir: Path) -> dict[str, str]:
    corpus = workdir / "corpus"
    return {
        name: (corpus / name).read_text().replace(str(workdir), "WORKDIR")
        for name in ("train.csv", "dev.csv", "test.csv", "rejected.csv")
    }


def test_sigkilled_import_resumes_to_the_same_result(slow_corpus, tmp_path):
    killed = tmp_path / "killed"
    clips = killed / "corpus" / "clips"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(slow_corpus), str(killed)],
        cwd=Path(__file__).resolve().parents[1],
    )
    sigkill_when(proc, lambda: len(list(clips.glob("*.wav"))) >= 20, 120, "the import")
    done_before = len(list(clips.glob("*.wav")))
    assert 20 <= done_before < 82
    assert not (killed / "corpus" / "train.csv").exists()

    cfg = CorpusConfig(corpus=slow_corpus, import_workers=1)
    validate_corpus(cfg, FEATURES, killed)
    validate_corpus(cfg, FEATURES, tmp_path / "clean")
    assert _normalised_csvs(killed) == _normalised_csvs(tmp_path / "clean")
    assert not list(clips.glob(".*")), "no partial files left behind"
    assert len(list(clips.glob("*.wav"))) == 82
