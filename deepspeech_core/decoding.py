"""CTC decoders: greedy, beam search, and beam search with a KenLM language model.

Decoders take one utterance's logits [time, classes] (the blank is the last class, as in
DeepSpeech) and return text. Greedy is the best path (argmax per frame); LM-free beam
search is TensorFlow's `tf.nn.ctc_beam_search_decoder`; with a language model the beam
search is pyctcdecode's over a KenLM model (a DeepSpeech .scorer package, an ARPA file
or a KenLM binary), with DeepSpeech's lm_alpha/lm_beta meaning: score = log P(acoustic)
+ alpha * ln P_LM(words) + beta * words. A .scorer's vocabulary trie gives the word list
(partial words are scored against it) and its header the default alpha and beta.

In bytes output mode the decoders work on bytes and return the UTF-8 text they spell:
greedy and LM-free beam search only extend along valid UTF-8 and drop an incomplete
last character (`utf8_decoding`); with a scorer, pyctcdecode's search is not
constrained and bytes that are not UTF-8 are dropped from its text. The word language
model scores the decoded words, so it applies to languages written with spaces between
words.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import tensorflow as tf

from deepspeech_core.alphabet import Alphabet, text_from_label_string
from deepspeech_core.config import DEEPSPEECH_LM_ALPHA, DEEPSPEECH_LM_BETA, DecoderConfig
from deepspeech_core.scorer_package import ScorerError, is_scorer_package, read_scorer
from deepspeech_core.utf8_decoding import Utf8BeamSearchDecoder, utf8_greedy_labels, utf8_text

log = logging.getLogger(__name__)


class DecoderError(ValueError):
    """A decoder cannot be built as asked; the message says what to do."""


class Decoder(Protocol):
    name: str

    def decode(self, logits: np.ndarray) -> str:
        """Text of one utterance from its logits [time, classes]."""


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass
class GreedyDecoder:
    """Best path: the most likely class per frame, repeats merged, blanks dropped."""

    alphabet: Alphabet
    name: str = "greedy"

    def decode(self, logits: np.ndarray) -> str:
        if self.alphabet.bytes_output_mode:
            return utf8_text(utf8_greedy_labels(logits))
        best = np.asarray(logits).argmax(axis=-1)
        keep = np.ones_like(best, bool)
        keep[1:] = best[1:] != best[:-1]
        return self.alphabet.decode(int(c) for c in best[keep] if c != self.alphabet.blank_index)


@dataclass
class BeamSearchDecoder:
    """TensorFlow's CTC beam search, no language model."""

    alphabet: Alphabet
    beam_width: int
    name: str = "beam"

    def decode(self, logits: np.ndarray) -> str:
        logits = np.asarray(logits, np.float32)
        decoded, _ = tf.nn.ctc_beam_search_decoder(
            logits[:, np.newaxis, :], [logits.shape[0]], beam_width=self.beam_width, top_paths=1
        )
        return self.alphabet.decode(int(v) for v in decoded[0].values.numpy())


def _unigrams(scorer_path: Path, alphabet: Alphabet):
    """(vocabulary or None, (alpha, beta) of a .scorer's header or None)."""
    from pyctcdecode.language_model import load_unigram_set_from_arpa

    if is_scorer_package(scorer_path):
        try:
            package = read_scorer(scorer_path)
            return package.words(alphabet), (package.alpha, package.beta)
        except ScorerError as e:
            raise DecoderError(f"--scorer_path {scorer_path}: {e}") from e
    if _is_arpa(scorer_path):
        return sorted(load_unigram_set_from_arpa(str(scorer_path))), None
    log.warning(
        "%s is a KenLM binary: without the ARPA's word list (or a .scorer's trie) partial "
        "words are not scored against the vocabulary (pass a .scorer or the ARPA for the "
        "best accuracy)",
        scorer_path,
    )
    return None, None


