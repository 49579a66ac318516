from pathlib import Path

import pytest
from typer.testing import CliRunner

import deepspeech_flow.cli as cli
from deepspeech_flow.config_loading import build_config


@pytest.fixture
def captured(monkeypatch):
    calls = []
    monkeypatch.setattr(
        cli,
        "_run_flow",
        lambda cfg, target, reuse, retrain_from: calls.append((cfg, target, reuse, retrain_from)),
    )
    return calls


@pytest.mark.parametrize("style", ["underscore", "dash"])
def test_deepspeech_flags_in_both_spellings(captured, style):
    def flag(name):
        return f"--{name if style == 'underscore' else name.replace('_', '-')}"

    args = [
        "train",
        flag("train_files"),
        "a.csv,b.csv",
        flag("dev_files"),
        "d.csv",
        flag("test_files"),
        "t.csv",
        flag("n_hidden"),
        "64",
        "--epochs",
        "3",
        flag("train_batch_size"),
        "4",
        flag("learning_rate"),
        "0.0005",
        flag("dropout_rate"),
        "0.1",
        flag("checkpoint_dir"),
        "/tmp/ck",
        flag("export_dir"),
        "/tmp/ex",
        flag("checkpoint_steps"),
        "7",
        "--seed",
        "11",
        flag("beam_width"),
        "8",
        "--scorer",
        "/tmp/lm.arpa",
        flag("export_model_name"),
        "digits",
        flag("retrain_from"),
        "scratch",
    ]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    cfg, target, reuse, retrain_from = captured[0]
    assert target == "train" and not reuse and retrain_from == "scratch"
    assert cfg.evaluation.beam_width == 8 and cfg.evaluation.scorer_path == Path("/tmp/lm.arpa")
    assert cfg.export.export_model_name == "digits"
    assert cfg.corpus.train_files == [Path("a.csv"), Path("b.csv")]
    assert cfg.model.n_hidden == 64 and cfg.training.epochs == 3
    assert cfg.training.train_batch_size == 4 and cfg.training.learning_rate == 0.0005
    assert cfg.model.dropout_rate == 0.1 and cfg.training.seed == 11
    assert cfg.checkpoint_dir == Path("/tmp/ck") and cfg.export_dir == Path("/tmp/ex")
    assert cfg.training.checkpoint_steps == 7


def test_defaults_are_deepspeech_defaults(captured):
    result = CliRunner().invoke(cli.app, ["run", "--corpus", "cv/en"])
    assert result.exit_code == 0, result.output
    cfg, target, _, retrain_from = captured[0]
    assert retrain_from == "current"
    assert target == "export"
    assert cfg.workdir == Path("deepspeech-data") and cfg.checkpoint_dir == Path(
        "deepspeech-data/checkpoints"
    )
    assert (cfg.model.n_hidden, cfg.model.dropout_rate, cfg.training.learning_rate) == (
        2048,
        0.05,
        0.001,
    )
    assert (cfg.features.feature_win_len, cfg.features.feature_win_step) == (32, 20)


def test_yaml_then_flags(tmp_path, captured):
    yaml_file = tmp_path / "cfg.yaml"
    yaml_file.write_text("model:\n  n_hidden: 128\ntraining:\n  epochs: 9\n  train_batch_size: 2\n")
    result = CliRunner().invoke(cli.app, ["evaluate", "--config", str(yaml_file), "--epochs", "4"])
    assert result.exit_code == 0, result.output
    cfg, target, reuse, _ = captured[0]
    assert (cfg.model.n_hidden, cfg.training.epochs, cfg.training.train_batch_size) == (128, 4, 2)
    assert target == "evaluate" and reuse


def test_unknown_yaml_keys_are_errors(tmp_path):
    yaml_file = tmp_path / "cfg.yaml"
    yaml_file.write_text("model:\n  n_hiden: 128\n")
    with pytest.raises(ValueError, match="n_hiden"):
        build_config(yaml_file, {})


def test_corpus_and_csvs_are_exclusive():
    with pytest.raises(ValueError, match="either"):
        build_config(None, {"corpus": Path("cv"), "train_files": ["a.csv"]})


def test_augment_flag_repeats(captured):
    args = ["train", "--augment", "time_mask[p=0.5]", "--augment", "add[p=0.2,stddev=1~0.5]"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert captured[0][0].training.augment == ["time_mask[p=0.5]", "add[p=0.2,stddev=1~0.5]"]
    bad = CliRunner().invoke(cli.app, ["train", "--augment", "warp[p=1]"])
    assert bad.exit_code != 0 and "unknown augmentation" in bad.output
