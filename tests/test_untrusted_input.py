"""Input nobody checked: file names SoX would run, malformed rows, files that would not fit
in memory (issue 11, points 2, 5 and 6)."""

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
from typer.testing import CliRunner

from deepspeech_core.config import CorpusConfig, ExportConfig, FeatureConfig
from deepspeech_core.data.alphabet import Alphabet
from deepspeech_core.data.audio_files import AudioError, read_audio
from deepspeech_core.data.validation import validate_corpus
from deepspeech_core.features import augmentation

FEATURES = FeatureConfig()
REPO = Path(__file__).resolve().parents[1]
# Not audio to libsndfile, so reading it falls back to SoX: the path a hostile name takes.
HOSTILE = "|touch PWNED #.mp3"


def _tone(path: Path, seconds=1.0, rate=16000, channels=1, subtype="PCM_16", seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(scale=0.1, size=(int(rate * seconds), channels)).astype(np.float32)
    soundfile.write(path, data if channels > 1 else data[:, 0], rate, subtype=subtype)


def _hostile_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / HOSTILE).write_bytes(os.urandom(3000))
    (folder / "http:example.com.mp3").write_bytes(os.urandom(3000))


# --- point 2: no file name reaches a shell or SoX's special syntax -------------------


def test_sox_refuses_names_it_would_run_or_fetch(tmp_path, monkeypatch):
    _hostile_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    for name in (HOSTILE, "http:example.com.mp3", "-"):
        with pytest.raises(AudioError, match="^(unsafe_file_name|missing_file): ") as info:
            read_audio(Path(name), 16000)
        assert info.value.reason in ("unsafe_file_name", "missing_file"), name
    (tmp_path / "list.m3u").write_text(f"{HOSTILE}\n")
    with pytest.raises(AudioError, match="playlist"):
        read_audio(tmp_path / "list.m3u", 16000)
    # an absolute path is safe whatever the file is called: read, and found unreadable
    with pytest.raises(AudioError, match="unreadable_audio"):
        read_audio(tmp_path / HOSTILE, 16000)
    assert not (tmp_path / "PWNED").exists(), "SoX ran the file name as a command"


def test_transcribe_never_runs_a_file_name(trained, tmp_path, monkeypatch):
    from deepspeech_core.export.export_model import export_model
    from deepspeech_flow.cli import app

    cfg, *_ = trained
    root = tmp_path / "export"
    export_model(cfg.checkpoint_dir, root, ExportConfig(export_tflite=False))
    files = tmp_path / "files"
    _hostile_files(files)
    _tone(files / "fine.wav")
    monkeypatch.chdir(files)
    names = sorted(p.name for p in files.iterdir())  # what `transcribe *` passes
    result = CliRunner().invoke(app, ["transcribe", "--model", str(root), *names])
    assert not (files / "PWNED").exists(), "SoX ran the file name as a command"
    assert result.exit_code != 0  # two files could not be read ...
    assert "fine.wav\t" in result.output  # ... and the readable one was transcribed
    assert f"{HOSTILE}: cannot read audio (unsafe_file_name" in result.output


def test_overlay_noise_never_runs_a_file_name(tmp_path, monkeypatch):
    noise = tmp_path / "noise"
    _hostile_files(noise)
    _tone(noise / "hum.wav", seed=1)
    monkeypatch.chdir(noise)
    augmentation._overlay_sources.cache_clear()
    spec = augmentation.parse_augmentation("overlay[p=1,source=.,snr=10]")
    pcm = (np.random.default_rng(0).normal(scale=0.1, size=16000) * 32767).astype(np.int16)
    for seed in range(4):
        out, changed = augmentation.augment_audio(pcm, [spec], 16000, np.random.default_rng(seed))
        assert changed
        assert not np.array_equal(out, pcm)
    assert augmentation._overlay_sources(".") == (str(noise / "hum.wav"),)
    assert not (noise / "PWNED").exists(), "SoX ran the file name as a command"


# --- point 6: overlay noise read lazily, as float32 ----------------------------------


