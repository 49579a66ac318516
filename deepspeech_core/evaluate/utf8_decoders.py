"""CTC decoding in bytes output mode that only writes valid UTF-8.

A bytes-mode model (`UTF8Alphabet`: label i is the byte i + 1, the blank is label 255)
can put any byte after any other, and an unconstrained best path or beam search then
spells sequences that are not UTF-8 at all (a lone continuation byte, a lead byte
followed by a blank and another lead byte) or stop in the middle of a character. A
decoded transcript then shows U+FFFD where a character should be, and CER counts it.

DeepSpeech 0.9.3 keeps bytes-mode output valid only with a scorer: its beam search
extends a prefix only along the scorer's vocabulary trie (built of whole words' bytes)
and scores the LM at each code point boundary (`Scorer::is_scoring_boundary`); without
a scorer it writes whatever bytes win. pyctcdecode, TensorFlow's and flashlight-text's
LM-free decoders have no notion of byte validity either. So the constraint is here, as
a finite automaton over bytes (the well-formed byte sequences of Unicode's Table 3-7:
no overlong forms, no surrogates, nothing above U+10FFFF):

- `utf8_greedy_labels`: best path where every frame picks the most likely class the
  automaton allows (the blank, the previous frame's class, which merges, or a byte that
  continues a valid sequence); an unconstrained best path that never leaves the
  automaton is the answer as it is (the common case for a trained model: one argmax).
- `utf8_beam_search_labels`: CTC prefix beam search (vectorised over beams and classes
  with numpy) that extends a prefix only by a byte the automaton allows, and returns
  the most probable prefix that ends on a character boundary.
- `utf8_greedy_text_graph`: the greedy decoder in TensorFlow, for the SavedModel's
  in-graph transcript.

Either way an incomplete final character is dropped, never replaced by U+FFFD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepspeech_core.config import DecoderConfig
from deepspeech_core.data.alphabet import Alphabet

ACCEPT = 0  # between characters: the bytes so far are complete UTF-8
REJECT = -1
N_BYTE_LABELS = 255  # UTF8Alphabet: labels 0..254 write the bytes 0x01..0xFF; 255 is blank
# DeepSpeech's decoder extends each prefix by the 40 most likely classes per frame
# (its cutoff_top_n default), which makes a wide beam affordable on 256 classes.
CUTOFF_TOP_N = 40


def _byte_automaton() -> np.ndarray:
    """next_state[state, byte] for well-formed UTF-8 (Unicode 15, Table 3-7), REJECT -1.

    States: 0 accept; 1, 2, 3 need that many continuation bytes (80..BF); 4 after E0
    (A0..BF next: no overlong forms), 5 after ED (80..9F: no surrogates), 6 after F0
    (90..BF), 7 after F4 (80..8F: nothing above U+10FFFF).
    """
    table = np.full((8, 256), REJECT, np.int8)
    table[0, 0x00:0x80] = 0
    table[0, 0xC2:0xE0] = 1
    table[0, 0xE0] = 4
    table[0, 0xE1:0xED] = 2
    table[0, 0xED] = 5
    table[0, 0xEE:0xF0] = 2
    table[0, 0xF0] = 6
    table[0, 0xF1:0xF4] = 3
    table[0, 0xF4] = 7
    table[1, 0x80:0xC0] = 0
    table[2, 0x80:0xC0] = 1
    table[3, 0x80:0xC0] = 2
    table[4, 0xA0:0xC0] = 1
    table[5, 0x80:0xA0] = 1
    table[6, 0x90:0xC0] = 2
    table[7, 0x80:0x90] = 2
    return table


# By label instead of byte (label i writes byte i + 1; byte 0 has no label).
NEXT_STATE: np.ndarray = _byte_automaton()[:, 1:].astype(np.int32)
ALLOWED: np.ndarray = NEXT_STATE != REJECT  # [state, label]
# [state, class]: the byte labels plus the blank, always allowed
ALLOWED_CLASSES: np.ndarray = np.concatenate([ALLOWED, np.ones((len(ALLOWED), 1), bool)], axis=1)


def complete_prefix_length(labels: np.ndarray) -> int:
    """How many of `labels` (byte labels the automaton accepts in order) form whole
    characters: the length up to the last character boundary."""
    state, keep = ACCEPT, 0
    for i, label in enumerate(np.asarray(labels, np.int64)):
        state = int(NEXT_STATE[state, label])
        if state == REJECT:
            raise ValueError(f"label {int(label)} at {i} does not continue valid UTF-8")
        if state == ACCEPT:
            keep = i + 1
    return keep


def _walk(labels: np.ndarray) -> int | None:
    """Length of the complete part of `labels`, or None if they leave the automaton."""
    try:
        return complete_prefix_length(labels)
    except ValueError:
        return None


def _best_path(best: np.ndarray, blank: int) -> np.ndarray:
    keep = np.ones_like(best, bool)
    keep[1:] = best[1:] != best[:-1]
    out = best[keep]
    return out[out != blank]


def utf8_greedy_labels(logits: np.ndarray) -> np.ndarray:
    """Byte labels of the constrained best path of `logits` [time, 256]."""
    logits = np.asarray(logits)
    blank = logits.shape[-1] - 1
    unconstrained = _best_path(logits.argmax(axis=-1), blank)
    complete = _walk(unconstrained)
    if complete is not None:  # every argmax was allowed: the constrained path is the same
        return unconstrained[:complete]
    out: list[int] = []
    state, previous, keep = ACCEPT, blank, 0
    for frame in logits:
        allowed = ALLOWED_CLASSES[state].copy()
        allowed[previous] = True  # staying on the same class writes nothing new
        choice = int(np.where(allowed, frame, -np.inf).argmax())
        if choice != blank and choice != previous:
            state = int(NEXT_STATE[state, choice])
            out.append(choice)
            if state == ACCEPT:
                keep = len(out)
        previous = choice
    return np.asarray(out[:keep], np.int64)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class _Trie:
    """Prefixes as nodes: one node per distinct byte string (so a prefix reached twice
    is the same node), stored in growing numpy arrays; node 0 is the empty prefix."""

    def __init__(self) -> None:
        self.parent = np.zeros(1024, np.int64)
        self.label = np.full(1024, -1, np.int64)
        self.size = 1
        self._children: dict[int, int] = {}
        self.beam_position = np.full(1024, -1, np.int64)  # scratch: node -> beam index

    def children(self, nodes: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The node of each (node, label) extension, made where it does not exist yet."""
        keys = (nodes * 256 + labels).tolist()
        need = self.size + len(keys)
        if need > len(self.parent):
            grow = max(need, 2 * len(self.parent)) - len(self.parent)
            self.parent = np.concatenate([self.parent, np.zeros(grow, np.int64)])
            self.label = np.concatenate([self.label, np.full(grow, -1, np.int64)])
            self.beam_position = np.concatenate([self.beam_position, np.full(grow, -1, np.int64)])
        found = [self._children.get(key, -1) for key in keys]
        out = np.asarray(found, np.int64).reshape(-1)
        new = np.flatnonzero(out < 0)  # (each key once: the kept prefixes are distinct)
        out[new] = np.arange(self.size, self.size + len(new))
        self.parent[out[new]], self.label[out[new]] = nodes[new], labels[new]
        self._children.update(zip(np.asarray(keys)[new].tolist(), out[new].tolist(), strict=True))
        self.size += len(new)
        return out

    def labels(self, node: int) -> np.ndarray:
        """The byte labels that spell `node`, first to last."""
        out = []
        while node:
            out.append(self.label[node])
            node = int(self.parent[node])
        return np.asarray(out[::-1], np.int64)


