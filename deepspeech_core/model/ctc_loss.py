"""CTC loss on batch-major logits with true lengths, and the compiled evaluation step."""

from __future__ import annotations

import keras
import tensorflow as tf

from deepspeech_core.features.batches import Batch, batch_signature


def ctc_loss_per_sample(
    labels: tf.Tensor, label_lengths: tf.Tensor, logits: tf.Tensor, logit_lengths: tf.Tensor
) -> tf.Tensor:
    """CTC negative log-likelihood per sample; the blank is the last class (DeepSpeech)."""
    return tf.nn.ctc_loss(
        labels=labels,
        logits=logits,
        label_length=label_lengths,
        logit_length=logit_lengths,
        logits_time_major=False,
        blank_index=-1,
    )


def make_eval_step(model: keras.Model, n_input: int):
    """Compiled inference on a batch: (logits, per-sample CTC loss), traced once.

    Calling the Keras model eagerly per batch costs far more than the maths on a CPU.
    """

    @tf.function(input_signature=[batch_signature(n_input)])
    def eval_step(batch: Batch) -> tuple[tf.Tensor, tf.Tensor]:
        logits = model(batch.features, training=False)
        losses = ctc_loss_per_sample(
            batch.labels, batch.label_lengths, logits, batch.feature_lengths
        )
        return logits, losses

    return eval_step
