"""--recipe small_data (one flag, user flags win, recorded with the model), speed
perturbation, and error rates per speaker, gender, age and accent."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from deepspeech_core.config import RECIPES, ExportConfig, PipelineConfig
from deepspeech_core.evaluate.error_rates import error_counts
from deepspeech_core.evaluate.evaluation import evaluate
from deepspeech_core.evaluate.speakers import clip_speakers
from deepspeech_core.export.export_model import export_model
from deepspeech_core.features.augmentation import parse_augmentation
from deepspeech_core.model.checkpoints import RECIPE_FILE
from deepspeech_core.train.loop import train
from deepspeech_flow.config_loading import build_config
from tasks.evaluate import evaluation_markdown
from tasks.train import _loss_table


def test_recipe_sets_its_components_and_given_flags_win(tmp_path):
    plain = PipelineConfig()
    cfg = PipelineConfig.model_validate({"training": {"recipe": "small_data"}})
    for (section, field), value in RECIPES["small_data"].items():
        assert getattr(getattr(cfg, section), field) == value
        assert getattr(getattr(plain, section), field) != value, (section, field)
    for spec in cfg.training.augment:
        parse_augmentation(spec)  # every augmentation the recipe names parses

    # The CLI and a --config file fill the same model: what the user gave wins.
    config = tmp_path / "run.yaml"
    config.write_text("training:\n  es_epochs: 3\n")
    flags = {"recipe": "small_data", "dropout_rate": 0.1, "augment": ["time_mask[p=1]"]}
    given = build_config(config, {**flags, "n_hidden": None})
    assert given.model.dropout_rate == 0.1
    assert given.training.augment == ["time_mask[p=1]"]
    assert given.training.es_epochs == 3
    assert given.model.feature_norm and given.training.early_stop  # the rest: the recipe's
    # What tasks re-validate (a resolved copy, Prefect's parameters) keeps the values.
    assert PipelineConfig.model_validate(given.model_dump()) == given
    resolved = given.resolved()
    assert (resolved.model, resolved.training.augment) == (given.model, given.training.augment)


def test_recipe_is_recorded_with_the_training_and_the_export(trained, tmp_path):
    cfg, _, features, _ = trained
    training = {"epochs": 1, "train_batch_size": 8, "dev_batch_size": 8, "seed": 7}
    recipe = PipelineConfig.model_validate(
        {
            "model": {"n_hidden": 16, "dropout_rate": 0.2},  # the user's dropout wins
            "training": {**training, "recipe": "small_data"},
        }
    )
    assert recipe.features == cfg.features  # the cache's features
    checkpoint_dir = tmp_path / "ckpt"
    train(features, recipe.model, recipe.features, recipe.training, checkpoint_dir)
    record = json.loads((checkpoint_dir / RECIPE_FILE).read_text())
    assert record["name"] == "small_data"
    assert record["components"]["model.dropout_rate"] == {"recipe": 0.3, "used": 0.2}
    assert record["components"]["model.feature_norm"] == {"recipe": True, "used": True}
    augment = record["components"]["training.augment"]
    assert augment["used"] == augment["recipe"] and augment["used"][0].startswith("speed")

    manifest = export_model(checkpoint_dir, tmp_path / "export", ExportConfig(export_tflite=False))
    metadata = json.loads(manifest.metadata.read_text())
    assert metadata["recipe"] == record
    assert metadata["feature_norm"] is not None and len(metadata["feature_norm"]["mean"]) == 26
    card = manifest.model_card.read_text()
    assert "Recipe: `small_data`" in card and "dropout_rate=0.2" in card


def test_speed_perturbation_draws_0_9_1_0_and_1_1():
    speed = parse_augmentation("speed[delta=0.1]")
    x = np.tile(np.arange(26, dtype=np.float32), (100, 1))
    ctx = {"win_step_ms": 20.0, "min_frames": 5}
    rng = np.random.default_rng(0)
    lengths = {len(speed.apply(x, rng, 0.0, ctx)) for _ in range(60)}
    assert lengths == {91, 100, 111}  # 100 frames / 1.1, / 1.0, / 0.9
    # The coefficient axis moves with the factor (as a spectrum does), the width does not.
    outs = [speed.apply(x, rng, 0.0, ctx) for _ in range(30)]
    assert all(o.shape[1] == 26 for o in outs)
    assert any(not np.allclose(o[0], x[0]) for o in outs if len(o) != 100)
    # Never shorter than CTC needs for the transcript.
    short = speed.apply(x[:10], np.random.default_rng(1), 0.0, {**ctx, "min_frames": 10})
    assert len(short) >= 10


def test_per_speaker_report_in_json_artifact_and_model_card(trained, tmp_path):
    cfg, _, features, _ = trained
    manifest = evaluate(features, cfg.checkpoint_dir, cfg.evaluation, tmp_path / "reports")
    report = json.loads(manifest.report_path.read_text())
    samples = json.loads(manifest.test_output_path.read_text())
    test_csv = pd.read_csv(cfg.workdir / "corpus" / "test.csv", keep_default_na=False)
    who = clip_speakers(list(test_csv.wav_filename), list(test_csv.source))
    speaker_of = {w: s["client_id"] for w, s in zip(test_csv.wav_filename, who, strict=True)}
    assert len(set(speaker_of.values())) >= 2 and all(speaker_of.values())

    by_speaker = report["by_speaker"]
    assert set(by_speaker) == set(speaker_of.values())
    assert sum(m["samples"] for m in by_speaker.values()) == len(samples)
    for speaker, metrics in by_speaker.items():  # corpus-level rates over that speaker
        mine = [s for s in samples if speaker_of[s["wav_filename"]] == speaker]
        counts = [error_counts(s["src"], s["res"]) for s in mine]
        wer = sum(c.word_distance for c in counts) / sum(c.word_length for c in counts)
        assert metrics["samples"] == len(mine) and metrics["wer"] == pytest.approx(wer)
    # The demo corpus fills gender and accent, not age: only filled columns are reported.
    assert set(report["by_demographic"]) == {"gender", "accent"}
    assert set(report["by_demographic"]["gender"]) <= {"female", "male"}

    markdown = evaluation_markdown(manifest)
    assert "| speaker (client_id) |" in markdown and "| gender |" in markdown
    for speaker in by_speaker:
        assert f"| {speaker[:12]} |" in markdown

    exported = export_model(
        cfg.checkpoint_dir, tmp_path / "export", ExportConfig(export_tflite=False), manifest
    )
    card = exported.model_card.read_text()
    assert "| speaker (client_id) |" in card and "| accent |" in card
    assert json.loads(exported.metadata.read_text())["test_by_speaker"] == by_speaker


def test_clips_without_speaker_columns_give_no_groups(tmp_path):
    """DeepSpeech CSVs carry no client_id: no per-speaker table rather than one '' row."""
    csv = tmp_path / "test.csv"
    csv.write_text("wav_filename,wav_filesize,transcript\na.wav,1,a\n")
    who = clip_speakers(["/w/a.wav"], [str(csv)])
    assert who == [{"client_id": "", "gender": "", "age": "", "accent": ""}]
    from deepspeech_core.evaluate.speakers import group_by

    assert group_by([w["client_id"] for w in who], ["sample"]) == {}


def _early_stop_epochs(history: dict, patience: int, min_delta: float) -> int | None:
    """After how many epochs --best_metric dev_wer's early stop comes (None: not at all).

    Its rule, written out: dev WER once it was below 1 (any fall counts), dev loss by
    min_delta before (while the model gets no word right).
    """
    best_wer, best_loss, waited = float("inf"), float("inf"), 0
    for epoch, (loss, wer) in enumerate(zip(history["dev_loss"], history["dev_wer"], strict=True)):
        if min(wer, best_wer) < 1.0:
            improved = wer < best_wer
        else:
            improved = loss < best_loss - min_delta
        best_wer, best_loss = min(best_wer, wer), min(best_loss, loss)
        waited = 0 if improved else waited + 1
        if waited >= patience:
            return epoch + 1
    return None


def test_dev_wer_picks_the_best_checkpoint_and_the_early_stop(speaking_model, tmp_path):
    """--best_metric dev_wer: each epoch's greedy dev WER is what evaluation measures; the
    best checkpoint is the epoch with the lowest, and epochs without a fall stop training."""
    cfg, _, features, model = speaking_model
    rules = cfg.training.model_copy(
        update={
            "epochs": 5,
            "best_metric": "dev_wer",
            "early_stop": True,
            "es_epochs": 2,
            "load_checkpoint_dir": model.checkpoint_dir,  # a model that says something
        }
    )
    result = train(features, cfg.model, cfg.features, rules, tmp_path / "ck")
    history = json.loads((tmp_path / "ck" / "history.json").read_text())
    wers = history["dev_wer"]
    assert len(wers) == len(history["dev_loss"]) == result.epochs
    assert result.dev_wer_history == wers
    table = _loss_table(result)  # the UI's training-loss artifact
    assert [row["dev_wer"] for row in table] == [round(w, 4) for w in wers]
    assert all(0.0 < w < 1.0 for w in wers), wers  # partly right, as the fixture's model
    stop = _early_stop_epochs(history, 2, rules.es_min_delta)  # None: no stop in 5 epochs
    assert stop == result.epochs if result.epochs < 5 else stop in (None, 5), (stop, wers)
    best_epoch = wers.index(min(wers))
    steps_per_epoch = result.steps // result.epochs
    assert str(result.best_checkpoint).endswith(f"ckpt-{(best_epoch + 1) * steps_per_epoch}")
    greedy = cfg.evaluation.model_copy(update={"beam_width": 1})
    report = evaluate(features, tmp_path / "ck", greedy, tmp_path / "reports", split="dev")
    assert report.wer == pytest.approx(min(wers))


def test_dev_wer_waits_for_the_first_words_before_counting_patience(trained, tmp_path):
    """A new model's dev WER stays at 1 (CTC emits blanks first) while its loss falls:
    early stopping counts dev loss until the WER first falls below 1."""
    cfg, _, features, _ = trained
    rules = cfg.training.model_copy(
        update={"epochs": 5, "best_metric": "dev_wer", "early_stop": True, "es_epochs": 2}
    )
    result = train(features, cfg.model, cfg.features, rules, tmp_path / "ck")
    history = json.loads((tmp_path / "ck" / "history.json").read_text())
    assert all(w >= 1.0 for w in history["dev_wer"]), history  # no word right yet
    assert result.epochs == 5, f"stopped before the model learnt to say a word: {history}"
    assert _early_stop_epochs(history, 2, rules.es_min_delta) is None
    assert result.best_checkpoint is not None
    best = history["dev_loss"].index(min(history["dev_loss"]))
    assert str(result.best_checkpoint).endswith(f"ckpt-{(best + 1) * result.steps // 5}")
