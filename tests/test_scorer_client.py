"""build-lm --scorer writes a package the real DeepSpeech 0.9.3 client loads and decodes with.

libdeepspeech.so from the `deepspeech` 0.9.3 wheel (fetched and cached by `make
deepspeech-clients`), called through its C API in a child process.
"""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from deepspeech_core.checkpoints import load_model
from deepspeech_core.kenlm_tools import KenLMToolError, find_tool
from deepspeech_core.metrics import corpus_error_rates
from deepspeech_core.scorer_package import read_scorer
from deepspeech_flow.cli import app
from tests.libdeepspeech import library, run_client, write_client_graph

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client_setup(speaking_model, tmp_path_factory):
    try:
        find_tool("build_binary")
    except KenLMToolError as exc:
        pytest.skip(str(exc))
    lib = library("tensorflow")
    if lib is None:
        pytest.skip("libdeepspeech 0.9.3 could not be fetched (make libdeepspeech; needs PyPI)")
    cfg, corpus, _, _ = speaking_model
    tmp = tmp_path_factory.mktemp("client")
    model, spec, _ = load_model(cfg.checkpoint_dir)
    graph = write_client_graph(model, spec, tmp / "output_graph.pb")
    scorer = tmp / "kenlm.scorer"
    result = CliRunner().invoke(
        app,
        ["build-lm", str(corpus.splits["train"]), "--scorer", str(scorer)]
        + ["--alphabet_config_path", str(corpus.alphabet_path), "--default_alpha", "0.8"]
        + ["--default_beta", "1.5"],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    test = pd.read_csv(corpus.splits["test"], keep_default_na=False)
    return lib, graph, scorer, spec, test


def test_client_accepts_the_scorer_and_decodes_better_with_it(client_setup, tmp_path):
    lib, graph, scorer, spec, test = client_setup
    package = read_scorer(scorer)
    assert (package.alpha, package.beta) == (0.8, 1.5)
    wavs = list(test.wav_filename)
    plain = run_client(lib, graph, wavs, beam_width=256)
    with_lm = run_client(lib, graph, wavs, scorer=scorer, beam_width=256)
    assert plain["create"] == 0
    assert with_lm["create"] == 0
    assert with_lm["scorer"] == 0, with_lm["scorer_message"]
    references = list(test.transcript)
    wer_plain, _ = corpus_error_rates(references, plain["texts"])
    wer_lm, _ = corpus_error_rates(references, with_lm["texts"])
    print(f"client WER without scorer {wer_plain:.4f}, with {wer_lm:.4f} ({len(wavs)} clips)")
    assert wer_lm <= wer_plain
    # The client's beam search only spells the package's words (the last one may be cut
    # short: a prefix of one).
    vocabulary = set(package.words(spec.alphabet))
    prefixes = {w[:n] for w in vocabulary for n in range(1, len(w) + 1)}
    for text in with_lm["texts"]:
        *words, last = text.split() or [""]
        assert all(w in vocabulary for w in words), text
        assert not last or last in prefixes, text
    assert any(text.strip() for text in with_lm["texts"])

    # A package without its trie, or a bare ARPA, is refused by the same client.
    truncated = tmp_path / "no_trie.scorer"
    truncated.write_bytes(scorer.read_bytes()[: package.lm_end])
    assert run_client(lib, graph, scorer=truncated)["scorer"] != 0
    arpa = tmp_path / "lm.arpa"
    arpa.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\tone\n\n\\end\\\n")
    assert run_client(lib, graph, scorer=arpa)["scorer"] != 0
