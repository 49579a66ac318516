"""CTC loss and greedy decoding on batch-major logits with true lengths."""

from __future__ import annotations

import tensorflow as tf


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


def greedy_decode(logits: tf.Tensor, logit_lengths: tf.Tensor) -> list[list[int]]:
    """Best path: argmax per frame, repeats merged, blanks dropped."""
    decoded, _ = tf.nn.ctc_greedy_decoder(
        tf.transpose(logits, [1, 0, 2]), tf.cast(logit_lengths, tf.int32), merge_repeated=True
    )
    dense = tf.sparse.to_dense(decoded[0], default_value=-1).numpy()
    batch = int(tf.shape(logits)[0])
    out = [[int(v) for v in row if v >= 0] for row in dense]
    return out + [[] for _ in range(batch - len(out))]