def test_overlay_decodes_only_the_noise_it_draws_as_float32(tmp_path, monkeypatch):
    noise = tmp_path / "noise"
    noise.mkdir()
    for i in range(12):
        _tone(noise / f"n{i:02d}.flac", seconds=0.5, rate=22050, seed=i)
    decoded = []
    real_read = augmentation.read_audio
    monkeypatch.setattr(
        augmentation, "read_audio", lambda p, r: decoded.append(p) or real_read(p, r)
    )
    augmentation._overlay_sources.cache_clear()
    augmentation._noise.cache_clear()
    spec = augmentation.parse_augmentation(f"overlay[p=1,source={noise},snr=5,layers=2]")
    pcm = (np.random.default_rng(0).normal(scale=0.1, size=8000) * 32767).astype(np.int16)
    augmentation.augment_audio(pcm, [spec], 16000, np.random.default_rng(3))
    assert 1 <= len(decoded) <= 2, "only the drawn files are decoded, not the whole source"
    one = augmentation._noise(str(decoded[0]), 16000)
    assert one.dtype == np.float32
    assert len(one) == 8000


# --- point 5: every bad row rejected with its reason ---------------------------------


def test_bad_csv_rows_are_each_rejected_with_their_reason(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for i, name in enumerate("abcdefgh"):
        _tone(clips / f"{name}.wav", seed=i)
    _tone(clips / "u8.wav", subtype="PCM_U8", seed=20)
    _tone(clips / "s24.wav", subtype="PCM_24", seed=21)
    _tone(clips / "low.wav", rate=8000, seed=22)
    _tone(clips / "stereo.wav", rate=44100, channels=2, seed=23)
    lines = [
        "wav_filename,wav_filesize,transcript",
        "clips/a.wav,1,ab",  # 2: kept
        'clips/b.wav,1,"a\tb"',  # 3: control_character (a quoted tab)
        'clips/c.wav,1,"a',  # 4: bad_row: a quoted line break ...
        'b"',  # 5: ... whose second half is a row of its own, also bad
        "clips/d.wav,1," + "a" * 140_000,  # 6: bad_row: over the csv module's field limit
        "clips/u8.wav,1,ab",  # 7: 8-bit, kept
        "clips/s24.wav,1,ab",  # 8: 24-bit, kept
        "clips/low.wav,1,ab",  # 9: 8 kHz, kept
        "clips/stereo.wav,1,ab",  # 10: 44.1 kHz stereo, kept
        "clips/e.wav,1,a\x0bb",  # 11: control_character (vertical tab)
        'clips/f.wav,1,"ab',  # 12: bad_row: an unbalanced quote ...
        "clips/g.wav,1,ba",  # 13: ... does not swallow the rows after it
        "clips/h.wav,1,b\u2028a",  # 14: control_character (line separator)
    ]
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = CorpusConfig(train_files=[csv_path], import_workers=1)
    manifest = validate_corpus(cfg, FEATURES, tmp_path / "work")

    rejected = pd.read_csv(manifest.rejected_csv, keep_default_na=False)
    reasons = dict(zip(rejected.line, rejected.reason, strict=True))
    assert reasons == {
        3: "control_character",
        4: "bad_row",
        5: "bad_row",
        6: "bad_row",
        11: "control_character",
        12: "bad_row",
        14: "control_character",
    }
    detail = dict(zip(rejected.line, rejected.detail, strict=True))
    assert "lines 4-5" in detail[4]
    assert "field limit" in detail[6]
    assert "U+0009" in detail[3]
    assert "U+2028" in detail[14]
    train = pd.read_csv(manifest.splits["train"], keep_default_na=False)
    kept = [Path(w).name.split("-")[0].removesuffix(".wav") for w in train.wav_filename]
    assert kept == ["a", "u8", "s24", "low", "stereo", "g"]
    for wav in train.wav_filename:
        info = soundfile.info(wav)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert "\n" not in Alphabet.load(manifest.alphabet_path).characters


def test_bad_common_voice_rows_are_each_rejected_with_their_reason(tmp_path):
    root = tmp_path / "en"
    clips = root / "clips"
    clips.mkdir(parents=True)
    _tone(clips / "a.flac", seed=1)
    _tone(root / "outside.flac", seed=2)
    (clips / "sub").mkdir()
    _tone(clips / "sub" / "x.flac", seed=3)
    long_name = "é" * 120 + ".flac"  # 245 bytes: with the import's hash it would be 260
    _tone(clips / long_name, seed=4)
    header = b"client_id\tpath\tsentence\tup_votes"
    rows = [
        header,
        b"spk\ta.flac\tab\t2",  # 2: kept
        b"spk\t../outside.flac\tab\t2",  # 3: bad_row (..)
        f"spk\t{root / 'outside.flac'}\tab\t2".encode(),  # 4: bad_row (absolute)
        b"spk\tsub/x.flac\tab\t2",  # 5: bad_row (separator)
        b"sp\xffk\ta.flac\tab\t2",  # 6: bad_row (client_id not UTF-8)
        f"spk\t{long_name}\tba\t2".encode(),  # 7: kept, under a shortened name
    ]
    (root / "train.tsv").write_bytes(b"\n".join(rows) + b"\n")
    for split in ("dev", "test"):
        (root / f"{split}.tsv").write_bytes(header + b"\n")
    manifest = validate_corpus(CorpusConfig(corpus=root, import_workers=1), FEATURES, tmp_path)

    rejected = pd.read_csv(manifest.rejected_csv, keep_default_na=False)
    assert dict(zip(rejected.line, rejected.reason, strict=True)) == {
        3: "bad_row",
        4: "bad_row",
        5: "bad_row",
        6: "bad_row",
    }
    detail = dict(zip(rejected.line, rejected.detail, strict=True))
    assert all("inside clips/" in detail[line] for line in (3, 4, 5))
    assert "client_id" in detail[6]
    assert "UTF-8" in detail[6]
    train = pd.read_csv(manifest.splits["train"], keep_default_na=False)
    assert train.transcript.tolist() == ["ab", "ba"]
    assert all(len(Path(w).name.encode()) <= 255 for w in train.wav_filename)
    assert not list((tmp_path / "corpus" / "clips").glob("outside*")), "nothing from outside"


def test_alphabet_refuses_line_breaks():
    for bad in (["a", "\n"], ["a", "\r"]):
        with pytest.raises(ValueError, match="line break"):
            Alphabet(bad)
    with pytest.raises(ValueError, match="line break"):
        Alphabet.from_transcripts(["a\nb"])


# --- point 6: the length comes from the header, not from decoding ---------------------

MEMORY_SCRIPT = """
import resource, sys
from pathlib import Path
from deepspeech_core.config import CorpusConfig, FeatureConfig
from deepspeech_core.data.validation import validate_corpus
# a regression fails here with MemoryError instead of taking the machine's memory
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
cfg = CorpusConfig(train_files=[Path(sys.argv[1])], import_workers=1)
validate_corpus(cfg, FeatureConfig(), Path(sys.argv[2]))
# VmHWM, not ru_maxrss: the kernel carries the parent's peak into ru_maxrss across the
# vfork+exec that started this process (a pytest holding models reads as gigabytes)
status = Path("/proc/self/status").read_text()
print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))  # KiB
"""


def _sparse_wav(path: Path, seconds: int, rate: int, channels: int) -> None:
    """A 16-bit PCM wav whose samples are a hole in the file: gigabytes, no disk used."""
    data_bytes = seconds * rate * channels * 2
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
    header += b"data" + struct.pack("<I", data_bytes)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + data_bytes)


def test_two_hour_stereo_wav_is_too_long_without_being_decoded(tmp_path):
    _sparse_wav(tmp_path / "long.wav", 2 * 3600, 48000, 2)  # 1.4 GB of samples
    _tone(tmp_path / "short.wav")
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("wav_filename,wav_filesize,transcript\nlong.wav,1,ab\nshort.wav,1,ab\n")
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(csv_path), str(tmp_path / "work")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    peak_mib = int(out.stdout.split()[-1]) / 1024
    assert peak_mib < 1024, f"peak RSS {peak_mib:.0f} MiB"
    rejected = pd.read_csv(tmp_path / "work" / "corpus" / "rejected.csv")
    assert rejected.reason.tolist() == ["too_long"]
    assert rejected.detail[0].startswith("7200.00 s > --max_duration 10 s")
