"""The export stage: one self-describing, versioned model directory.

    EXPORT_DIR/vN/saved_model/        SavedModel; load with plain `tf.saved_model.load`:
        serve(audio: float32 [n])         16 kHz mono PCM in [-1, 1) -> logits, transcript
        serve_pcm16(audio: int16 [n])     16 kHz mono int16 PCM      -> logits, transcript
        features(features: f32 [1,T,26])  MFCCs                     -> logits, transcript
    EXPORT_DIR/vN/model.tflite        DeepSpeech's streaming layout, fp32
    EXPORT_DIR/vN/model.quant.tflite  the same, dynamic-range quantised
    EXPORT_DIR/vN/output_graph.tflite, output_graph.quant.tflite, output_graph.pb
                                      for DeepSpeech 0.9.3's clients (libdeepspeech)
    EXPORT_DIR/vN/checkpoint/         the weights, for evaluation or further training
    EXPORT_DIR/vN/metadata.json, MODEL_CARD.md, alphabet.txt

The SavedModel's transcript is greedy; `transcribe` applies beam search and a scorer to
its logits. The raw-audio signatures compute MFCCs with the feature cache's function.
Both TFLite models are checked against the Keras model on real clips before they are
written (a conversion can silently lose the weights). Versioning and the atomic
`current` link are in `export_store`.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deepspeech_core import progress
from deepspeech_core.config import ExportConfig
from deepspeech_core.data.alphabet import Alphabet, alphabet_from_record
from deepspeech_core.evaluate.utf8_decoders import utf8_greedy_text_graph
from deepspeech_core.export import store
from deepspeech_core.export.deepspeech_graphs import export_deepspeech
from deepspeech_core.export.streaming_tflite import export_tflite
from deepspeech_core.features.batches import SplitIndex
from deepspeech_core.features.mfcc import audio_to_mfccs
from deepspeech_core.manifests import (
    CorpusManifest,
    DeepSpeechModelFile,
    EvaluationManifest,
    ExportManifest,
    FeatureCacheManifest,
    TFLiteModel,
)
from deepspeech_core.model.checkpoints import (
    RECIPE_FILE,
    ModelSpec,
    load_model,
    save_inference_checkpoint,
)
from deepspeech_core.model.network import feature_statistics
from deepspeech_core.train import gpu_monitor
from deepspeech_core.workdir.atomic_files import (
    atomic_write_json,
    atomic_write_text,
    read_json_or_none,
)
from deepspeech_core.workdir.locking import describe_holder, export_lock

log = logging.getLogger(__name__)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _greedy_text(logits: tf.Tensor, alphabet: Alphabet) -> tf.Tensor:
    """Best-path transcript of one utterance's logits [1, T, classes], in the graph
    (in bytes output mode the greedy decoder that keeps to valid UTF-8)."""
    if alphabet.bytes_output_mode:
        return utf8_greedy_text_graph(logits[0])
    lengths = tf.shape(logits)[1:2]
    decoded, _ = tf.nn.ctc_greedy_decoder(tf.transpose(logits, [1, 0, 2]), lengths)
    characters = tf.constant(alphabet.labels_as_bytes())  # raw UTF-8 bytes in bytes mode
    return tf.strings.reduce_join(tf.gather(characters, decoded[0].values))


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def write_saved_model(model: keras.Model, spec: ModelSpec, path: Path) -> None:
    """The SavedModel with its audio, int16 audio and features signatures.

    A plain tf.Module tracking the model's variables once: Keras's ExportArchive stored
    every weight twice, twice the size on disk (docs/PERFORMANCE.md, "Export and
    transcription").
    """
    alphabet, features = spec.alphabet, spec.features

    def from_features(feats: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = model(feats, training=False)
        return {"logits": logits[0], "transcript": _greedy_text(logits, alphabet)}

    def from_audio(audio: tf.Tensor) -> dict[str, tf.Tensor]:
        return from_features(audio_to_mfccs(audio, features)[tf.newaxis])

    def from_pcm16(audio: tf.Tensor) -> dict[str, tf.Tensor]:
        return from_audio(tf.cast(audio, tf.float32) / 32768.0)

    module = tf.Module()
    module.model_variables = [v.value for v in model.variables]
    module.serve = tf.function(
        from_audio, input_signature=[tf.TensorSpec([None], tf.float32, name="audio")]
    )
    module.serve_pcm16 = tf.function(
        from_pcm16, input_signature=[tf.TensorSpec([None], tf.int16, name="audio")]
    )
    module.features = tf.function(
        from_features,
        input_signature=[tf.TensorSpec([1, None, features.n_input], tf.float32, name="features")],
    )
    signatures = {"serve": module.serve, "serve_pcm16": module.serve_pcm16}
    signatures["features"] = module.features
    tf.saved_model.save(module, str(path), signatures=signatures)


def _metadata(
    model: keras.Model,
    spec: ModelSpec,
    checkpoint: Path,
    cfg: ExportConfig,
    evaluation: EvaluationManifest | None,
    corpus: CorpusManifest | None,
) -> dict:
    return {
        "model_name": cfg.export_model_name,
        "model_version": cfg.export_model_version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **spec.alphabet.to_record(),
        "sample_rate": spec.features.audio_sample_rate,
        "features": spec.features.model_dump(),
        "n_context": spec.features.n_context,
        "n_hidden": spec.model.n_hidden,
        "layer_norm": spec.model.layer_norm,
        "parameters": int(model.count_params()),
        "checkpoint": str(checkpoint),
        "training_data": {
            "fingerprint": corpus.fingerprint if corpus else None,
            "hours": corpus.hours if corpus else None,
            "clips": corpus.counts if corpus else None,
        },
        "test_wer": evaluation.wer if evaluation else None,
        "test_cer": evaluation.cer if evaluation else None,
        "test_decoder": evaluation.decoder if evaluation else None,
        "test_by_speaker": _dump(evaluation.by_speaker) if evaluation else {},
        "test_by_demographic": {k: _dump(v) for k, v in evaluation.by_demographic.items()}
        if evaluation
        else {},
        "feature_norm": feature_statistics(model),  # None: the model uses raw MFCCs
        "recipe": read_json_or_none(Path(checkpoint).parent.parent / RECIPE_FILE, "recipe"),
        "versions": {
            "deepspeech-flow": _version("deepspeech-flow"),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "prefect": _version("prefect"),
        },
    }


def _dump(groups: dict) -> dict:
    return {k: v.model_dump() for k, v in groups.items()}


def _group_lines(title: str, groups: dict[str, dict]) -> list[str]:
    """A model-card table of WER/CER per group (speaker, gender, ...); none if empty."""
    if not groups:
        return []
    return [
        "",
        f"| {title} | clips | WER | CER |",
        "|---|---:|---:|---:|",
        *(
            f"| {name[:12]} | {m['samples']} | {100 * m['wer']:.2f} % | {100 * m['cer']:.2f} % |"
            for name, m in groups.items()
        ),
    ]


def _training_lines(metadata: dict) -> list[str]:
    """Feature normalisation and the --recipe, when the model was trained with them."""
    lines = []
    if metadata.get("feature_norm"):
        lines.append(
            "- Feature normalisation: global mean/std of the training MFCCs, inside every "
            "exported graph"
        )
    recipe = metadata.get("recipe")
    if recipe:
        parts = ", ".join(
            f"{name.split('.')[-1]}={c['used']}" for name, c in recipe["components"].items()
        )
        lines.append(f"- Recipe: `{recipe['name']}` ({parts})")
    return lines


def model_card(
    cfg: ExportConfig,
    metadata: dict,
    tflite: dict[str, TFLiteModel],
    deepspeech: dict[str, DeepSpeechModelFile] | None = None,
) -> str:
    """MODEL_CARD.md from DeepSpeech's --export_* flags and what the run measured."""

    def pct(x: float | None) -> str:
        return "not evaluated" if x is None else f"{100 * x:.2f} %"

    data = metadata["training_data"]
    hours = data["hours"] or {}
    lines = [
        f"# {cfg.export_model_name} {cfg.export_model_version}",
        "",
        f"- Author: {cfg.export_author_id}",
        f"- Contact: {cfg.export_contact_info}",
        f"- License: {cfg.export_license}",
        f"- Language: {cfg.export_language}",
        f"- DeepSpeech compatibility: {cfg.export_min_ds_version} - {cfg.export_max_ds_version}",
        f"- Created: {metadata['created']}",
        "",
        cfg.export_description,
        "",
        "## Model",
        "",
        f"DeepSpeech 0.9.3 architecture, n_hidden {metadata['n_hidden']}, "
        f"{metadata['parameters']:,} parameters, {metadata['sample_rate']} Hz audio, "
        f"{metadata['features']['n_input']} MFCCs with {metadata['n_context']} frames of "
        f"context each side. Alphabet: `{alphabet_from_record(metadata).display}`",
        "",
        "## Training data",
        "",
        f"- Fingerprint: `{data['fingerprint']}`",
        *(f"- {split}: {h:.2f} h" for split, h in hours.items()),
        *_training_lines(metadata),
        "",
        "## Evaluation",
        "",
        f"- Test WER: {pct(metadata['test_wer'])}, CER: {pct(metadata['test_cer'])} "
        f"({metadata['test_decoder'] or 'no'} decoder)",
        *_group_lines("speaker (client_id)", metadata.get("test_by_speaker") or {}),
        *(
            line
            for column, groups in (metadata.get("test_by_demographic") or {}).items()
            for line in _group_lines(column, groups)
        ),
        "",
        "## Files",
        "",
        "- `saved_model/`: TensorFlow SavedModel (signatures serve, serve_pcm16, features)",
        *(
            f"- `{name}`: TFLite streaming model, {m.size_bytes / 1e6:.1f} MB, max |logit "
            f"difference| vs Keras {m.max_abs_diff:.2e}"
            for name, m in tflite.items()
        ),
        *(
            f"- `{name}`: DeepSpeech {cfg.export_min_ds_version} client model ("
            f"{'deepspeech-tflite' if m.runtime == 'tflite' else 'deepspeech (TensorFlow)'} "
            f"builds), {m.size_bytes / 1e6:.1f} MB, graph version {m.graph_version}, beam "
            f"width {m.beam_width}; checked: metadata and alphabet read back, max |probability "
            f"difference| vs Keras {m.max_abs_diff:.2e}"
            for name, m in (deepspeech or {}).items()
        ),
        "",
    ]
    if deepspeech:
        lines += [
            "Run it with DeepSpeech's client: `deepspeech --model output_graph.tflite "
            "--audio clip.wav` (add `--scorer your.scorer` for a language model).",
            "",
        ]
    return "\n".join(lines)


VERIFY_CLIPS = 8  # real clips the TFLite models are checked on


def verification_clips(features: FeatureCacheManifest, count: int = VERIFY_CLIPS) -> list:
    """MFCCs of a few real clips (test, else dev, else train) to check conversions with."""
    alphabet = Alphabet.load(features.alphabet_path)
    for split in ("test", "dev", "train"):
        if split in features.indexes:
            index = SplitIndex.load(features.indexes[split], alphabet)
            if len(index):
                return [index.features(i) for i in range(min(count, len(index)))]
    return []


EXPORT_LOCK_WAIT = 3600.0  # seconds an export waits for another one into the same directory


def export_model(
    checkpoint_dir: Path,
    export_dir: Path,
    cfg: ExportConfig | None = None,
    evaluation: EvaluationManifest | None = None,
    corpus: CorpusManifest | None = None,
    verify_clips: list[np.ndarray] | None = None,
    promote: bool = True,
) -> ExportManifest:
    """Write a new version under `export_dir`; point `current` at it when `promote`.

    `verify_clips` are MFCC arrays [T, n_input] of real clips for the TFLite check.
    Holds the export directory's lock throughout: an export (or `promote`) already
    running there is waited for, so versions never collide and staging directories are
    never taken for an interrupted run's.
    """

    def waiting(holder: dict) -> None:
        log.warning("waiting for the export in %s (%s)", export_dir, describe_holder(holder))

    with export_lock(Path(export_dir), wait=EXPORT_LOCK_WAIT, on_wait=waiting):
        return _export_model_locked(
            checkpoint_dir, export_dir, cfg, evaluation, corpus, verify_clips, promote
        )


def _export_model_locked(
    checkpoint_dir: Path,
    export_dir: Path,
    cfg: ExportConfig | None = None,
    evaluation: EvaluationManifest | None = None,
    corpus: CorpusManifest | None = None,
    verify_clips: list[np.ndarray] | None = None,
    promote: bool = True,
) -> ExportManifest:
    cfg = cfg or ExportConfig()
    model, spec, prefix = load_model(checkpoint_dir, "best")
    export_dir = Path(export_dir)
    stale = store.clean_stale_staging(export_dir)
    if stale:
        log.info("removed %d partial export(s) left by an interrupted run", stale)
    staging, name = store.new_staging(export_dir)
    try:
        progress.report("export", 3, 0, unit="steps", step="SavedModel")
        write_saved_model(model, spec, staging / "saved_model")
        progress.report("export", 3, 1, unit="steps", step="TFLite" * cfg.export_tflite)
        tflite: dict[str, TFLiteModel] = {}
        deepspeech: dict[str, DeepSpeechModelFile] = {}
        if cfg.export_tflite:
            if not verify_clips:
                raise ValueError("the TFLite export needs clips to check the conversion with")
            tflite = export_tflite(model, spec, staging, verify_clips)
            deepspeech = export_deepspeech(
                model, spec, staging, verify_clips, cfg.export_beam_width
            )
        progress.report("export", 3, 2, unit="steps", step="checkpoint, metadata")
        save_inference_checkpoint(model, spec, staging / "checkpoint")
        spec.alphabet.save(staging / "alphabet.txt")
        metadata = _metadata(model, spec, prefix, cfg, evaluation, corpus)
        metadata["tflite"] = {name: m.model_dump() for name, m in tflite.items()}
        metadata["training_gpu"] = gpu_monitor.read_usage(checkpoint_dir)  # per attempt
        metadata["deepspeech"] = {name: m.model_dump() for name, m in deepspeech.items()}
        atomic_write_json(staging / "metadata.json", metadata)
        card = model_card(cfg, metadata, tflite, deepspeech)
        atomic_write_text(staging / "MODEL_CARD.md", card)
        version = store.commit(staging, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress.report("export", 3, 3, unit="steps", step=version.name)
    link = store.promote(export_dir, version) if promote else None
    size = dir_size(version / "saved_model")
    log.info("exported %s (SavedModel %.1f MB)", version, size / 1e6)
    return ExportManifest(
        export_dir=version,
        saved_model=version / "saved_model",
        metadata=version / "metadata.json",
        alphabet=version / "alphabet.txt",
        size_bytes=size,
        version=name,
        current=link,
        tflite=tflite,
        deepspeech=deepspeech,
        model_card=version / "MODEL_CARD.md",
        promoted=promote,
    )
