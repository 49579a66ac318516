"""The export stage: a SavedModel that needs no project code, plus its metadata.

Signatures (load with plain `tf.saved_model.load`):
    serve(audio: float32 [n])          16 kHz mono PCM in [-1, 1] -> logits, transcript
    features(features: float32 [1, T, n_input]) -> logits, transcript

The raw-audio signature computes MFCCs with the same function as the feature cache.
The export is written to a temporary directory and renamed into place, so an
interrupted export never leaves half a model where a complete one is expected.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deepspeech_core.alphabet import Alphabet
from deepspeech_core.audio import read_audio
from deepspeech_core.checkpoints import load_model
from deepspeech_core.features import audio_to_mfccs, pcm16_to_float
from deepspeech_core.io_utils import atomic_write_json
from deepspeech_core.manifests import EvaluationManifest, ExportManifest

log = logging.getLogger(__name__)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _greedy_text(logits: tf.Tensor, alphabet: Alphabet) -> tf.Tensor:
    """Best-path transcript of one utterance's logits [1, T, classes], in the graph."""
    lengths = tf.shape(logits)[1:2]
    decoded, _ = tf.nn.ctc_greedy_decoder(tf.transpose(logits, [1, 0, 2]), lengths)
    characters = tf.constant(list(alphabet.characters))
    return tf.strings.reduce_join(tf.gather(characters, decoded[0].values))


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def export_model(
    checkpoint_dir: Path,
    export_dir: Path,
    evaluation: EvaluationManifest | None = None,
    extra_metadata: dict | None = None,
) -> ExportManifest:
    """Write saved_model/, metadata.json and alphabet.txt under `export_dir`."""
    model, spec, prefix = load_model(checkpoint_dir, "best")
    alphabet, features = spec.alphabet, spec.features

    def from_features(feats: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = model(feats, training=False)
        return {"logits": logits[0], "transcript": _greedy_text(logits, alphabet)}

    def from_audio(audio: tf.Tensor) -> dict[str, tf.Tensor]:
        return from_features(audio_to_mfccs(audio, features)[tf.newaxis])

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", from_audio, input_signature=[tf.TensorSpec([None], tf.float32, name="audio")]
    )
    archive.add_endpoint(
        "features",
        from_features,
        input_signature=[tf.TensorSpec([1, None, features.n_input], tf.float32, name="features")],
    )

    export_dir = Path(export_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.", dir=export_dir.parent))
    try:
        archive.write_out(str(staging / "saved_model"), verbose=False)
        alphabet.save(staging / "alphabet.txt")
        metadata = {
            "alphabet": "".join(alphabet.characters),
            "sample_rate": features.audio_sample_rate,
            "features": features.model_dump(),
            "n_context": features.n_context,
            "n_hidden": spec.model.n_hidden,
            "parameters": int(model.count_params()),
            "checkpoint": str(prefix),
            "test_wer": evaluation.wer if evaluation else None,
            "test_cer": evaluation.cer if evaluation else None,
            "versions": {
                "deepspeech-flow": _version("deepspeech-flow"),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "prefect": _version("prefect"),
            },
            **(extra_metadata or {}),
        }
        atomic_write_json(staging / "metadata.json", metadata)
        _swap_into_place(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = _dir_size(export_dir / "saved_model")
    log.info("exported %s (%.1f MB)", export_dir, size / 1e6)
    return ExportManifest(
        export_dir=export_dir,
        saved_model=export_dir / "saved_model",
        metadata=export_dir / "metadata.json",
        alphabet=export_dir / "alphabet.txt",
        size_bytes=size,
    )


def _swap_into_place(staging: Path, export_dir: Path) -> None:
    """Replace export_dir with staging using renames; the old export stays until then."""
    if export_dir.exists():
        old = export_dir.with_name(f".{export_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        export_dir.rename(old)
        staging.rename(export_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(export_dir)


class ExportedModel:
    """An exported model loaded with plain TensorFlow, for `transcribe`."""

    def __init__(self, export_dir: Path) -> None:
        import json

        export_dir = Path(export_dir)
        saved = export_dir / "saved_model"
        if not saved.is_dir():
            raise FileNotFoundError(
                f"{export_dir} holds no saved_model/: pass the --export_dir of a finished run"
            )
        self.metadata = json.loads((export_dir / "metadata.json").read_text())
        self.sample_rate = int(self.metadata["sample_rate"])
        self._loaded = tf.saved_model.load(str(saved))

    def transcribe_samples(self, pcm16: np.ndarray) -> str:
        out = self._loaded.serve(tf.constant(pcm16_to_float(pcm16)))
        return out["transcript"].numpy().decode("utf-8")

    def transcribe_file(self, path: Path) -> str:
        """Any format SoX/libsndfile reads, resampled and downmixed as training data was."""
        return self.transcribe_samples(read_audio(Path(path), self.sample_rate).samples)
