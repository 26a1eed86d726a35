"""The reference's losses (`utils/loss.py`) and the accuracy it reports."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def label_smoothing_cross_entropy(logits: jax.Array, labels: jax.Array, *,
                                  smoothing: float = 0.1,
                                  temperature: float = 1.0) -> jax.Array:
  """Per-example loss (N,) of the reference's `LabelSmoothingCrossEntropy`; its `.mean()` is the
  reference's value.

  (1 - smoothing) * NLL + smoothing * mean over classes of -log p, with p = softmax(logits / T).
  smoothing=0, temperature=1 is the reference's `CrossEntropy` (nn.CrossEntropyLoss).
  """
  log_probs = jax.nn.log_softmax(logits / temperature, axis=-1)
  nll = -jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
  smooth = -log_probs.mean(axis=-1)
  return (1.0 - smoothing) * nll + smoothing * smooth


def loss_from_config(name: str, smoothing: float = 0.1, temperature: float = 1.0):
  """The reference's `get_loss_func(loss, loss_args)`: a per-example loss function."""
  if name == 'LabelSmoothingCrossEntropy':
    return lambda logits, labels: label_smoothing_cross_entropy(
        logits, labels, smoothing=smoothing, temperature=temperature)
  if name == 'CrossEntropy':
    return lambda logits, labels: label_smoothing_cross_entropy(
        logits, labels, smoothing=0.0, temperature=1.0)
  raise ValueError(f'unknown loss {name!r}: LabelSmoothingCrossEntropy or CrossEntropy')


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """(N,) 1.0 where the label is among the k highest logits (ties as torch.topk: lower index first)."""
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return (top == labels[:, None]).any(axis=-1).astype(jnp.float32)
