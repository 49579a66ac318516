"""Filling the one PipelineConfig from a YAML file and DeepSpeech-style flags.

Precedence: defaults < --config YAML < flags given on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from deepspeech_core.config import PipelineConfig
from deepspeech_flow.errors import ConfigError

# Every config field is a flag named as the field, so a field added to PipelineConfig is
# a flag at once. The exceptions, each with its reason:
FLAG_NAMES: dict[tuple[str | None, str], str] = {
    # DeepSpeech's importers call it --normalize.
    ("corpus", "normalize_ascii"): "normalize",
}
NOT_FLAGS: frozenset[tuple[str | None, str]] = frozenset(
    {
        # The network's input layout, which DeepSpeech 0.9.3's clients fix (26 MFCCs, 9
        # frames of context each side); a --config file can still change them.
        ("features", "n_input"),
        ("features", "n_context"),
    }
)


def config_flags() -> dict[str, tuple[str | None, str]]:
    """flag name -> (config section, field), None = top level: every field but NOT_FLAGS.

    Raises ValueError when two fields would make the same flag (a new field named like
    one in another section needs an entry in FLAG_NAMES).
    """
    flags: dict[str, tuple[str | None, str]] = {}
    for name, info in PipelineConfig.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            fields = [(name, field) for field in section.model_fields]
        else:
            fields = [(None, name)]
        for key in fields:
            if key in NOT_FLAGS:
                continue
            flag = FLAG_NAMES.get(key, key[1])
            if flag in flags:
                raise ValueError(
                    f"config fields {flags[flag]} and {key} would both be --{flag}: give one "
                    "another flag name in config_loading.FLAG_NAMES"
                )
            flags[flag] = key
    return flags


FLAG_FIELDS = config_flags()


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
