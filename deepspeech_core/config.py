"""One typed configuration for the whole pipeline, grouped by stage.

Names and defaults follow DeepSpeech 0.9.3's flags wherever DeepSpeech had them, so a
speech engineer can carry a `DeepSpeech.py` command line over flag by flag. The model
is the train-cv flow's parameter (Prefect renders it as a form); the CLI and a YAML
file fill the same model. Nothing here does I/O when built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CorpusConfig(_Section):
    """Where the speech comes from and how its text is cleaned."""

    corpus: Path | None = Field(
        None, description="A Common Voice locale directory (clips/*.mp3 + train/dev/test.tsv)."
    )
    train_files: list[Path] = Field(default_factory=list, description="DeepSpeech CSVs.")
    dev_files: list[Path] = Field(default_factory=list, description="DeepSpeech CSVs.")
    test_files: list[Path] = Field(default_factory=list, description="DeepSpeech CSVs.")
    alphabet_config_path: Path | None = Field(
        None, description="alphabet.txt in DeepSpeech's format; derived from train if unset."
    )
    normalize_ascii: bool = Field(
        False,
        description="--normalize: fold text to ASCII (NFKD; 'ü' -> 'u', non-Latin scripts "
        "erased), as DeepSpeech's import_cv2.py --normalize. Off: every script is kept.",
    )
    filter_alphabet: Path | None = Field(
        None,
        description="Reject rows whose transcript has characters outside this alphabet.txt "
        "(reason 'alphabet'), as DeepSpeech's importers' --filter_alphabet.",
    )
    bytes_output_mode: bool = Field(
        False,
        description="The model writes UTF-8 bytes instead of an alphabet's characters "
        "(DeepSpeech's --bytes_output_mode: for Mandarin, Japanese, large alphabets).",
    )
    lowercase: bool = True
    keep_characters: str = Field(
        "'", description="Punctuation kept by normalisation (the apostrophe, for English)."
    )
    max_duration: float = Field(
        10.0, gt=0, description="Clips longer than this (seconds) are rejected: the OOM guard."
    )
    import_workers: int = Field(0, ge=0, description="Processes for audio import; 0 = all cores.")

    @model_validator(mode="after")
    def _one_source(self) -> CorpusConfig:
        if self.corpus is not None and (self.train_files or self.dev_files or self.test_files):
            raise ValueError("give either --corpus or --train_files/--dev_files/--test_files")
        return self


class FeatureConfig(_Section):
    """DeepSpeech's MFCC front end."""

    audio_sample_rate: int = Field(16000, description="Sample rate the model is trained at.")
    feature_win_len: float = Field(32.0, gt=0, description="Window length in milliseconds.")
    feature_win_step: float = Field(20.0, gt=0, description="Window step in milliseconds.")
    n_input: int = Field(26, ge=1, description="MFCC coefficients per frame.")
    n_context: int = Field(9, ge=0, description="Frames of context on each side.")

    @property
    def window_samples(self) -> int:
        return int(self.audio_sample_rate * self.feature_win_len / 1000)

    @property
    def step_samples(self) -> int:
        return int(self.audio_sample_rate * self.feature_win_step / 1000)


class ModelConfig(_Section):
    """The DeepSpeech 0.9.3 acoustic model's dimensions."""

    n_hidden: int = Field(2048, ge=1, description="Width of every hidden layer and the LSTM.")
    dropout_rate: float = Field(0.05, ge=0, lt=1, description="Dropout on layers 1-3 and 5.")
    dropout_rate2: float = Field(-1.0, lt=1, description="Layer 2 dropout; <0: --dropout_rate.")
    dropout_rate3: float = Field(-1.0, lt=1, description="Layer 3 dropout; <0: --dropout_rate.")
    dropout_rate6: float = Field(-1.0, lt=1, description="Layer 5 dropout; <0: --dropout_rate.")
    relu_clip: float = Field(20.0, gt=0, description="ReLU activations are clipped here.")
    layer_norm: bool = Field(False, description="Layer normalisation after each dense layer.")
    feature_norm: bool = Field(
        False,
        description="Normalise the MFCCs by the training features' global mean and standard "
        "deviation (computed when a training starts, stored with the weights, applied inside "
        "every exported graph).",
    )

    def dropout_for(self, layer: int) -> float:
        """DeepSpeech's per-layer dropout: --dropout_rate{2,3,6} override when >= 0."""
        override = {2: self.dropout_rate2, 3: self.dropout_rate3, 5: self.dropout_rate6}
        value = override.get(layer, -1.0)
        return self.dropout_rate if value < 0 else value


