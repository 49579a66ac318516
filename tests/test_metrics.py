import pytest

from deepspeech_core.evaluate.error_rates import corpus_error_rates, error_counts

pytestmark = pytest.mark.unit  # `make test-fast`


def test_hand_worked_sample():
    # "the cat sat" -> "the bat sat on": 1 substitution + 1 insertion over 3 words.
    c = error_counts("the cat sat", "the bat sat on")
    assert (c.word_distance, c.word_length) == (2, 3)
    # characters: c->b, plus " on" inserted (3 chars), reference has 11 characters.
    assert (c.char_distance, c.char_length) == (4, 11)
    assert c.wer == pytest.approx(2 / 3)
    assert c.cer == pytest.approx(4 / 11)


def test_corpus_level_not_mean_of_samples():
    refs = ["a b c d", "e"]
    hyps = ["a b c d", ""]
    wer, cer = corpus_error_rates(refs, hyps)
    # 1 deletion over 5 reference words = 0.2 (the mean of per-sample WERs would be 0.5)
    assert wer == pytest.approx(0.2)
    # 1 deleted character over 7 + 1 reference characters
    assert cer == pytest.approx(1 / 8)


def test_empty_set():
    assert corpus_error_rates([], []) == (0.0, 0.0)
