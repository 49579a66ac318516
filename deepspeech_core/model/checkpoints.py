"""Checkpoint directories that describe themselves.

    CHECKPOINT_DIR/model.json     alphabet, feature and model parameters (the architecture)
    CHECKPOINT_DIR/alphabet.txt
    CHECKPOINT_DIR/train/         periodic checkpoints: resume from the newest
    CHECKPOINT_DIR/best/          the best checkpoint (--best_metric): evaluate and export from it
    CHECKPOINT_DIR/history.json   per-epoch train and dev loss (and dev WER with dev_wer)
    CHECKPOINT_DIR/recipe.json    what --recipe set (each component, recipe vs used value)

Two managers, two meanings (icefall's epoch-N vs best-valid-loss). The architecture is
read from model.json on resume; a run asked for a different one gets a clear error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deepspeech_core.config import FeatureConfig, ModelConfig
from deepspeech_core.data.alphabet import Alphabet, alphabet_from_record
from deepspeech_core.model.deepspeech_checkpoint import (
    DeepSpeechCheckpointError,
    check_features,
    checkpoint_alphabet,
    is_deepspeech_checkpoint,
    model_config_for,
    read_weights,
    set_weights,
)
from deepspeech_core.model.network import (
    FEATURE_NORM,
    create_model,
    feature_norm_layer,
    feature_statistics,
    rng_variables,
    set_feature_statistics,
)
from deepspeech_core.train.state import check_state_file
from deepspeech_core.train.trainings import (
    is_trainings_root,
    no_trained_model_message,
    resolve_trained,
)
from deepspeech_core.workdir.atomic_files import atomic_write_json, read_json_or_none

RECIPE_FILE = "recipe.json"


class CheckpointError(ValueError):
    """A checkpoint directory cannot be used for what was asked; says what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the network that a checkpoint's weights belong to."""

    alphabet: Alphabet
    features: FeatureConfig
    model: ModelConfig

    def to_json(self) -> dict:
        return {
            **self.alphabet.to_record(),
            "features": self.features.model_dump(),
            "model": self.model.model_dump(),
        }

    @classmethod
    def from_json(cls, data: dict) -> ModelSpec:
        return cls(
            alphabet_from_record(data),
            FeatureConfig.model_validate(data["features"]),
            ModelConfig.model_validate(data["model"]),
        )

    def build(self, dtype_policy: str | None = None, seed: int | None = None) -> keras.Model:
        return create_model(
            self.model, self.features, self.alphabet.n_classes, dtype_policy, seed=seed
        )

    def architecture(self) -> dict:
        """The parts that must match for weights to load (dropout may change on resume)."""
        return {
            "alphabet": self.alphabet.display,  # distinct for bytes output mode
            "n_input": self.features.n_input,
            "n_context": self.features.n_context,
            "n_hidden": self.model.n_hidden,
            "layer_norm": self.model.layer_norm,
            "feature_norm": self.model.feature_norm,
        }