class TrainingConfig(_Section):
    """Optimiser, schedule and checkpoints."""

    epochs: int = Field(75, ge=0, description="Passes over the training set.")
    train_batch_size: int = Field(1, ge=1, description="Clips per training step.")
    dev_batch_size: int = Field(1, ge=1, description="Clips per dev-loss batch.")
    learning_rate: float = Field(0.001, gt=0, description="Adam learning rate.")
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1.")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2.")
    epsilon: float = Field(1e-8, gt=0, description="Adam epsilon.")
    seed: int = Field(4568, description="DeepSpeech's --random_seed.")
    checkpoint_dir: Path | None = Field(
        None, description="Default: WORKDIR/checkpoints/<training data fingerprint>."
    )
    checkpoint_steps: int = Field(500, ge=1, description="Save a checkpoint every N steps.")
    checkpoint_secs: int = Field(600, ge=1, description="...and every N seconds.")
    max_to_keep: int = Field(5, ge=1, description="Periodic checkpoints kept.")
    train_retries: int = Field(3, ge=0, description="Prefect retries of the train stage.")
    load_train: Literal["auto", "best", "last", "init"] = Field(
        "auto",
        description="auto: newest checkpoint (resume), else start; best/last: that one; "
        "init: start fresh (refused if the directory already holds checkpoints).",
    )
    load_checkpoint_dir: Path | None = Field(
        None, description="Transfer learning: start a new training from this model's weights."
    )
    drop_source_layers: int = Field(
        0, ge=0, le=6, description="Re-initialise the last N source layers (1 = the output)."
    )
    force_initialize_learning_rate: bool = Field(
        False, description="On resume, use --learning_rate instead of the checkpoint's."
    )
    best_metric: Literal["dev_loss", "dev_wer"] = Field(
        "dev_loss",
        description="What picks the best checkpoint and drives early stopping and LR cuts: "
        "dev_loss (DeepSpeech's) or dev_wer, the WER of greedy decoding on dev (NeMo's "
        "choice; dev loss until the WER first falls below 1): on voices not in train, "
        "dev loss turns upward while the WER still falls.",
    )
    early_stop: bool = Field(False, description="Stop when the best metric stops improving.")
    es_epochs: int = Field(25, ge=1, description="Epochs without improvement before stopping.")
    es_min_delta: float = Field(
        0.05, ge=0, description="Smallest dev-loss gain that counts (dev_wer: any fall)."
    )
    reduce_lr_on_plateau: bool = Field(False, description="Cut the LR when the metric stalls.")
    plateau_epochs: int = Field(10, ge=1, description="Epochs without improvement per cut.")
    plateau_reduction: float = Field(0.1, gt=0, lt=1, description="LR multiplier per cut.")
    max_bad_batches: int = Field(
        10, ge=0, description="Skipped inf/NaN-loss batches tolerated before training stops."
    )
    deterministic: bool = Field(
        False, description="Deterministic TensorFlow ops: bit-identical resumes, a little slower."
    )
    require_gpu: bool = Field(
        False, description="Fail at once when no GPU is visible or NVML and TensorFlow disagree."
    )
    distribute: Literal["auto", "none", "mirrored", "multi_worker"] = Field(
        "auto",
        description="auto: MirroredStrategy over several GPUs; mirrored: always; "
        "multi_worker: MultiWorkerMirroredStrategy across hosts (TF_CONFIG).",
    )
    automatic_mixed_precision: bool = Field(
        False, description="float16 with loss scaling on a GPU, bfloat16 on a CPU."
    )
    gpu_memory_growth: bool = Field(
        True, description="Allocate GPU memory as needed (the playbook's cuDNN-init fix)."
    )
    gpu_monitor_interval: float = Field(
        5.0, ge=0, description="Seconds between GPU samples (NVML) while training; 0 = off."
    )
    gpu_idle_window: float = Field(
        60.0, gt=0, description="Seconds of training over which --gpu_idle_utilization is judged."
    )
    gpu_idle_utilization: float = Field(
        30.0, ge=0, le=100, description="Warn if a GPU's mean use over the window is under this %."
    )
    gpu_memory_warning: float = Field(
        0.95, gt=0, le=1, description="Warn when a GPU's memory use reaches this fraction."
    )
    augment: list[str] = Field(
        default_factory=list,
        description="DeepSpeech --augment specs, e.g. 'frequency_mask[p=0.8,n=2:4,size=2:4]'.",
    )
    recipe: Literal["none", "small_data"] = Field(
        "none",
        description="small_data: feature normalisation, speed perturbation, SpecAugment-style "
        "masks, dropout 0.3, early stopping and LR cuts on dev loss; flags you give "
        "win over the recipe's values.",
    )

    @field_validator("augment")
    @classmethod
    def _parse_augment(cls, specs: list[str]) -> list[str]:
        from deepspeech_core.features.augmentation import parse_augmentations

        parse_augmentations(specs)  # raises AugmentationError (a ValueError) with the fix
        return specs