class LMBeamSearchDecoder:
    """pyctcdecode's beam search over a KenLM model (.scorer, ARPA or KenLM binary).

    alpha/beta None: the .scorer's defaults, else DeepSpeech's (as DeepSpeech 0.9.3).
    """

    name = "beam+lm"

    def __init__(
        self,
        alphabet: Alphabet,
        scorer_path: Path,
        beam_width: int,
        alpha: float | None = None,
        beta: float | None = None,
    ) -> None:
        import kenlm
        from pyctcdecode import Alphabet as LabelSet
        from pyctcdecode import BeamSearchDecoderCTC, LanguageModel
        from pyctcdecode.alphabet import verify_alphabet_coverage

        scorer_path = Path(scorer_path)
        if not scorer_path.is_file():
            raise DecoderError(f"--scorer_path {scorer_path} does not exist")
        if " " not in alphabet.characters:
            raise DecoderError("a word language model needs the space in the alphabet")
        try:
            language_model = kenlm.Model(str(scorer_path))
        except (OSError, RuntimeError) as e:
            raise DecoderError(
                f"--scorer_path {scorer_path} is not a .scorer package, an ARPA file or a "
                f"KenLM binary ({e}): pass DeepSpeech's .scorer, or the lm.binary or ARPA "
                "that generate_lm.py or build-lm made"
            ) from e
        labels = LabelSet.build_alphabet([*alphabet.characters, ""])
        unigrams, defaults = _unigrams(scorer_path, alphabet)
        if alphabet.bytes_output_mode:
            language_model = _BytesWordModel(language_model)
            if unigrams is not None:
                unigrams = [_byte_string(w) for w in unigrams]
        if unigrams is not None:
            verify_alphabet_coverage(labels, unigrams)
        default_alpha, default_beta = defaults or (DEEPSPEECH_LM_ALPHA, DEEPSPEECH_LM_BETA)
        alpha = default_alpha if alpha is None else alpha
        beta = default_beta if beta is None else beta
        self.alpha, self.beta = alpha, beta
        self.beam_width = beam_width
        self.alphabet = alphabet
        self._decoder = BeamSearchDecoderCTC(
            labels, LanguageModel(language_model, unigrams, alpha=alpha, beta=beta)
        )

    def set_weights(self, alpha: float, beta: float) -> None:
        """New lm_alpha/lm_beta without reloading the model (tune-lm's trials)."""
        self._decoder.reset_params(alpha=alpha, beta=beta)
        self.alpha, self.beta = alpha, beta

    def decode(self, logits: np.ndarray) -> str:
        text = self._decoder.decode(
            _log_softmax(np.asarray(logits, np.float32)), beam_width=self.beam_width
        )
        return text_from_label_string(text, self.alphabet)


def _byte_string(word: str) -> str:
    """`word` as bytes-mode label characters (one Latin-1 stand-in per UTF-8 byte)."""
    return word.encode("utf-8").decode("latin-1")


class _BytesWordModel:
    """A KenLM model seen through bytes-mode labels: pyctcdecode builds words out of
    byte stand-ins, the model knows them as UTF-8 text; this translates each word."""

    def __init__(self, model) -> None:
        self._model = model
        self.order = model.order
        self.path = model.path

    def BeginSentenceWrite(self, state) -> None:  # noqa: N802 - KenLM's API
        self._model.BeginSentenceWrite(state)

    def NullContextWrite(self, state) -> None:  # noqa: N802
        self._model.NullContextWrite(state)

    def BaseScore(self, state, word: str, out_state) -> float:  # noqa: N802
        return self._model.BaseScore(state, _text(word), out_state)

    def __contains__(self, word: str) -> bool:
        return _text(word) in self._model


def _text(word: str) -> str:
    return word.encode("latin-1").decode("utf-8", errors="replace")


def _is_arpa(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4096).lstrip().startswith(b"\\data\\")


def make_decoder(alphabet: Alphabet, cfg: DecoderConfig) -> Decoder:
    """The decoder `cfg` asks for: greedy when beam_width <= 1, else beam, +LM with a scorer."""
    if cfg.scorer_path is not None:
        return LMBeamSearchDecoder(
            alphabet, cfg.scorer_path, cfg.beam_width, cfg.lm_alpha, cfg.lm_beta
        )
    if cfg.beam_width <= 1:
        return GreedyDecoder(alphabet)
    if alphabet.bytes_output_mode:
        return Utf8BeamSearchDecoder(cfg.beam_width)
    return BeamSearchDecoder(alphabet, cfg.beam_width)
