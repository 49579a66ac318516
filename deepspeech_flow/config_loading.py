"""Filling the one PipelineConfig from a YAML file and DeepSpeech-style flags.

Precedence: defaults < --config YAML < flags given on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deepspeech_core.config import PipelineConfig
from deepspeech_flow.errors import ConfigError

# flag name (DeepSpeech's spelling) -> (config section, field); None = top level
FLAG_FIELDS: dict[str, tuple[str | None, str]] = {
    "workdir": (None, "workdir"),
    "corpus": ("corpus", "corpus"),
    "train_files": ("corpus", "train_files"),
    "dev_files": ("corpus", "dev_files"),
    "test_files": ("corpus", "test_files"),
    "alphabet_config_path": ("corpus", "alphabet_config_path"),
    "normalize": ("corpus", "normalize_ascii"),
    "filter_alphabet": ("corpus", "filter_alphabet"),
    "bytes_output_mode": ("corpus", "bytes_output_mode"),
    "max_duration": ("corpus", "max_duration"),
    "audio_sample_rate": ("features", "audio_sample_rate"),
    "n_hidden": ("model", "n_hidden"),
    "dropout_rate": ("model", "dropout_rate"),
    "relu_clip": ("model", "relu_clip"),
    "layer_norm": ("model", "layer_norm"),
    "epochs": ("training", "epochs"),
    "train_batch_size": ("training", "train_batch_size"),
    "dev_batch_size": ("training", "dev_batch_size"),
    "learning_rate": ("training", "learning_rate"),
    "seed": ("training", "seed"),
    "checkpoint_dir": ("training", "checkpoint_dir"),
    "checkpoint_steps": ("training", "checkpoint_steps"),
    "checkpoint_secs": ("training", "checkpoint_secs"),
    "train_retries": ("training", "train_retries"),
    "augment": ("training", "augment"),
    "recipe": ("training", "recipe"),
    "feature_norm": ("model", "feature_norm"),
    "load_train": ("training", "load_train"),
    "early_stop": ("training", "early_stop"),
    "es_epochs": ("training", "es_epochs"),
    "es_min_delta": ("training", "es_min_delta"),
    "reduce_lr_on_plateau": ("training", "reduce_lr_on_plateau"),
    "plateau_epochs": ("training", "plateau_epochs"),
    "plateau_reduction": ("training", "plateau_reduction"),
    "max_bad_batches": ("training", "max_bad_batches"),
    "deterministic": ("training", "deterministic"),
    "require_gpu": ("training", "require_gpu"),
    "gpu_memory_growth": ("training", "gpu_memory_growth"),
    "gpu_monitor_interval": ("training", "gpu_monitor_interval"),
    "gpu_idle_window": ("training", "gpu_idle_window"),
    "gpu_idle_utilization": ("training", "gpu_idle_utilization"),
    "gpu_memory_warning": ("training", "gpu_memory_warning"),
    "force_initialize_learning_rate": ("training", "force_initialize_learning_rate"),
    "load_checkpoint_dir": ("training", "load_checkpoint_dir"),
    "drop_source_layers": ("training", "drop_source_layers"),
    "automatic_mixed_precision": ("training", "automatic_mixed_precision"),
    "distribute": ("training", "distribute"),
    "dropout_rate2": ("model", "dropout_rate2"),
    "dropout_rate3": ("model", "dropout_rate3"),
    "dropout_rate6": ("model", "dropout_rate6"),
    "test_batch_size": ("evaluation", "test_batch_size"),
    "report_count": ("evaluation", "report_count"),
    "beam_width": ("evaluation", "beam_width"),
    "scorer_path": ("evaluation", "scorer_path"),
    "lm_alpha": ("evaluation", "lm_alpha"),
    "lm_beta": ("evaluation", "lm_beta"),
    "test_output_file": ("evaluation", "test_output_file"),
    "export_dir": ("export", "export_dir"),
    "export_tflite": ("export", "export_tflite"),
    "export_beam_width": ("export", "export_beam_width"),
    **{
        f"export_{name}": ("export", f"export_{name}")
        for name in (
            "author_id",
            "model_name",
            "model_version",
            "contact_info",
            "license",
            "language",
            "min_ds_version",
            "max_ds_version",
            "description",
        )
    },
    "task_runner": ("execution", "task_runner"),
    "dask_address": ("execution", "dask_address"),
    "workers": ("execution", "workers"),
    "shard_size": ("execution", "shard_size"),
}


# Other spellings DeepSpeech users type.
FLAG_ALIASES: dict[str, tuple[str, ...]] = {"seed": ("random_seed",), "scorer_path": ("scorer",)}


def split_files(value: str | None) -> list[str] | None:
    """DeepSpeech's comma-separated file lists."""
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def load_yaml(path: Path) -> dict[str, Any]:
    """The --config file's sections; a missing or malformed file is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"--config {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"--config {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of config sections, got {type(data).__name__}"
        )
    return data


def build_config(config_file: Path | None, flags: dict[str, Any]) -> PipelineConfig:
    """Merge YAML and the flags that were given (None = not given) into a PipelineConfig."""
    data: dict[str, Any] = load_yaml(config_file) if config_file else {}
    for name, value in flags.items():
        if value is None:
            continue
        section, field = FLAG_FIELDS[name]
        if section is None:
            data[field] = value
        else:
            data.setdefault(section, {})[field] = value
    return PipelineConfig.model_validate(data)