# --recipe NAME: (section, field) -> value, applied to every field the user did not set.
# small_data is for corpora of a few to a few hundred hours whose test speakers are not
# in training (Common Voice's official splits); docs/PERFORMANCE.md measures each part.
RECIPES: dict[str, dict[tuple[str, str], object]] = {
    "small_data": {
        ("model", "feature_norm"): True,
        ("model", "dropout_rate"): 0.3,
        ("training", "augment"): [
            "speed[p=1,delta=0.1]",
            "frequency_mask[p=0.5,n=1:2,size=1:3]",
            "time_mask[p=0.5,n=1:2,size=20:60]",
            # A copy of the training audio peaking at -10 to -40 dBFS: voices recorded
            # quieter than the training ones (docs/PERFORMANCE.md, "Unseen voices").
            "volume[p=1,dbfs=25~15]",
        ],
        ("training", "best_metric"): "dev_wer",
        ("training", "early_stop"): True,
        ("training", "es_epochs"): 8,
        ("training", "reduce_lr_on_plateau"): True,
        ("training", "plateau_epochs"): 4,
        ("training", "plateau_reduction"): 0.5,
    },
}


def recipe_record(name: str, model: ModelConfig, training: TrainingConfig) -> dict | None:
    """What a training's recipe set: each component's recipe value and the value used.

    `used` differs from `recipe` where the user's own flag won. Stored beside the
    checkpoints (recipe.json) and in each export's metadata.json.
    """
    if name not in RECIPES:
        return None
    sections = {"model": model, "training": training}
    components = {
        f"{section}.{field}": {"recipe": value, "used": getattr(sections[section], field)}
        for (section, field), value in RECIPES[name].items()
    }
    return {"name": name, "components": components}


# DeepSpeech 0.9.3's --lm_alpha/--lm_beta defaults (used when neither the flags, a
# tune-lm result nor the .scorer package give them).
DEEPSPEECH_LM_ALPHA = 0.931289039105002
DEEPSPEECH_LM_BETA = 1.1834137581510284


class DecoderConfig(_Section):
    """How logits become text (DeepSpeech's decoder flags and defaults)."""

    beam_width: int = Field(
        1024, ge=1, description="CTC beam width; 1 = greedy best-path decoding."
    )
    scorer_path: Path | None = Field(
        None,
        description="Language model for the beam search: a DeepSpeech .scorer package, a "
        "KenLM binary or an ARPA file.",
    )
    lm_alpha: float | None = Field(
        None,
        description="Language model weight; unset: tune-lm's for this scorer, else the "
        f".scorer's default, else DeepSpeech's {DEEPSPEECH_LM_ALPHA:.3f}.",
    )
    lm_beta: float | None = Field(
        None,
        description="Word insertion bonus; unset: tune-lm's for this scorer, else the "
        f".scorer's default, else DeepSpeech's {DEEPSPEECH_LM_BETA:.3f}.",
    )


class EvaluationConfig(DecoderConfig):
    test_batch_size: int = Field(1, ge=1, description="Clips per evaluation batch.")
    report_count: int = Field(
        5, ge=0, description="Best, median and worst samples shown in the log and UI."
    )
    test_output_file: Path | None = Field(
        None, description="Also write the per-sample JSON here (default: WORKDIR/reports)."
    )


