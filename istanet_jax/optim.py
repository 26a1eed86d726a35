"""The reference's optimisers and learning-rate rule (`main.py: load_optimizer`,
`adjust_learning_rate`) as optax.

torch's SGD and Adam add weight decay to the gradient (coupled L2) before momentum; AdamW
decays the weights by lr * weight_decay (decoupled). All three decay every parameter,
BatchNorm scales, `alpha` and `M` included, as the reference passes `model.parameters()`.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
import optax


def reference_lr(epoch: int, *, base_lr: float, warm_up_epoch: int, step: Sequence[int],
                 lr_decay_rate: float) -> float:
  """The reference's learning rate for a 0-based epoch: linear warm-up, then multistep decay."""
  if epoch < warm_up_epoch:
    return base_lr * (epoch + 1) / warm_up_epoch
  return base_lr * lr_decay_rate ** int(np.sum(epoch >= np.asarray(step)))


def lr_schedule(*, base_lr: float, steps_per_epoch: int, warm_up_epoch: int,
                step: Sequence[int], lr_decay_rate: float) -> optax.Schedule:
  """`reference_lr` over optimiser steps: constant within an epoch, as the reference sets it
  once at the start of each epoch. `step` holds the decay epochs (the reference's name)."""
  if steps_per_epoch < 1:
    raise ValueError(f'steps_per_epoch must be >= 1, got {steps_per_epoch}')
  milestones = jnp.asarray(sorted(step), jnp.int32).reshape(-1)

  def schedule(count):
    epoch = jnp.asarray(count, jnp.int32) // steps_per_epoch
    warm = base_lr * (epoch + 1) / max(warm_up_epoch, 1)
    decayed = base_lr * lr_decay_rate ** jnp.sum(epoch >= milestones)
    return jnp.where(epoch < warm_up_epoch, warm, decayed)
  return schedule


def make_optimizer(name: str, learning_rate, *, weight_decay: float, nesterov: bool = False,
                   momentum: float = 0.9, betas: Sequence[float] = (0.9, 0.999),
                   eps: float = 1e-8) -> optax.GradientTransformation:
  """`SGD` (momentum 0.9 as the reference hard-codes it), `Adam` or `AdamW`, each equal to torch's."""
  if name == 'SGD':
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.trace(decay=momentum, nesterov=nesterov),
                       optax.scale_by_learning_rate(learning_rate))
  if name == 'Adam':
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.scale_by_adam(b1=betas[0], b2=betas[1], eps=eps),
                       optax.scale_by_learning_rate(learning_rate))
  if name == 'AdamW':
    return optax.adamw(learning_rate, b1=betas[0], b2=betas[1], eps=eps,
                       weight_decay=weight_decay)
  raise ValueError(f'unknown optimizer {name!r}: SGD, Adam or AdamW')
