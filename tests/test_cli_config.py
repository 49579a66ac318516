from pathlib import Path

import pytest
from typer.testing import CliRunner

import deepspeech_flow.cli as cli
from deepspeech_flow.config_loading import build_config

pytestmark = pytest.mark.unit  # `make test-fast`


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
    assert target == "train"
    assert not reuse
    assert retrain_from == "scratch"
    assert cfg.evaluation.beam_width == 8
    assert cfg.evaluation.scorer_path == Path("/tmp/lm.arpa")
    assert cfg.export.export_model_name == "digits"
    assert cfg.corpus.train_files == [Path("a.csv"), Path("b.csv")]
    assert cfg.model.n_hidden == 64
    assert cfg.training.epochs == 3
    assert cfg.training.train_batch_size == 4
    assert cfg.training.learning_rate == 0.0005
    assert cfg.model.dropout_rate == 0.1
    assert cfg.training.seed == 11
    assert cfg.checkpoint_dir == Path("/tmp/ck")
    assert cfg.export_dir == Path("/tmp/ex")
    assert cfg.training.checkpoint_steps == 7


def test_defaults_are_deepspeech_defaults(captured):
    result = CliRunner().invoke(cli.app, ["run", "--corpus", "cv/en"])
    assert result.exit_code == 0, result.output
    cfg, target, _, retrain_from = captured[0]
    assert retrain_from == "current"
    assert target == "export"
    assert cfg.workdir == Path("deepspeech-data")
    assert cfg.checkpoint_dir == Path("deepspeech-data/checkpoints")
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
    assert target == "evaluate"
    assert reuse


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
    assert bad.exit_code != 0
    assert "unknown augmentation" in bad.output


def _sample_value(annotation) -> tuple[list[str], object]:
    """Command-line words for a flag of this type and the value the config should hold."""
    from typing import Literal, get_args, get_origin

    base = next((a for a in get_args(annotation) if a is not type(None)), annotation)
    if annotation is bool:
        return [], True
    if annotation == list[Path]:
        return ["x.csv,y.csv"], [Path("x.csv"), Path("y.csv")]
    if get_origin(annotation) is Literal:
        choice = get_args(annotation)[-1]
        return [choice], choice
    if base is Path:
        return ["some/where"], Path("some/where")
    if annotation == list[str]:
        return [], None  # --augment's syntax: test_augment_flag_repeats
    if base is int:
        return ["1"], 1
    if base is float:
        return ["0.5"], 0.5
    return ["text"], "text"


def test_every_config_field_is_a_flag_but_the_listed_exceptions(captured):
    from deepspeech_core.config import PipelineConfig
    from deepspeech_flow.config_loading import FLAG_FIELDS, NOT_FLAGS

    for flag, (section, field) in FLAG_FIELDS.items():
        model = (
            PipelineConfig if section is None else PipelineConfig.model_fields[section].annotation
        )
        words, expected = _sample_value(model.model_fields[field].annotation)
        if expected is None or flag == "corpus":  # --corpus excludes the CSV flags
            continue
        captured.clear()
        result = CliRunner().invoke(cli.app, ["validate", f"--{flag}", *words])
        assert result.exit_code == 0, f"--{flag}: {result.output}"
        cfg = captured[0][0]
        held = getattr(cfg if section is None else getattr(cfg, section), field)
        assert held == expected, f"--{flag} did not set {section}.{field}"
    sections = [n for n, i in PipelineConfig.model_fields.items() if i.annotation is not Path]
    every = {
        (s, f) for s in sections for f in PipelineConfig.model_fields[s].annotation.model_fields
    }
    assert every - set(FLAG_FIELDS.values()) == set(NOT_FLAGS)


def test_a_new_config_field_becomes_a_flag_and_clashes_are_refused(monkeypatch):
    from pydantic import Field

    import deepspeech_flow.config_loading as loading
    from deepspeech_core.config import EvaluationConfig, PipelineConfig

    class Grown(EvaluationConfig):
        decoder_threads: int = Field(1, description="A field added later.")

    class GrownPipeline(PipelineConfig):
        evaluation: Grown = Field(default_factory=Grown)

    monkeypatch.setattr(loading, "PipelineConfig", GrownPipeline)
    assert loading.config_flags()["decoder_threads"] == ("evaluation", "decoder_threads")

    class Clashing(EvaluationConfig):
        epochs: int = 3  # also training.epochs

    class ClashingPipeline(PipelineConfig):
        evaluation: Clashing = Field(default_factory=Clashing)

    monkeypatch.setattr(loading, "PipelineConfig", ClashingPipeline)
    with pytest.raises(ValueError, match=r"would both be --epochs: give one another flag name"):
        loading.config_flags()


def test_resolved_makes_every_path_field_absolute_from_the_starting_directory(
    tmp_path, monkeypatch
):
    """A deployment's worker runs elsewhere: relative paths mean where the run started."""
    from deepspeech_core.config import PipelineConfig

    monkeypatch.chdir(tmp_path)
    data = {
        "workdir": "w",
        "corpus": {"train_files": ["a.csv"], "alphabet_config_path": "alphabet.txt"},
        "training": {"checkpoint_dir": "ck", "load_checkpoint_dir": "source/model"},
        "evaluation": {"scorer_path": "lm.scorer", "test_output_file": "out.json"},
        "export": {"export_dir": "ex"},
    }
    resolved = PipelineConfig.model_validate(data).resolved()
    monkeypatch.chdir("/")

    assert resolved.training.load_checkpoint_dir == tmp_path / "source" / "model"
    assert resolved.corpus.train_files == [tmp_path / "a.csv"]
    dumped = resolved.model_dump()
    paths = [
        v for section in dumped.values() if isinstance(section, dict) for v in section.values()
    ]
    paths += [dumped["workdir"]]
    flat = [p for v in paths for p in (v if isinstance(v, list) else [v]) if isinstance(p, Path)]
    assert len(flat) == 8, flat
    assert all(p.is_absolute() for p in flat), flat
    assert resolved.resolved() == resolved, "resolving twice changes nothing"
