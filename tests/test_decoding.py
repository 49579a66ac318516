"""Decoders, the ARPA builder, and a language model that measurably helps."""

import json

import numpy as np
import pandas as pd
import pytest

from deepspeech_core.config import DecoderConfig
from deepspeech_core.data.alphabet import Alphabet
from deepspeech_core.evaluate.arpa_lm import build_arpa, write_arpa
from deepspeech_core.evaluate.decoders import (
    BeamSearchDecoder,
    DecoderError,
    GreedyDecoder,
    LMBeamSearchDecoder,
    make_decoder,
)
from deepspeech_core.evaluate.evaluation import evaluate

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


def _unigram_arpa(path, log10_probs: dict[str, float]):
    """An ARPA where each word has exactly this log10 probability in any context (KenLM
    reads bigram models and up: one bigram of a word the tests never spell)."""
    rows = {**log10_probs, "cc": -9.0, "</s>": -0.5, "<s>": -99.0, "<unk>": -3.0}
    lines = ["\\data\\", f"ngram 1={len(rows)}", "ngram 2=1", "", "\\1-grams:"]
    lines += [f"{p}\t{w}\t0" for w, p in rows.items()]
    lines += ["", "\\2-grams:", "-9.0\tcc cc", "", "\\end\\", ""]
    path.write_text("\n".join(lines))
    return path


def test_lm_alpha_and_beta_mean_what_they_mean_in_deepspeech(tmp_path):
    """score = ln P_ctc + alpha * ln P_LM + beta * words, with ln (not log10) P_LM.

    Frame 2 says c (0.7) rather than b (0.3): acoustically "ac" leads by ln(7/3). The LM
    prefers "ab" by one decade, ln 10 in DeepSpeech's units. So "ab" wins exactly when
    alpha > ln(7/3) / ln 10 = 0.368; a decoder using log10 would need alpha > 0.847.
    """
    arpa = _unigram_arpa(tmp_path / "lm.arpa", {"ab": -0.2, "ac": -1.2, "b": -1.5})
    p = np.full((2, 5), 1e-7, np.float32)
    p[0, 1] = 1.0
    p[1, 2], p[1, 3] = 0.3, 0.7
    logits = np.log(p)
    threshold = np.log(0.7 / 0.3) / np.log(10)
    for alpha, expected in ((threshold - 0.03, "ac"), (threshold + 0.03, "ab")):
        decoder = make_decoder(
            ALPHABET, DecoderConfig(scorer_path=arpa, beam_width=16, lm_alpha=alpha, lm_beta=0)
        )
        assert decoder.decode(logits) == expected, alpha
    # beta is a bonus per word, in the same units: with alpha 0, "a b" (two words, but
    # its space costs ln 1e-3 = -6.9) beats "ab" (one word) exactly when beta > 6.9.
    q = np.full((3, 5), 1e-7, np.float32)
    q[0, 1], q[1, 0], q[1, 4], q[2, 2] = 1.0, 1e-3, 1.0, 1.0
    vocabulary = _unigram_arpa(tmp_path / "ab.arpa", {"ab": -1.0, "a": -1.0, "b": -1.0})
    one, two = "ab", "a b"
    for beta, expected in ((6.5, one), (7.3, two)):
        decoder = make_decoder(
            ALPHABET,
            DecoderConfig(scorer_path=vocabulary, beam_width=16, lm_alpha=0.0, lm_beta=beta),
        )
        assert decoder.decode(np.log(q)) == expected, beta
    # set_weights (tune-lm's trials) changes the weights of a loaded decoder
    decoder.set_weights(0.0, 6.5)
    assert decoder.decode(np.log(q)) == one


def test_lm_beam_search_writes_only_vocabulary_words(tmp_path):
    """As DeepSpeech's trie-constrained search: an unknown spelling becomes the nearest
    vocabulary word, and the last word is finished too."""
    arpa = _unigram_arpa(tmp_path / "lm.arpa", {"ab": -0.5, "cab": -0.5})
    # the acoustics say "ac cb": neither is a word
    text = "ac cb"
    logits = np.full((len(text), 5), -5.0, np.float32)
    for t, c in enumerate(text):
        logits[t, ALPHABET.encode(c)[0]] = 3.0
    logits[1, 2] = 2.0  # b a little less likely than c
    logits[3, 1] = 2.5  # a a little less likely than c
    decoder = make_decoder(ALPHABET, DecoderConfig(scorer_path=arpa, beam_width=64))
    assert decoder.decode(logits) == "ab ab"  # each letter's second guess makes a word
    assert BeamSearchDecoder(ALPHABET, beam_width=64).decode(logits) == text


def test_parallel_decoding_matches_one_process(speaking_model, tmp_path):
    """Worker processes (each with its own copy of the decoder) give the same texts."""
    from deepspeech_core.evaluate.evaluation import decode_split
    from deepspeech_core.features.batches import SplitIndex
    from deepspeech_core.model.checkpoints import load_model

    cfg, corpus, features, _ = speaking_model
    model, spec, _ = load_model(cfg.checkpoint_dir)
    index = SplitIndex.load(features.indexes["test"], spec.alphabet)
    train_text = pd.read_csv(corpus.splits["train"], keep_default_na=False).transcript
    arpa = write_arpa(train_text, tmp_path / "train.arpa", order=3)
    lm = DecoderConfig(scorer_path=arpa, beam_width=64, lm_alpha=0.7, lm_beta=1.1)
    for decoder in (BeamSearchDecoder(spec.alphabet, 64), make_decoder(spec.alphabet, lm)):
        losses, one = decode_split(model, decoder, index, 4, spec.features.n_input, workers=1)
        both = decode_split(model, decoder, index, 4, spec.features.n_input, workers=2)
        assert both[1] == one and np.allclose(both[0], losses)
        assert any(one), "the fixture model says something"


def test_nothing_before_the_first_sound_as_deepspeech(tmp_path):
    """DeepSpeech's decoder expands no beam until a frame's blank is below 0.999: a
    clip of near-certain blanks is empty even when a vocabulary word would pay."""
    arpa = _unigram_arpa(tmp_path / "lm.arpa", {"a": -0.1})
    p = np.full((6, 5), 2e-4, np.float32)
    p[:, 4] = 1 - 4 * 2e-4  # blank 0.9992 in every frame, "a" 2e-4
    lm = DecoderConfig(scorer_path=arpa, beam_width=16, lm_alpha=0.0, lm_beta=20.0)
    assert make_decoder(ALPHABET, lm).decode(np.log(p)) == ""
    assert BeamSearchDecoder(ALPHABET, beam_width=16).decode(np.log(p)) == ""
    p[3, 1], p[3, 4] = 0.2, 0.8  # one frame says "a" with some weight: now it pays
    assert "a" in make_decoder(ALPHABET, lm).decode(np.log(p)).split()
