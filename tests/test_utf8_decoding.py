"""Bytes output mode decoders keep to valid UTF-8 (deepspeech_core.evaluate.utf8_decoders)."""

from __future__ import annotations

import itertools

import numpy as np
import tensorflow as tf

from deepspeech_core.config import DecoderConfig
from deepspeech_core.data.alphabet import UTF8Alphabet
from deepspeech_core.evaluate.decoders import GreedyDecoder, make_decoder
from deepspeech_core.evaluate.utf8_decoders import (
    ACCEPT,
    NEXT_STATE,
    REJECT,
    complete_prefix_length,
    utf8_beam_search_labels,
    utf8_greedy_labels,
    utf8_greedy_text_graph,
    utf8_text,
)

BLANK = 255


def _accepts(data: bytes) -> bool | None:
    """True: complete UTF-8; False: a valid start of UTF-8; None: invalid."""
    state = ACCEPT
    for byte in data:
        state = NEXT_STATE[state, byte - 1]
        if state == REJECT:
            return None
    return state == ACCEPT


def _python_says(data: bytes) -> bool | None:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError as e:
        return False if e.reason == "unexpected end of data" else None


def test_the_byte_automaton_is_pythons_utf8():
    """Every 1- and 2-byte sequence and 3- and 4-byte ones around every edge case
    (overlong forms, surrogates, above U+10FFFF) are judged as Python's decoder does."""
    edges = [0x01, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0]
    edges += [0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]
    sequences = [bytes([a]) for a in range(1, 256)]
    sequences += [bytes(p) for p in itertools.product(range(1, 256), repeat=2)]
    sequences += [bytes(p) for p in itertools.product(edges, repeat=3)]
    tails = [0x41, 0x80, 0xBF, 0xC0]
    sequences += [bytes(p) for p in itertools.product(edges, edges, tails, tails)]
    for data in sequences:
        assert _accepts(data) == _python_says(data), data.hex()


def _frames(*classes: int, second: int = BLANK) -> np.ndarray:
    """Logits whose best class per frame is `classes[t]`, `second` next."""
    logits = np.full((len(classes), 256), -10.0, np.float32)
    for t, c in enumerate(classes):
        logits[t, second] = 2.0
        logits[t, c] = 5.0
    return logits


def label(byte: int) -> int:
    return byte - 1


def test_greedy_drops_what_is_not_utf8_and_an_unfinished_last_character():
    # 一 (E4 B8 80), a lone continuation byte B8, then 六 cut after E5 85
    frames = [0xE4, 0xB8, 0x80, BLANK + 1, 0xB8, 0xB8, BLANK + 1, 0xE5, 0x85]
    logits = _frames(*[label(b) for b in frames])
    best = logits.argmax(-1)
    path = best[best != np.r_[-1, best[:-1]]]
    unconstrained = UTF8Alphabet().decode(path[path != BLANK])
    assert "\ufffd" in unconstrained  # what decoding wrote before
    assert utf8_text(utf8_greedy_labels(logits)) == "一"
    assert GreedyDecoder(UTF8Alphabet()).decode(logits) == "一"
    # the SavedModel's in-graph greedy writes the same bytes
    assert utf8_greedy_text_graph(tf.constant(logits)).numpy().decode("utf-8") == "一"


def test_a_valid_best_path_is_kept_as_it_is():
    text = "五 ok ё"
    labels = [label(b) for b in text.encode("utf-8")]
    path = [c for pair in zip(labels, [BLANK] * len(labels), strict=True) for c in pair]
    logits = _frames(*path, second=label(0xFF))
    assert utf8_text(utf8_greedy_labels(logits)) == text
    assert utf8_text(utf8_beam_search_labels(logits, 16)) == text
    assert complete_prefix_length(np.array(labels[:-1])) == len(labels) - 2  # ё cut: drop it


def test_an_untrained_models_output_decodes_to_valid_utf8_everywhere():
    """Flat random logits (what an untrained bytes model writes): every decoder, the
    in-graph one included, writes only valid UTF-8, the graph the same as numpy."""
    rng = np.random.default_rng(3)
    graph = tf.function(utf8_greedy_text_graph)
    beam = make_decoder(UTF8Alphabet(), DecoderConfig(beam_width=64))
    assert beam.name == "beam"
    for frames in (1, 7, 60):
        logits = rng.normal(size=(frames, 256)).astype(np.float32)
        greedy = utf8_greedy_labels(logits)
        assert graph(tf.constant(logits)).numpy().decode("utf-8") == utf8_text(greedy)
        text = beam.decode(logits)
        assert "\ufffd" not in text and text.encode("utf-8").decode("utf-8") == text


def _best_valid_labelling(logits: np.ndarray) -> tuple[int, ...]:
    """By brute force: the most probable complete-UTF-8 labelling (all CTC paths)."""
    logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    active = [c for c in range(logits.shape[1]) if np.isfinite(logp[:, c]).all()]
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(active, repeat=len(logits)):
        score = sum(logp[t, c] for t, c in enumerate(path))
        labels = tuple(c for i, c in enumerate(path) if c != BLANK and (i == 0 or path[i - 1] != c))
        totals[labels] = np.logaddexp(totals.get(labels, -np.inf), score)
    complete = {k: v for k, v in totals.items() if _accepts(bytes(c + 1 for c in k))}
    return max(complete, key=complete.get)


def test_beam_search_finds_the_most_probable_valid_text():
    """With a beam wide enough to keep every prefix the search is exact: it returns the
    labelling brute force finds best among the complete UTF-8 ones."""
    rng = np.random.default_rng(0)
    classes = [label(0xE4), label(0xB8), label(0x80), label(0x41), BLANK]
    for _ in range(12):
        logits = np.full((5, 256), -np.inf)
        logits[:, classes] = rng.normal(size=(5, len(classes))) * 2
        got = tuple(int(c) for c in utf8_beam_search_labels(logits, beam_width=4096))
        assert got == _best_valid_labelling(logits)
