"""The training state and the two jitted steps: `train_step(state, batch, key)` and `eval_step`.

State is a plain dict pytree: `params`, `batch_stats`, `buffers` (constants), `opt_state`,
`step` and the non-finite-update counter `skipped`. Batches are dicts of arrays from the input
pipeline, sharded over the `('data',)` mesh:

  skeleton  float32 (B, T, V, M, 3)  zero-padded raw sequences (channels-last)
  label     int32   (B,)
  index     int32   (B,)             the example's index in its split (augmentation keys)
  mask      bool    (B,)             False for eval padding examples

Augmentation runs inside the step, so the host only feeds raw batches.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from istanet_jax import augment, losses, optim
from istanet_jax.model import ISTANet
from istanet_jax.torch_compat import model_from_reference_args

def model_from_config(config: ml_collections.ConfigDict) -> ISTANet:
  dtype = {'float32': None, 'bfloat16': jnp.bfloat16}.get(config.dtype, 'bad')
  if dtype == 'bad':
    raise ValueError(f'config.dtype must be float32 or bfloat16, got {config.dtype!r}')
  return model_from_reference_args(config.model.to_dict(), dtype=dtype,
                                   bn_group_size=config.get('bn_group_size'))


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
  schedule = optim.lr_schedule(base_lr=config.base_lr, steps_per_epoch=steps_per_epoch,
                               warm_up_epoch=config.warm_up_epoch, step=list(config.step),
                               lr_decay_rate=config.lr_decay_rate)
  tx = optim.make_optimizer(config.optimizer, schedule, weight_decay=config.weight_decay,
                            nesterov=config.nesterov, betas=tuple(config.optimizer_betas))
  if config.get('grad_clip_norm'):
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx


def create_state(model: ISTANet, tx: optax.GradientTransformation, key: jax.Array) -> dict:
  """A freshly initialised state (reference initialisation, float32 parameters)."""
  x = jnp.zeros((1, model.num_frames, model.num_joints, model.num_persons, model.num_channels))
  variables = model.init(key, x, train=False)
  return state_from_variables(variables, tx)


def state_from_variables(variables, tx) -> dict:
  return dict(params=variables['params'], batch_stats=variables['batch_stats'],
              buffers=variables.get('buffers', {}), opt_state=tx.init(variables['params']),
              step=jnp.zeros((), jnp.int32), skipped=jnp.zeros((), jnp.int32))


def variables_of(state: dict) -> dict:
  variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
  if state['buffers']:
    variables['buffers'] = state['buffers']
  return variables


def train_transform(config: ml_collections.ConfigDict) -> Callable:
  f = config.train_feeder
  return functools.partial(
      augment.augment_train, window=f.window_size, p_interval=tuple(f.p_interval),
      random_rot=f.get('random_rot', False), entity_rearrangement=f.get('entity_rearrangement', False),
      # NTU's feeder is the only one with a bone stream.
      bone_pairs=augment.NTU_BONE_PAIRS if f.get('bone', False) else None, vel=f.get('vel', False))


def eval_transform(config: ml_collections.ConfigDict) -> Callable:
  f = config.test_feeder
  return functools.partial(
      augment.augment_eval, window=f.window_size, p_interval=tuple(f.p_interval),
      bone_pairs=augment.NTU_BONE_PAIRS if f.get('bone', False) else None, vel=f.get('vel', False))


def make_train_step(config: ml_collections.ConfigDict, model: ISTANet,
                    tx: optax.GradientTransformation) -> Callable:
  """(state, batch, key) -> (state, metrics); `key` is the run's base key (from the seed).

  Example i of step s is augmented with fold_in(fold_in(key, s), index_i), dropout uses
  fold_in(key, s) split off, so results depend on (seed, step, example) only: not on the
  batch's device layout, and a resumed run repeats them. A step whose loss or gradients are
  not finite leaves the state as it was (but for `step` and `skipped`).
  """
  loss_fn = losses.loss_from_config(config.loss, **config.loss_args.to_dict())
  transform = train_transform(config)

  def train_step(state, batch, key):
    step_key = jax.random.fold_in(key, state['step'])
    example_keys = jax.vmap(lambda i: jax.random.fold_in(step_key, i))(
        batch['index'].astype(jnp.uint32))
    x = transform(batch['skeleton'], example_keys)
    dropout_key = jax.random.fold_in(jax.random.fold_in(key, 0x7FFFFFFF), state['step'])
    mask = batch['mask'].astype(jnp.float32)
    count = jnp.maximum(mask.sum(), 1.0)

    def objective(params):
      variables = {**variables_of(state), 'params': params}
      logits, updates = model.apply(variables, x, train=True, rngs={'dropout': dropout_key},
                                    mutable=['batch_stats'])
      loss = (loss_fn(logits, batch['label']) * mask).sum() / count
      return loss, (logits, updates['batch_stats'])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(
        state['params'])
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = dict(
        state, params=keep(params, state['params']), opt_state=keep(opt_state, state['opt_state']),
        batch_stats=keep(batch_stats, state['batch_stats']), step=state['step'] + 1,
        skipped=state['skipped'] + (~finite).astype(jnp.int32))
    correct = losses.topk_correct(logits, batch['label'], 1) * mask
    metrics = {'loss_sum': loss * mask.sum(), 'top1_sum': correct.sum(), 'count': mask.sum(),
               'skipped': (~finite).astype(jnp.float32)}
    return new_state, metrics

  return train_step


def make_eval_step(config: ml_collections.ConfigDict, model: ISTANet) -> Callable:
  """(state, batch) -> (sums of loss / top-1 / top-5 / per-class counts, logits)."""
  loss_fn = losses.loss_from_config(config.loss, **config.loss_args.to_dict())
  transform = eval_transform(config)
  num_classes = model.num_classes

  def eval_step(state, batch):
    x = transform(batch['skeleton'])
    logits = model.apply(variables_of(state), x, train=False)
    mask = batch['mask'].astype(jnp.float32)
    label = jnp.clip(batch['label'], 0, num_classes - 1)
    top1 = losses.topk_correct(logits, label, 1) * mask
    one_hot = jax.nn.one_hot(label, num_classes) * mask[:, None]
    metrics = {'loss_sum': (loss_fn(logits, label) * mask).sum(), 'top1_sum': top1.sum(),
               'top5_sum': (losses.topk_correct(logits, label, 5) * mask).sum(),
               'count': mask.sum(), 'class_correct': (one_hot * top1[:, None]).sum(0),
               'class_count': one_hot.sum(0)}
    return metrics, logits

  return eval_step


def accumulate(total: Any, metrics: Any) -> Any:
  """Running sums on device: no host round trip until the sums are logged."""
  return metrics if total is None else jax.tree_util.tree_map(jnp.add, total, metrics)
