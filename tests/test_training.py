import json

import numpy as np
import pytest
import tensorflow as tf

from deepspeech_core.config import ModelConfig
from deepspeech_core.features.batches import batch_plan
from deepspeech_core.model.checkpoints import CheckpointError, load_model
from deepspeech_core.train.loop import train


class Interrupt(Exception):
    pass


def test_batch_plan_is_deterministic_and_complete():
    lengths = np.random.default_rng(0).integers(10, 500, size=103)
    plan = batch_plan(lengths, 8, seed=5, epoch=2)
    assert sorted(np.concatenate(plan).tolist()) == list(range(103))
    assert [b.tolist() for b in plan] == [
        b.tolist() for b in batch_plan(lengths, 8, seed=5, epoch=2)
    ]
    assert [b.tolist() for b in plan] != [
        b.tolist() for b in batch_plan(lengths, 8, seed=5, epoch=3)
    ]
    assert lengths[plan[0]].max() == lengths.max(), "longest batch first: OOM shows at once"

    # Length bucketing: far less padding than batches in random order.
    def padding(p):
        return sum(lengths[b].max() * len(b) - lengths[b].sum() for b in p)

    random_plan = np.array_split(np.random.default_rng(1).permutation(103), 13)
    assert padding(plan) < 0.3 * padding(random_plan)


def test_loss_goes_down_and_checkpoints_describe_the_model(trained):
    cfg, _, _, result = trained
    assert result.epochs == 2
    assert len(result.train_loss_history) == 2
    assert result.dev_loss_history[1] < result.dev_loss_history[0]
    assert result.best_checkpoint is not None
    spec = json.loads((cfg.checkpoint_dir / "model.json").read_text())
    assert spec["model"]["n_hidden"] == 32
    assert spec["features"]["n_input"] == 26
    model, loaded_spec, _ = load_model(cfg.checkpoint_dir)
    assert loaded_spec.alphabet.n_classes == model.output_shape[-1]


def test_rerun_of_finished_training_does_no_steps(trained):
    cfg, _, features, result = trained
    again = train(features, cfg.model, cfg.features, cfg.training, cfg.checkpoint_dir)
    assert again.steps == result.steps
    assert again.resumed_from_step == result.steps


def test_interrupted_run_resumes_at_the_next_batch(trained, tmp_path):
    cfg, _, features, uninterrupted = trained
    checkpoint_dir = tmp_path / "ckpt"
    seen: list[int] = []

    def stop_at_step_5(p):  # epoch 1, batch 1 (4 batches per epoch)
        seen.append(p.step)
        if p.step == 5:
            raise Interrupt("stopped at step 5")

    with pytest.raises(Interrupt, match="stopped at step 5"):
        train(
            features,
            cfg.model,
            cfg.features,
            cfg.training,
            checkpoint_dir,
            on_progress=stop_at_step_5,
        )
    # The newest checkpoint is epoch 0's end (step 4); step 5 was lost and is redone.
    resumed_steps: list[int] = []
    result = train(
        features,
        cfg.model,
        cfg.features,
        cfg.training,
        checkpoint_dir,
        on_progress=lambda p: resumed_steps.append(p.step),
    )
    assert result.resumed_from_step == 4
    assert resumed_steps[0] == 5
    assert resumed_steps[-1] == uninterrupted.steps
    assert result.epochs == 2
    assert len(result.dev_loss_history) == 2
    # Same seed, same batches, restored dropout RNG: the same weights as never stopping.
    a, _, _ = load_model(checkpoint_dir, "train")
    b, _, _ = load_model(cfg.checkpoint_dir, "train")
    for va, vb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-5, atol=1e-6)


def test_different_architecture_is_refused(trained):
    cfg, _, features, _ = trained
    with pytest.raises(CheckpointError, match="n_hidden"):
        train(features, ModelConfig(n_hidden=64), cfg.features, cfg.training, cfg.checkpoint_dir)


def test_non_finite_batches_are_skipped_then_training_stops(trained, tmp_path, monkeypatch):
    import deepspeech_core.train.loop as training

    cfg, _, features, _ = trained
    real = training.ctc_loss_per_sample

    # A clip whose label is absurdly long for its frames gives CTC an infinite loss.
    def poisoned(labels, label_lengths, logits, logit_lengths):
        loss = real(labels, label_lengths, logits, logit_lengths)
        first_is_long = tf.shape(labels)[1] > 30  # the batches holding the longest transcripts
        return tf.where(first_is_long, loss * np.inf, loss)

    monkeypatch.setattr(training, "ctc_loss_per_sample", poisoned)
    tolerant = cfg.training.model_copy(update={"max_bad_batches": 100})
    result = train(features, cfg.model, cfg.features, tolerant, tmp_path / "tolerant")
    model, _, _ = load_model(tmp_path / "tolerant", "train")
    assert all(np.isfinite(v.numpy()).all() for v in model.weights), "no NaN in a checkpoint"
    assert result.epochs == 2

    strict = cfg.training.model_copy(update={"max_bad_batches": 0})
    with pytest.raises(training.TrainingError, match="max_bad_batches") as info:
        train(features, cfg.model, cfg.features, strict, tmp_path / "strict")
    assert ".wav" in str(info.value)


def test_training_with_augmentation(trained, tmp_path):
    """Feature augmentation changes what the model trains on (and so its losses)."""
    cfg, _, features, _ = trained
    plain = cfg.training.model_copy(update={"deterministic": True})
    training = plain.model_copy(
        update={"augment": ["frequency_mask[p=0.8,n=2:4,size=2:4]", "tempo[p=0.5,factor=1.1~0.1]"]}
    )
    result = train(features, cfg.model, cfg.features, training, tmp_path / "ckpt")
    baseline = train(features, cfg.model, cfg.features, plain, tmp_path / "plain")
    assert result.epochs == 2
    assert all(np.isfinite(result.train_loss_history + result.dev_loss_history))
    # Same seed, deterministic ops: only the masks can make the training losses differ.
    assert result.train_loss_history != pytest.approx(baseline.train_loss_history, rel=1e-6)
    # Dev batches are never augmented: the first epoch's dev loss differs only by the
    # weights the augmented steps produced.
    assert result.dev_loss_history[0] != pytest.approx(baseline.dev_loss_history[0], rel=1e-6)
