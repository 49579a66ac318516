"""Decoders, the ARPA builder, and a language model that measurably helps."""

import json

import numpy as np
import pandas as pd
import pytest

from deepspeech_core.alphabet import Alphabet
from deepspeech_core.config import DecoderConfig
from deepspeech_core.decoding import (
    BeamSearchDecoder,
    DecoderError,
    GreedyDecoder,
    LMBeamSearchDecoder,
    make_decoder,
)
from deepspeech_core.evaluation import evaluate
from deepspeech_core.language_model import build_arpa, write_arpa

ALPHABET = Alphabet(" abc")


def one_hot_logits(labels: list[int], n_classes: int = 5, peak: float = 8.0) -> np.ndarray:
    logits = np.zeros((len(labels), n_classes), np.float32)
    logits[np.arange(len(labels)), labels] = peak
    return logits


def test_greedy_and_beam_on_clear_logits():
    blank = ALPHABET.blank_index
    # a a _ b b _ b ' ' c  ->  "abb c" (repeats merged, a blank separates the two b's)
    logits = one_hot_logits([1, 1, blank, 2, 2, blank, 2, 0, 3])
    assert GreedyDecoder(ALPHABET).decode(logits) == "abb c"
    assert BeamSearchDecoder(ALPHABET, beam_width=16).decode(logits) == "abb c"


def test_beam_search_finds_what_best_path_misses():
    # Two frames; per frame P(a)=0.4, P(blank)=0.6 (b, c, space ~0). The best path is
    # "blank blank" (0.36) but "a" sums a_, _a and aa: 0.24 + 0.24 + 0.16 = 0.64.
    p = np.full((2, 5), 1e-6, np.float32)
    p[:, 1], p[:, 4] = 0.4, 0.6
    logits = np.log(p)
    assert GreedyDecoder(ALPHABET).decode(logits) == ""
    assert BeamSearchDecoder(ALPHABET, beam_width=8).decode(logits) == "a"


def test_make_decoder_follows_the_config(tmp_path):
    assert isinstance(make_decoder(ALPHABET, DecoderConfig(beam_width=1)), GreedyDecoder)
    assert isinstance(make_decoder(ALPHABET, DecoderConfig()), BeamSearchDecoder)
    assert DecoderConfig().beam_width == 1024  # DeepSpeech's default
    arpa = write_arpa(["ab c", "c ab"], tmp_path / "lm.arpa", order=2)
    decoder = make_decoder(ALPHABET, DecoderConfig(scorer_path=arpa, beam_width=32))
    assert isinstance(decoder, LMBeamSearchDecoder)


def test_bad_scorer_paths_say_what_to_do(tmp_path):
    with pytest.raises(DecoderError, match="does not exist"):
        make_decoder(ALPHABET, DecoderConfig(scorer_path=tmp_path / "missing.scorer"))
    fake = tmp_path / "kenlm.scorer"
    fake.write_bytes(b"not a language model at all" * 10)
    with pytest.raises(DecoderError, match="lm.binary"):
        make_decoder(ALPHABET, DecoderConfig(scorer_path=fake))
    arpa = write_arpa(["ab"], tmp_path / "lm.arpa", order=1)
    with pytest.raises(DecoderError, match="space"):
        make_decoder(Alphabet("abc"), DecoderConfig(scorer_path=arpa))


def test_arpa_is_a_normalised_backoff_model(tmp_path):
    kenlm = pytest.importorskip("kenlm")
    sentences = ["three red cats sleep", "two red dogs run", "three blue dogs sleep", "one cat"]
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(build_arpa(sentences, order=3))
    model = kenlm.Model(str(arpa))
    assert model.order == 3
    vocab = {w for s in sentences for w in s.split()} | {"</s>", "<unk>"}
    for context in ([], ["three"], ["three", "red"], ["red", "dogs"], ["never", "seen"]):
        state = kenlm.State()
        model.BeginSentenceWrite(state) if not context else model.NullContextWrite(state)
        for word in context:
            out = kenlm.State()
            model.BaseScore(state, word, out)
            state = out
        total = sum(10 ** model.BaseScore(state, w, kenlm.State()) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-4), context
    # word order the transcripts use scores higher than a shuffle of it
    assert model.score("three red cats sleep") > model.score("sleep cats red three") + 3


def test_language_model_lowers_wer(speaking_model, tmp_path):
    """Beam search with an LM of the training transcripts beats greedy decoding."""
    cfg, corpus, features, _ = speaking_model
    train_text = pd.read_csv(corpus.splits["train"], keep_default_na=False).transcript
    arpa = write_arpa(train_text, tmp_path / "train.arpa", order=3)
    greedy = evaluate(
        features,
        cfg.checkpoint_dir,
        cfg.evaluation.model_copy(update={"beam_width": 1}),
        tmp_path / "greedy",
    )
    with_lm = evaluate(
        features,
        cfg.checkpoint_dir,
        cfg.evaluation.model_copy(update={"beam_width": 256, "scorer_path": arpa}),
        tmp_path / "lm",
    )
    assert greedy.decoder == "greedy"
    assert with_lm.decoder == "beam+lm"
    assert greedy.wer < 1.0, "the fixture model should get some words right"
    assert with_lm.wer < greedy.wer
    report = json.loads(with_lm.report_path.read_text())
    assert report["scorer_path"] == str(arpa)
    assert report["beam_width"] == 256


def test_build_lm_command(tmp_path):
    from typer.testing import CliRunner

    from deepspeech_flow.cli import app

    csv = tmp_path / "train.csv"
    pd.DataFrame({"wav_filename": ["a.wav", "b.wav"], "transcript": ["ab c", "c ab"]}).to_csv(
        csv, index=False
    )
    text = tmp_path / "more.txt"
    text.write_text("ab ab c\n\nc c\n")
    out = tmp_path / "lm.arpa"
    result = CliRunner().invoke(app, ["build-lm", str(csv), str(text), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 sentences" in result.output
    decoder = make_decoder(ALPHABET, DecoderConfig(scorer_path=out, beam_width=16))
    assert decoder.decode(one_hot_logits([1, 2, 0, 3])) == "ab c"