def _key(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", path)


def tracked_state(model: keras.Model, optimizer: keras.optimizers.Optimizer | None, **extra):
    """A tf.train.Checkpoint over the weights (by layer path), RNG state and optimizer."""
    objects = {
        "weights": {_key(v.path): v for v in model.weights},
        # Seed-generator paths are numbered per process, so key RNG state by position.
        "rng": {f"rng_{i}": v for i, v in enumerate(rng_variables(model))},
        **extra,
    }
    if optimizer is not None:
        objects["optimizer"] = optimizer
    return tf.train.Checkpoint(**objects)


def read_spec(checkpoint_dir: Path) -> ModelSpec | None:
    """The model checkpoint_dir holds; None if none (or its model.json is damaged: the
    run's own settings rewrite it, and weights that do not fit are refused on restore)."""
    data = read_json_or_none(Path(checkpoint_dir) / "model.json", "model description")
    return ModelSpec.from_json(data) if isinstance(data, dict) else None


def write_spec(checkpoint_dir: Path, spec: ModelSpec) -> None:
    atomic_write_json(Path(checkpoint_dir) / "model.json", spec.to_json())
    spec.alphabet.save(Path(checkpoint_dir) / "alphabet.txt")


def check_compatible(existing: ModelSpec, requested: ModelSpec, checkpoint_dir: Path) -> None:
    a, b = existing.architecture(), requested.architecture()
    diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    if diff:
        details = ", ".join(
            f"{k}: checkpoint has {x!r}, asked for {y!r}" for k, (x, y) in diff.items()
        )
        raise CheckpointError(
            f"{checkpoint_dir} holds a different model ({details}). Use another "
            "--checkpoint_dir, or the checkpoint's settings to continue it."
        )


def latest(checkpoint_dir: Path, which: str = "best") -> Path | None:
    """Checkpoint prefix to load: `best` falls back to the newest periodic one."""
    order = ["best", "train"] if which == "best" else ["train"]
    for sub in order:
        check_state_file(Path(checkpoint_dir) / sub)
        prefix = tf.train.latest_checkpoint(str(Path(checkpoint_dir) / sub))
        if prefix:
            return Path(prefix)
    return None


def refuse_deepspeech_checkpoint_dir(checkpoint_dir: Path) -> None:
    """Training never writes into a DeepSpeech checkpoint directory (it is the user's)."""
    if read_spec(checkpoint_dir) is None and is_deepspeech_checkpoint(checkpoint_dir):
        raise CheckpointError(
            f"{checkpoint_dir} is a DeepSpeech checkpoint: training does not write into it. "
            f"Start a training from it with --load_checkpoint_dir {checkpoint_dir} (and "
            "--drop_source_layers 1 for a new alphabet), or evaluate it with "
            "`evaluate --checkpoint_dir`"
        )


def load_deepspeech_model(
    path: Path, alphabet: Alphabet | None = None, features: FeatureConfig | None = None
) -> tuple[keras.Model, ModelSpec, Path]:
    """Our model holding a DeepSpeech 0.9.x TF1 checkpoint's weights (every layer).

    The dimensions come from the weights; the alphabet from the checkpoint's
    alphabet.txt, else `alphabet` (--alphabet_config_path); the MFCC settings are ours
    (DeepSpeech's defaults), checked against layer_1's input width.
    """
    try:
        weights = read_weights(path)
        features = features or FeatureConfig()
        check_features(weights, features, path)
        spec = ModelSpec(
            checkpoint_alphabet(path, alphabet, weights.n_classes),
            features,
            model_config_for(weights, ModelConfig()),
        )
    except DeepSpeechCheckpointError as exc:
        raise CheckpointError(str(exc)) from exc
    model = spec.build()
    set_weights(model, weights, list(LAYER_ORDER))
    return model, spec, weights.prefix


def load_model(
    checkpoint_dir: Path, which: str = "best", flag: str = "--checkpoint_dir"
) -> tuple[keras.Model, ModelSpec, Path]:
    """Rebuild the model from model.json and load weights (no optimizer, for inference).

    `checkpoint_dir` is a training, or a directory of trainings (its newest is loaded);
    a DeepSpeech 0.9.x checkpoint directory (TF1, with its alphabet.txt) loads too.
    """
    if is_trainings_root(checkpoint_dir):
        checkpoint_dir = resolve_trained(checkpoint_dir, flag)
    spec = read_spec(checkpoint_dir)
    if spec is None and is_deepspeech_checkpoint(checkpoint_dir):
        return load_deepspeech_model(checkpoint_dir)
    prefix = latest(checkpoint_dir, which)
    if spec is None or prefix is None:
        raise CheckpointError(no_trained_model_message(checkpoint_dir, flag))
    model = spec.build()
    tracked_state(model, None).read(str(prefix)).expect_partial()
    return model, spec, prefix


def save_inference_checkpoint(model: keras.Model, spec: ModelSpec, directory: Path) -> Path:
    """Weights only (no optimizer), as a checkpoint directory `load_model` reads.

    An export carries one, so the exported model can be evaluated again (champion vs
    challenger) or trained further (--load_checkpoint_dir EXPORT_DIR/current/checkpoint).
    """
    directory = Path(directory)
    write_spec(directory, spec)
    manager = tf.train.CheckpointManager(
        tracked_state(model, None), str(directory / "best"), max_to_keep=1
    )
    return Path(manager.save())


# DeepSpeech's layer order; --drop_source_layers N re-initialises the last N of these.
LAYER_ORDER = ("layer_1", "layer_2", "layer_3", "lstm", "layer_5", "layer_6")


def transfer_weights(
    target: keras.Model, target_spec: ModelSpec, source_dir: Path, drop_source_layers: int
) -> list[str]:
    """Copy a trained model's layers into `target`, except the last `drop_source_layers`.

    A different alphabet changes the output layer, so it must be dropped (at least 1).
    `source_dir` is one of our trainings or exports, or a DeepSpeech 0.9.x checkpoint
    (whose alphabet is its alphabet.txt, else the target's: --alphabet_config_path).
    Returns the names of the layers copied.
    """
    if read_spec(source_dir) is None and is_deepspeech_checkpoint(source_dir):
        source, source_spec, _ = load_deepspeech_model(
            source_dir, target_spec.alphabet, target_spec.features
        )
    else:
        source, source_spec, _ = load_model(source_dir, "best", "--load_checkpoint_dir")
    a, b = source_spec.architecture(), target_spec.architecture()
    free = ("alphabet", "feature_norm")  # feature_norm: see _transfer_statistics
    mismatch = {k: (a[k], b[k]) for k in a if k not in free and a[k] != b[k]}
    if mismatch:
        raise CheckpointError(
            f"--load_checkpoint_dir {source_dir} has a different architecture {mismatch}; "
            "transfer learning needs the same n_hidden, n_context and layer_norm"
        )
    if a["alphabet"] != b["alphabet"] and drop_source_layers < 1:
        raise CheckpointError(
            "the source model writes a different alphabet: use --drop_source_layers 1 (or "
            "more) so the output layer is re-initialised for the new alphabet"
        )
    keep = LAYER_ORDER[: len(LAYER_ORDER) - drop_source_layers]
    for name in keep:
        target.get_layer(name).set_weights(source.get_layer(name).get_weights())
    norms = [layer.name for layer in target.layers if layer.name.endswith("_norm")]
    for name in norms:
        if name != FEATURE_NORM and name.split("_norm")[0] in keep:
            target.get_layer(name).set_weights(source.get_layer(name).get_weights())
    if "layer_1" in keep:
        _transfer_statistics(source, target, source_dir)
    return list(keep)


def _transfer_statistics(source: keras.Model, target: keras.Model, source_dir: Path) -> None:
    """The copied layer_1 expects its source's features: keep the source's normalisation.

    A source trained without normalisation gives the identity (its layer_1 saw raw
    MFCCs); a normalising source into a target without the layer is refused, since
    the weights would then see features they were never trained on.
    """
    stats = feature_statistics(source)
    target_norm = feature_norm_layer(target)
    if target_norm is None:
        if stats is not None:
            raise CheckpointError(
                f"--load_checkpoint_dir {source_dir} normalises its features (feature_norm): "
                "add --feature_norm so the copied layers see the features they were trained on"
            )
        return
    if stats is None:
        n_input = target_norm.n_input
        stats = {"mean": [0.0] * n_input, "std": [1.0] * n_input}
    set_feature_statistics(target, np.array(stats["mean"]), np.array(stats["std"]))