class _Beams:
    """The prefixes kept after a frame, as parallel arrays."""

    def __init__(self, nodes, pb, pnb, state, last) -> None:
        self.nodes = nodes  # trie node of each prefix
        self.pb, self.pnb = pb, pnb  # log P(prefix, path ends in blank / in its last byte)
        self.state, self.last = state, last  # automaton state; last label (-1: empty)

    @property
    def total(self) -> np.ndarray:
        return np.logaddexp(self.pb, self.pnb)


def _merge_into_kept(beams: _Beams, trie: _Trie, logp, pnb, ext, column) -> None:
    """An extension that is already a kept prefix (`ab` + `c` while `abc` is kept) adds
    its probability to that prefix and leaves the candidates."""
    trie.beam_position[beams.nodes] = np.arange(len(beams.nodes))
    parents = np.where(beams.nodes > 0, trie.beam_position[trie.parent[beams.nodes]], -1)
    trie.beam_position[beams.nodes] = -1
    child = np.flatnonzero(parents >= 0)
    parent, label = parents[child], beams.last[child]
    via = np.where(beams.last[parent] == label, beams.pb[parent], beams.total[parent])
    pnb[child] = np.logaddexp(pnb[child], via + logp[label])
    listed = column[label] >= 0
    ext[parent[listed], column[label[listed]]] = -np.inf


