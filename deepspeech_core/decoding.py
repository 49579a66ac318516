"""CTC decoders: greedy, beam search, and beam search with a KenLM language model.

Decoders take one utterance's logits [time, classes] (the blank is the last class, as in
DeepSpeech) and return text. Greedy is the best path (argmax per frame); LM-free beam
search is TensorFlow's `tf.nn.ctc_beam_search_decoder`; with a language model the beam
search is pyctcdecode's over a KenLM model (a DeepSpeech .scorer package, an ARPA file
or a KenLM binary), with DeepSpeech's lm_alpha/lm_beta meaning: score = log P(acoustic)
+ alpha * ln P_LM(words) + beta * words. A .scorer's vocabulary trie gives the word list
(partial words are scored against it) and its header the default alpha and beta.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import tensorflow as tf

from deepspeech_core.alphabet import Alphabet
from deepspeech_core.config import DEEPSPEECH_LM_ALPHA, DEEPSPEECH_LM_BETA, DecoderConfig
from deepspeech_core.scorer_package import ScorerError, is_scorer_package, read_scorer

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
        if unigrams is not None:
            verify_alphabet_coverage(labels, unigrams)
        default_alpha, default_beta = defaults or (DEEPSPEECH_LM_ALPHA, DEEPSPEECH_LM_BETA)
        alpha = default_alpha if alpha is None else alpha
        beta = default_beta if beta is None else beta
        self.alpha, self.beta = alpha, beta
        self.beam_width = beam_width
        self._decoder = BeamSearchDecoderCTC(
            labels, LanguageModel(language_model, unigrams, alpha=alpha, beta=beta)
        )

    def set_weights(self, alpha: float, beta: float) -> None:
        """New lm_alpha/lm_beta without reloading the model (tune-lm's trials)."""
        self._decoder.reset_params(alpha=alpha, beta=beta)
        self.alpha, self.beta = alpha, beta

    def decode(self, logits: np.ndarray) -> str:
        return self._decoder.decode(
            _log_softmax(np.asarray(logits, np.float32)), beam_width=self.beam_width
        )


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
    return BeamSearchDecoder(alphabet, cfg.beam_width)
