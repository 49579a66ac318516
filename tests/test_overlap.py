"""Nothing of the user's is written (issue 11, point 3): inputs overlapping outputs are refused."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from deepspeech_core.config import CorpusConfig, FeatureConfig
from deepspeech_core.data.validation import validate_corpus
from deepspeech_core.error_kinds import ErrorKind
from deepspeech_core.workdir.input_overlap import OverlapError, check_inputs_outside_outputs
from deepspeech_flow.cli import app
from flows.train_cv import train_cv  # noqa: F401 - Prefect's logging set up outside CliRunner

CSV = "wav_filename,wav_filesize,transcript\n/nowhere/a.wav,0,a\n"


def _snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_csv_in_the_workdirs_corpus_is_refused_and_left_as_it_is(tmp_path):
    """Before: `--train_files WORKDIR/corpus/train.csv` was rewritten by its own validation."""
    workdir = tmp_path / "work"
    (workdir / "corpus").mkdir(parents=True)
    mine = workdir / "corpus" / "train.csv"
    mine.write_text(CSV)
    before = _snapshot(workdir)
    cfg = CorpusConfig(train_files=[mine], test_files=[mine])
    with pytest.raises(OverlapError, match=r"--train_files .*train\.csv is inside .*corpus.*cp"):
        validate_corpus(cfg, FeatureConfig(), workdir)
    assert _snapshot(workdir) == before


@pytest.mark.parametrize("where", ["corpus", "corpus/cv/en", "features", "reports/x"])
def test_a_common_voice_corpus_inside_an_output_directory_is_refused(tmp_path, where):
    """Before: `--corpus WORKDIR/corpus` got the imported clips in its own clips/."""
    workdir = tmp_path / "work"
    corpus = workdir / where
    (corpus / "clips").mkdir(parents=True)
    (corpus / "train.tsv").write_text("path\tsentence\n")
    before = _snapshot(workdir)
    with pytest.raises(OverlapError, match=f"--corpus {corpus} is inside"):
        validate_corpus(CorpusConfig(corpus=corpus), FeatureConfig(), workdir)
    assert _snapshot(workdir) == before
    assert sorted(p.name for p in (corpus / "clips").iterdir()) == []


def test_a_workdir_inside_the_corpus_clips_is_refused(tmp_path):
    corpus = tmp_path / "cv" / "en"
    (corpus / "clips").mkdir(parents=True)
    with pytest.raises(OverlapError, match="inside the corpus's own"):
        check_inputs_outside_outputs(CorpusConfig(corpus=corpus), corpus / "clips" / "work")


def test_overlap_through_a_symlink_is_seen(tmp_path):
    workdir = tmp_path / "work"
    (workdir / "corpus").mkdir(parents=True)
    (workdir / "corpus" / "dev.csv").write_text(CSV)
    (tmp_path / "link").symlink_to(workdir / "corpus")
    cfg = CorpusConfig(dev_files=[tmp_path / "link" / "dev.csv"])
    with pytest.raises(OverlapError, match="--dev_files"):
        check_inputs_outside_outputs(cfg, workdir)


def test_an_output_file_over_an_input_is_refused(tmp_path):
    (tmp_path / "test.csv").write_text(CSV)
    cfg = CorpusConfig(test_files=[tmp_path / "test.csv"])
    with pytest.raises(OverlapError, match="--test_output_file .* over .* --test_files"):
        check_inputs_outside_outputs(
            cfg, tmp_path / "work", {"--test_output_file": tmp_path / "test.csv"}
        )


def test_inputs_beside_the_outputs_are_fine(tmp_path):
    """A CSV or corpus in the work directory but outside what the stages write is an input."""
    workdir = tmp_path / "work"
    (workdir / "cv" / "clips").mkdir(parents=True)
    (workdir / "mine.csv").write_text(CSV)
    check_inputs_outside_outputs(CorpusConfig(train_files=[workdir / "mine.csv"]), workdir)
    check_inputs_outside_outputs(CorpusConfig(corpus=workdir / "cv"), workdir)
    check_inputs_outside_outputs(CorpusConfig(corpus=workdir / "cv"), workdir / "cv")


@pytest.mark.usefixtures("prefect_harness")
def test_the_cli_says_what_to_do(tmp_path):
    workdir = tmp_path / "work"
    (workdir / "corpus").mkdir(parents=True)
    (workdir / "corpus" / "test.csv").write_text(CSV)
    result = CliRunner().invoke(
        app,
        [
            "validate",
            "--test_files",
            str(workdir / "corpus" / "test.csv"),
            "--workdir",
            str(workdir),
        ],
    )
    assert result.exit_code == ErrorKind.CONFIG, result.output
    assert "error: --test_files" in result.output
    assert "Copy it out of there" in result.output
    assert (workdir / "corpus" / "test.csv").read_text() == CSV
