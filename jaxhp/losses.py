"""Losses and metrics that skip padding rows, for a user's own Trainable.

The engine pads a trial's batch to its bucket's size and its validation set to the
longest fold; ``batch.mask`` is False on those rows. These helpers take the mask, so a
``step`` or ``evaluate`` needs no hand-written ``where``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "masked_accuracy",
    "masked_mean",
    "masked_softmax_cross_entropy",
]


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """The mean of ``values`` (``[B]``, or ``[B, ...]`` averaged per row first) over the
    rows where ``mask`` (``[B]`` bool) is True; 0 when no row is.

    Example:
        >>> loss = jaxhp.masked_mean(jnp.square(pred - batch.y), batch.mask)
    """
    values = jnp.asarray(values)
    if values.ndim > 1:
        values = values.reshape(values.shape[0], -1).mean(-1)
    total = jnp.sum(jnp.where(mask, values, 0.0))
    return total / jnp.maximum(jnp.sum(mask), 1).astype(total.dtype)


def masked_softmax_cross_entropy(
    logits: jax.Array, labels: jax.Array, mask: jax.Array
) -> jax.Array:
    """Mean softmax cross-entropy of ``logits`` (``[B, C]``) against integer
    ``labels`` (``[B]``) over the real rows.

    Example:
        >>> loss = jaxhp.losses.masked_softmax_cross_entropy(logits, batch.y, batch.mask)
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    labels = jnp.asarray(labels).astype(jnp.int32)
    # A padding row's label may be anything: clip it so the gather stays in range.
    safe = jnp.clip(labels, 0, logits.shape[-1] - 1)
    ce = -jnp.take_along_axis(logp, safe[:, None], axis=-1)[:, 0]
    return masked_mean(ce, mask)


def masked_accuracy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """The fraction of real rows whose largest logit is at their label."""
    hit = jnp.argmax(logits, axis=-1) == jnp.asarray(labels)
    return masked_mean(hit.astype(jnp.float32), mask)
