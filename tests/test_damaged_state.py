"""State a power loss, a full disk or a SIGKILL damaged: healed, or refused with the file
named (issue 11, points 4 and 12)."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepspeech_core import export_store, io_utils
from deepspeech_core.alphabet import Alphabet
from deepspeech_core.checkpoints import CheckpointError, load_model
from deepspeech_core.corpus import validate_corpus
from deepspeech_core.dataset import SplitIndex
from deepspeech_core.feature_cache import build_feature_cache
from deepspeech_core.training import train
from deepspeech_core.training_state import CheckpointStateError
from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[1]


def _features_view(manifest) -> dict:
    """Per split: each clip's hash and features, as training reads them."""
    alphabet = Alphabet.load(manifest.alphabet_path)
    view = {}
    for split, path in manifest.indexes.items():
        index = SplitIndex.load(path, alphabet)
        hashes = pd.read_csv(path, dtype=str).content_hash
        view[split] = [(h, index.features(i).tobytes()) for i, h in enumerate(hashes)]
    return view


def _csvs(workdir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((workdir / "corpus").glob("*.csv"))}


def test_damaged_corpus_and_feature_cache_heal_on_the_next_run(tiny_cv, tmp_path):
    cfg = tiny_config(tmp_path / "work", tiny_cv)
    work = cfg.workdir
    corpus = validate_corpus(cfg.corpus, cfg.features, work)
    features = build_feature_cache(corpus, cfg.features, work, shard_size=8)
    csvs, view = _csvs(work), _features_view(features)
    clip = Path(pd.read_csv(corpus.splits["train"]).wav_filename[0])
    clip_bytes = clip.read_bytes()
    shard = sorted((features.cache_dir / "shards").glob("*.npy"))[1]

    # what a power loss after the renames leaves: empty or cut-short files
    (work / "corpus" / "manifest.json").write_bytes(b"")
    clip.write_bytes(b"")
    (features.cache_dir / "manifest.json").write_bytes(b"")
    os.truncate(shard, shard.stat().st_size // 2)

    again = validate_corpus(cfg.corpus, cfg.features, work)
    assert not again.reused and again.counts == corpus.counts
    assert clip.read_bytes() == clip_bytes, "the emptied clip was converted again"
    assert _csvs(work) == csvs
    healed = build_feature_cache(again, cfg.features, work, shard_size=8)
    assert 0 < healed.computed <= 8, "only the truncated shard was computed again"
    assert _features_view(healed) == view

    # damage behind a manifest that looks up to date: the shard check still sees it
    os.truncate(shard, 100)
    (features.cache_dir / "index_train.csv").write_bytes(b"")
    rerun = build_feature_cache(again, cfg.features, work, shard_size=8)
    assert 0 < rerun.computed <= 8 and _features_view(rerun) == view


def test_checkpoint_state_file_gone_is_refused_not_overwritten(trained, tmp_path):
    cfg, _, features, model = trained
    ckpt = tmp_path / "ckpt"
    shutil.copytree(cfg.checkpoint_dir, ckpt)
    state = ckpt / "train" / "checkpoint"
    state.unlink()
    before = {p: p.stat().st_mtime_ns for p in ckpt.rglob("ckpt-*")}
    more = cfg.training.model_copy(update={"epochs": cfg.training.epochs + 1})
    with pytest.raises(CheckpointStateError) as info:
        train(features, cfg.model, cfg.features, more, ckpt)
    message = str(info.value)
    assert f"{state} is missing" in message and f"ckpt-{model.steps}" in message
    assert {p: p.stat().st_mtime_ns for p in ckpt.rglob("ckpt-*")} == before, "untouched"

    for damaged in ("", f'model_checkpoint_path: "ckpt-{model.steps}"\n'):  # empty, cut
        state.write_text(damaged)  # named and refused as well
        with pytest.raises(CheckpointStateError, match="is damaged"):
            train(features, cfg.model, cfg.features, more, ckpt)
    best_state = ckpt / "best" / "checkpoint"
    best_text = best_state.read_text()
    best_state.unlink()
    with pytest.raises(CheckpointStateError, match="best"):
        load_model(ckpt, "best")  # evaluate and export say it too
    best_state.write_text(best_text)

    # the lines the message gives restore the training where it was
    state.write_text(message.split(f"into {state}:\n")[1].split("\nor, to")[0] + "\n")
    resumed = train(features, cfg.model, cfg.features, cfg.training, ckpt)
    assert resumed.resumed_from_step == model.steps == resumed.steps


def test_damaged_model_description_or_history_do_not_stop_a_resume(trained, tmp_path):
    cfg, _, features, model = trained
    ckpt = tmp_path / "ckpt"
    shutil.copytree(cfg.checkpoint_dir, ckpt)
    (ckpt / "model.json").write_bytes(b"")
    (ckpt / "history.json").write_bytes(b'{"train_loss": [1.0, ')
    resumed = train(features, cfg.model, cfg.features, cfg.training, ckpt)
    assert resumed.resumed_from_step == model.steps
    assert load_model(ckpt, "best")[1].model.n_hidden == cfg.model.n_hidden  # rewritten


def test_state_files_are_synced_before_they_count(trained, tmp_path, monkeypatch):
    """fsync of the file, then of its directory after the rename (manifests, checkpoint
    metadata, exports)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(io_utils.os, "fsync", fsync)
    target = tmp_path / "d" / "manifest.json"
    io_utils.atomic_write_json(target, {"a": 1})
    assert len(synced) == 2 and Path(synced[0]).name.startswith(".manifest.json.")
    assert synced[1] == str(target.parent)

    synced.clear()
    staging, name = export_store.new_staging(tmp_path / "export")
    (staging / "saved_model").mkdir()
    (staging / "saved_model" / "saved_model.pb").write_bytes(b"x")
    (staging / "metadata.json").write_text("{}")
    version = export_store.commit(staging, name)
    export_store.promote(tmp_path / "export", version)
    moved = [s.replace(str(staging), str(version)) for s in synced]
    for path in ("saved_model/saved_model.pb", "metadata.json", "saved_model", ""):
        assert str(version / path).rstrip("/") in moved, path
    assert synced.count(str(tmp_path / "export")) == 2, "after the rename and the promotion"

    synced.clear()
    cfg, _, features, _ = trained
    train(features, cfg.model, cfg.features, cfg.training, tmp_path / "ckpt")
    for name in ("model.json", "train/checkpoint", "best/checkpoint", "train/ckpt-3.index"):
        assert any(s.endswith(name) for s in synced) or any(
            Path(s).name.startswith(f".{Path(name).name}.") for s in synced
        ), name


# --- point 12: SIGKILL while a checkpoint is being written ----------------------------

KILL_IN_SAVE = """
import glob, os, signal, sys
from pathlib import Path
from deepspeech_core import training_state
from deepspeech_core.config import FeatureConfig, ModelConfig, TrainingConfig
from deepspeech_core.manifests import FeatureCacheManifest
from deepspeech_core.training import train

manifest = FeatureCacheManifest.model_validate_json(Path(sys.argv[1]).read_text())
cfg = TrainingConfig.model_validate_json(Path(sys.argv[2]).read_text())
kill_step, mode = int(sys.argv[4]), sys.argv[5]
save = training_state.CheckpointSaver.save

def killed_in_save(self, step):
    if step != kill_step:
        return save(self, step)
    if mode == "unlisted":  # files half written, the state file not yet updated
        prefix = self.ckpt.write(os.path.join(self.periodic.directory, f"ckpt-{step}"))
    else:  # "torn": listed in the state file, its data cut short
        prefix = self.periodic.save(checkpoint_number=step)
    data = glob.glob(prefix + ".data-*")[0]
    os.truncate(data, os.path.getsize(data) // 2)
    os.kill(os.getpid(), signal.SIGKILL)

training_state.CheckpointSaver.save = killed_in_save
train(manifest, ModelConfig(n_hidden=32), FeatureConfig(), cfg, Path(sys.argv[3]))
"""


def test_sigkill_during_a_checkpoint_write_resumes_to_identical_weights(trained, tmp_path):
    cfg, _, features, _ = trained
    training = cfg.training.model_copy(update={"deterministic": True, "checkpoint_steps": 2})
    (tmp_path / "features.json").write_text(features.model_dump_json())
    (tmp_path / "training.json").write_text(training.model_dump_json())
    script = tmp_path / "kill_in_save.py"
    script.write_text(KILL_IN_SAVE)

    def run(ckpt: Path, kill_step: int, mode: str = "-") -> subprocess.CompletedProcess:
        args = [str(tmp_path / "features.json"), str(tmp_path / "training.json"), str(ckpt)]
        return subprocess.run(
            [sys.executable, str(script), *args, str(kill_step), mode],
            cwd=REPO,
            capture_output=True,
            text=True,
        )

    clean = run(tmp_path / "clean", 0)
    assert clean.returncode == 0, clean.stderr[-2000:]
    expected, _, _ = load_model(tmp_path / "clean", "last")
    for mode in ("unlisted", "torn"):
        ckpt = tmp_path / mode
        killed = run(ckpt, 4, mode)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        resumed = run(ckpt, 0)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        if mode == "torn":
            assert f"{ckpt / 'train' / 'ckpt-4'} is unusable" in resumed.stderr
        got, _, _ = load_model(ckpt, "last")
        for a, b in zip(got.weights, expected.weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{a.path} ({mode})")


def test_damaged_model_json_in_load_model_says_what_to_do(tmp_path):
    (tmp_path / "model.json").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no trained model"):
        load_model(tmp_path)