class ExportConfig(_Section):
    """Where the model goes and what its model card says (DeepSpeech's export flags)."""

    export_dir: Path | None = Field(None, description="Default: WORKDIR/export.")
    export_tflite: bool = Field(
        True,
        description="Also export streaming TFLite models (fp32 and quantised) and the "
        "DeepSpeech 0.9.3 client graphs output_graph.tflite, .quant.tflite and .pb.",
    )
    export_beam_width: int = Field(
        500, ge=1, description="Beam width DeepSpeech clients use by default (in output_graph.*)."
    )
    export_author_id: str = Field("author", description="Model card: author's id.")
    export_model_name: str = Field("model", description="Model card: model name.")
    export_model_version: str = Field("0.0.1", description="Model card: model version.")
    export_contact_info: str = Field("<public contact information>", description="Model card.")
    export_license: str = Field("AGPL-3.0", description="Model card: SPDX license identifier.")
    export_language: str = Field("en", description="Model card: language (e.g. en-US).")
    export_min_ds_version: str = Field("0.9.3", description="Model card: DeepSpeech version.")
    export_max_ds_version: str = Field("0.9.3", description="Model card: DeepSpeech version.")
    export_description: str = Field("<optional description>", description="Model card.")


class ExecutionConfig(_Section):
    """Where the parallel work of a run goes (feature shards today)."""

    task_runner: Literal["threads", "processes", "dask"] = Field(
        "threads",
        description="Runs feature shards on local threads, local processes, or a Dask cluster.",
    )
    dask_address: str | None = Field(
        None, description="Scheduler address for --task_runner dask; unset = a local cluster."
    )
    workers: int = Field(0, ge=0, description="Local threads/processes; 0 = all cores.")
    shard_size: int = Field(2000, ge=1, description="Clips per feature-cache shard.")


class PipelineConfig(_Section):
    """The train-cv flow's parameter: every stage's settings in one validated model."""

    workdir: Path = Field(Path("deepspeech-data"), description="Where every stage writes.")
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @model_validator(mode="after")
    def _apply_recipe(self) -> PipelineConfig:
        """--recipe fills the fields the user did not give (explicit values win).

        Idempotent: a validated config re-validated from its dump has every field set,
        so the recipe changes nothing the second time.
        """
        for (section, name), value in RECIPES.get(self.training.recipe, {}).items():
            part = getattr(self, section)
            if name not in part.model_fields_set:
                setattr(part, name, value)
        return self

    @property
    def checkpoint_dir(self) -> Path:
        return self.training.checkpoint_dir or self.workdir / "checkpoints"

    @property
    def export_dir(self) -> Path:
        return self.export.export_dir or self.workdir / "export"

    def resolved(self) -> PipelineConfig:
        """A copy with every path absolute, so tasks run the same from any directory.

        Every path-typed field of every section (`Path`, `Path | None`, `list[Path]`), so
        a field added later is resolved too: a relative path must mean the directory the
        run was started from, not wherever a task or a deployment's worker runs.
        """
        data = self.model_dump()
        for name, info in PipelineConfig.model_fields.items():
            value = getattr(self, name)
            if isinstance(value, BaseModel):
                for field, field_info in type(value).model_fields.items():
                    if _holds_paths(field_info.annotation):
                        data[name][field] = _absolute(getattr(value, field))
            elif _holds_paths(info.annotation):
                data[name] = _absolute(value)
        return PipelineConfig.model_validate(data)


def _holds_paths(annotation: object) -> bool:
    """Is a field typed Path, Path | None or list[Path]?"""
    return annotation is Path or Path in get_args(annotation)


def _absolute(value: Path | list[Path] | None) -> Path | list[Path] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return [p.expanduser().resolve() for p in value]
    return value.expanduser().resolve()


Stage = Literal["validate", "features", "train", "evaluate", "export"]
STAGES: tuple[Stage, ...] = ("validate", "features", "train", "evaluate", "export")


def runs_stage(target: Stage, stage: Stage) -> bool:
    """Does a run up to `target` include `stage`? (The stages run in STAGES' order.)"""
    return STAGES.index(stage) <= STAGES.index(target)