def _step(beams: _Beams, trie: _Trie, logp: np.ndarray, beam_width: int, top_n: int) -> _Beams:
    """One frame of CTC prefix beam search restricted to valid UTF-8 extensions."""
    blank = logp.shape[0] - 1
    n = len(beams.nodes)
    total = beams.total
    classes = np.argpartition(-logp[:blank], top_n)[:top_n] if top_n < blank else np.arange(blank)
    # stay: a blank, or the last byte again (merged by CTC)
    pb = total + logp[blank]
    pnb = np.where(beams.last >= 0, beams.pnb + logp[np.maximum(beams.last, 0)], -np.inf)
    # extend by a byte the automaton allows; after the same byte only through a blank
    repeat = beams.last[:, np.newaxis] == classes[np.newaxis, :]
    ext = np.where(repeat, beams.pb[:, np.newaxis], total[:, np.newaxis]) + logp[classes]
    ext = np.where(ALLOWED[beams.state][:, classes], ext, -np.inf)
    column = np.full(blank, -1)
    column[classes] = np.arange(len(classes))
    _merge_into_kept(beams, trie, logp, pnb, ext, column)
    scores = np.concatenate([np.logaddexp(pb, pnb), ext.ravel()])
    kept = np.flatnonzero(np.isfinite(scores))
    if len(kept) > beam_width:
        kept = kept[np.argpartition(-scores[kept], beam_width - 1)[:beam_width]]
    stays = kept[kept < n]
    rows, cols = np.divmod(kept[kept >= n] - n, len(classes))
    labels = classes[cols]
    return _Beams(
        np.concatenate([beams.nodes[stays], trie.children(beams.nodes[rows], labels)]),
        np.concatenate([pb[stays], np.full(len(rows), -np.inf)]),
        np.concatenate([pnb[stays], ext[rows, cols]]),
        np.concatenate([beams.state[stays], NEXT_STATE[beams.state[rows], labels]]),
        np.concatenate([beams.last[stays], labels]),
    )


def utf8_beam_search_labels(
    logits: np.ndarray, beam_width: int, top_n: int = CUTOFF_TOP_N
) -> np.ndarray:
    """Byte labels of the most probable complete-UTF-8 prefix found by a beam search.

    Each frame extends every kept prefix by its `top_n` most likely bytes that the
    automaton allows (a prefix's own last byte and the blank are always scored), keeps
    the `beam_width` best, and at the end returns the best prefix that ends between
    characters; if none is left, the best one with its incomplete character dropped.
    """
    logp = _log_softmax(np.asarray(logits, np.float64))
    trie = _Trie()
    one = np.zeros(1, np.int64)
    beams = _Beams(one, np.zeros(1), np.full(1, -np.inf), one.copy(), np.full(1, -1, np.int64))
    for frame in logp:
        beams = _step(beams, trie, frame, beam_width, top_n)
    total = beams.total
    complete = np.flatnonzero(beams.state == ACCEPT)
    if len(complete):
        return trie.labels(int(beams.nodes[complete[total[complete].argmax()]]))
    labels = trie.labels(int(beams.nodes[total.argmax()]))
    return labels[: complete_prefix_length(labels)]


def utf8_greedy_text_graph(logits):
    """`utf8_greedy_labels` in TensorFlow for one utterance's logits [T, 256]: the
    UTF-8 bytes as a scalar tf.string (the SavedModel's transcript in bytes mode)."""
    import tensorflow as tf

    logits = tf.convert_to_tensor(logits)
    blank = N_BYTE_LABELS
    allowed_classes = tf.constant(ALLOWED_CLASSES)
    next_state = tf.constant(NEXT_STATE)
    neg_inf = tf.constant(-np.inf, logits.dtype)

    def frame_step(carry, frame):
        state, previous, _ = carry
        allowed = tf.logical_or(allowed_classes[state], tf.equal(tf.range(blank + 1), previous))
        choice = tf.argmax(tf.where(allowed, frame, neg_inf), output_type=tf.int32)
        writes = tf.logical_and(choice != blank, choice != previous)
        new_state = tf.where(writes, next_state[state, tf.minimum(choice, blank - 1)], state)
        return new_state, choice, tf.where(writes, choice, -1)

    start = (tf.constant(ACCEPT, tf.int32), tf.constant(blank, tf.int32), tf.constant(-1))
    states, _, written = tf.scan(frame_step, logits, initializer=start)
    mask = written >= 0
    labels, after = tf.boolean_mask(written, mask), tf.boolean_mask(states, mask)
    boundaries = tf.where(tf.equal(after, ACCEPT))[:, 0]
    keep = tf.cond(
        tf.size(boundaries) > 0,
        lambda: tf.cast(boundaries[-1], tf.int32) + 1,
        lambda: tf.constant(0, tf.int32),
    )
    byte_values = tf.constant([bytes((b,)) for b in range(1, 256)])
    return tf.strings.reduce_join(tf.gather(byte_values, labels[:keep]))


def utf8_text(labels: np.ndarray) -> str:
    """The text that byte labels from these decoders spell (always valid UTF-8)."""
    return (np.asarray(labels, np.int64) + 1).astype(np.uint8).tobytes().decode("utf-8")


@dataclass
class Utf8BeamSearchDecoder:
    """Bytes output mode's LM-free beam search (`utf8_beam_search_labels`)."""

    alphabet: Alphabet
    beam_width: int
    name: str = "beam"

    @property
    def config(self) -> DecoderConfig:
        """What rebuilds this decoder in a worker process (DecoderPool)."""
        return DecoderConfig(beam_width=self.beam_width)

    def decode(self, logits: np.ndarray) -> str:
        return utf8_text(utf8_beam_search_labels(logits, self.beam_width))
