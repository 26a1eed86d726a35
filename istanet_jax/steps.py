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
import itertools
import math
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import jax
import jax.extend.random
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from istanet_jax import augment, losses, optim
from istanet_jax.model import ISTANet
from istanet_jax.torch_compat import model_from_reference_args

if TYPE_CHECKING:  # configs are only read here: the benchmarks run without ml_collections
  import ml_collections


def model_from_config(config: ml_collections.ConfigDict) -> ISTANet:
  dtype = {'float32': None, 'bfloat16': jnp.bfloat16}.get(config.dtype, 'bad')
  if dtype == 'bad':
    raise ValueError(f'config.dtype must be float32 or bfloat16, got {config.dtype!r}')
  return model_from_reference_args(config.model.to_dict(), dtype=dtype,
                                   bn_group_size=config.get('bn_group_size'),
                                   conv_algorithm=config.get('conv_algorithm', 'winograd'),
                                   matmul_outputs=config.get('matmul_outputs', 'auto'))


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
  schedule = optim.lr_schedule(base_lr=config.base_lr, steps_per_epoch=steps_per_epoch,
                               warm_up_epoch=config.warm_up_epoch, step=list(config.step),
                               lr_decay_rate=config.lr_decay_rate)
  tx = optim.make_optimizer(config.optimizer, schedule, weight_decay=config.weight_decay,
                            nesterov=config.nesterov, betas=tuple(config.optimizer_betas))
  if config.get('grad_clip_norm'):
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx


def _fmix32(h: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finaliser: a bijection of uint32 in which every input bit flips every
  output bit with probability close to 1/2."""
  h = (h ^ (h >> 16)) * np.uint32(0x85EBCA6B)
  h = (h ^ (h >> 13)) * np.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


# Domains keep a key's drawn words and the two words of the keys folded or split from it apart.
_BITS, _FOLD_IN, _SPLIT = 0x6A09E667, (0x9E3779B9, 0x7F4A7C15), (0x85A308D3, 0x243F6A88)


def _keyed_hash(key: jax.Array, counters: jax.Array, domain: int) -> jax.Array:
  """uint32 words of the two-word `key` at `counters`: two finaliser rounds, the first keyed by
  a hash of the key's first word and the domain, the second by its second word, so that in each
  domain a key's words are a permutation of the counters. (Keyed by the first word itself, keys
  (0, 0) and (1, 0) gave the same words with neighbours swapped.)"""
  return _fmix32(_fmix32(counters ^ _fmix32(key[0] ^ np.uint32(domain))) + key[1])


def _two_words(key: jax.Array, counters: jax.Array, domains: tuple) -> jax.Array:
  return jnp.stack([_keyed_hash(key, counters, d) for d in domains], axis=-1)


def _counters(n: int) -> jax.Array:
  if n > 2**32:
    raise ValueError(f'INIT_PRNG draws at most 2**32 words from one key, asked for {n}')
  return jax.lax.iota(jnp.uint32, n)


def _init_prng_seed(seed: jax.Array) -> jax.Array:
  seed = jnp.asarray(seed)
  high = (jax.lax.shift_right_logical(seed, jnp.asarray(32, seed.dtype)) if seed.dtype.itemsize == 8
          else jnp.zeros_like(seed))
  return jnp.stack([high.astype(jnp.uint32), seed.astype(jnp.uint32)])


def _init_prng_bits(key: jax.Array, bit_width: int, shape: tuple) -> jax.Array:
  n = math.prod(shape)
  if bit_width == 64:
    words = _keyed_hash(key, _counters(2 * n), _BITS).astype(jnp.uint64)
    return ((words[:n] << 32) | words[n:]).reshape(shape)
  words = _keyed_hash(key, _counters(n), _BITS)
  # The high bits, as the float draws read them (`jax.random.uniform` keeps the top mantissa bits).
  return (words >> (32 - bit_width)).astype(jnp.dtype(f'uint{bit_width}')).reshape(shape)


def _init_prng_fold_in(key: jax.Array, data: jax.Array) -> jax.Array:
  return _two_words(key, jnp.asarray(data, jnp.uint32), _FOLD_IN)


def _init_prng_split(key: jax.Array, shape: tuple) -> jax.Array:
  return _two_words(key, _counters(math.prod(shape)), _SPLIT).reshape(*shape, 2)


# The parameters' random draws. Flax derives a key per parameter (a `fold_in` of its path) and
# draws from it; with JAX's threefry each is a 20-round hash, a rolled loop on the CPU, and the
# NTU initialiser's ~150 of them made its compilation 4.2-5.3 s (for an H100, unrolled,
# 23.7-27.0 s: twice the train step's). These words are a few integer operations that fuse
# into each draw: 1.9-2.6 s (H100: 5.7-6.3 s; benchmarks/PERFORMANCE.md). tests/test_train.py
# checks their statistics and that no loop is left. The draws follow the reference's
# initialisers as before; the values differ from those of a threefry key.
INIT_PRNG = jax.extend.random.define_prng_impl(
    key_shape=(2,), seed=_init_prng_seed, split=_init_prng_split, random_bits=_init_prng_bits,
    fold_in=_init_prng_fold_in, name='istanet_init_murmur_finaliser')


def init_variables(model: ISTANet, key: jax.Array) -> dict:
  """Freshly initialised variables: the reference's initialisers, float32 parameters, their
  draws from `INIT_PRNG` seeded with two words of `key` (any JAX key). Jit it: run eagerly,
  each operation compiles on its own (NTU: 18.5 s on the CPU, against 2-3 s jitted)."""
  x = jnp.zeros(model.input_shape())
  init_key = jax.random.wrap_key_data(jax.random.bits(key, (2,), jnp.uint32), impl=INIT_PRNG)
  return model.init(init_key, x, train=False)


def create_state(model: ISTANet, tx: optax.GradientTransformation, key: jax.Array) -> dict:
  """A freshly initialised state (`init_variables`)."""
  return state_from_variables(init_variables(model, key), tx)


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


def eval_transform(config: ml_collections.ConfigDict, num_clips: int = 1) -> Callable:
  """x -> the test input; with `num_clips` > 1 it takes `clip=` (see augment.augment_eval)."""
  f = config.test_feeder
  return functools.partial(
      augment.augment_eval, window=f.window_size, p_interval=tuple(f.p_interval),
      bone_pairs=augment.NTU_BONE_PAIRS if f.get('bone', False) else None, vel=f.get('vel', False),
      num_clips=num_clips)


def microbatch_rows(batch_size: int, microbatches: int, num_shards: int = 1,
                    bn_group_size: Optional[int] = None) -> int:
  """Rows each device gives a microbatch (`split_microbatches`); ValueError where the config's
  batch_size, microbatches and bn_group_size do not split evenly."""
  if microbatches < 1 or batch_size % (num_shards * microbatches):
    raise ValueError(f'microbatches {microbatches} must be >= 1 and split batch_size '
                     f'{batch_size} evenly over {num_shards} device(s)')
  block = batch_size // (num_shards * microbatches)
  if microbatches > 1 and (not bn_group_size or block % bn_group_size):
    raise ValueError(
        f'microbatches {microbatches} need bn_group_size to divide the {block} rows each device '
        f'gives a microbatch (bn_group_size is {bn_group_size}): BatchNorm statistics must not '
        'change with the split')
  return block


def split_microbatches(tree: Any, microbatches: int, num_shards: int = 1,
                       bn_group_size: Optional[int] = None) -> Any:
  """Leaves (B, ...) -> (microbatches, B / microbatches, ...), for gradient accumulation.

  Microbatch j takes the j-th block of B / (num_shards * microbatches) rows of every shard's
  rows (the batch is sharded over `num_shards` devices in equal consecutive blocks), so each
  microbatch is spread over all devices and no row moves between them, and BatchNorm groups
  (`bn_group_size` consecutive rows, dividing the block: `microbatch_rows`) stay whole.
  """
  b = jax.tree_util.tree_leaves(tree)[0].shape[0]
  block = microbatch_rows(b, microbatches, num_shards, bn_group_size)

  def split(a):
    a = a.reshape(num_shards, microbatches, block, *a.shape[1:])
    return jnp.swapaxes(a, 0, 1).reshape(microbatches, b // microbatches, *a.shape[3:])
  return jax.tree_util.tree_map(split, tree)


def accumulate_gradients(grad_fn: Callable, params: Any, batch: Any, key: jax.Array, *,
                         batch_stats: Any, microbatches: int = 1, num_shards: int = 1,
                         bn_group_size: Optional[int] = None):
  """grad_fn(params, batch, key) -> ((loss, (metrics, batch_stats)), grads), summed over
  `microbatches` run one after another (`split_microbatches`): the same sums with a quarter of
  the activation memory at 4. Losses, metrics and gradients are sums over the microbatches
  (grad_fn must return its part of the batch's loss, e.g. summed and divided by the whole
  batch's count); the updated BatchNorm running statistics are averaged, which equals the
  whole batch's update: each microbatch moves them from the same state by the mean of its
  (equally many) groups' statistics. Microbatch j's key is fold_in(key, j).

  `batch_stats`: the running statistics the model starts from, whose structure grad_fn's
  updated ones have. The gradient and statistics sums are carried through the loop from zeros
  shaped like params and batch_stats; loss and metrics come out stacked and are summed after
  (their structure would take another trace of grad_fn). Stacking everything instead took
  ~1 s longer to compile for the NTU model (238 dynamic-update-slices and 237 reductions more).
  """
  if microbatches == 1:
    return grad_fn(params, batch, key)
  parts = split_microbatches(batch, microbatches, num_shards, bn_group_size)
  add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)

  def body(sums, part):
    (loss, (metrics, stats)), grads = grad_fn(params, part[1], jax.random.fold_in(key, part[0]))
    return (add(sums[0], grads), add(sums[1], stats)), (loss, metrics)

  zeros = lambda tree: jax.tree_util.tree_map(jnp.zeros_like, tree)
  (grads, stats), stacked = jax.lax.scan(
      body, (zeros(params), zeros(batch_stats)), (jnp.arange(microbatches), parts))
  loss, metrics = jax.tree_util.tree_map(lambda a: a.sum(0, dtype=a.dtype), stacked)
  mean = lambda s: s / microbatches if jnp.issubdtype(s.dtype, jnp.inexact) else s // microbatches
  return (loss, (metrics, jax.tree_util.tree_map(mean, stats))), grads


def all_finite(tree: Any) -> jax.Array:
  """Whether every element of every leaf is finite, as ONE reduction over the leaves raveled
  together. Per-leaf checks joined by `&` make a chain of as many scalars as leaves (~150 for
  NTU), which XLA fuses into every consumer: the train step's ~450 state selects each compiled
  it, and the NTU step took 26.8 s to compile instead of 13.4 (`python -m benchmarks.first_step`,
  benchmarks/PERFORMANCE.md)."""
  return jnp.all(jnp.isfinite(ravel_pytree(tree)[0]))


def make_train_step(config: ml_collections.ConfigDict, model: ISTANet,
                    tx: optax.GradientTransformation, num_shards: int = 1) -> Callable:
  """(state, batch, key) -> (state, metrics); `key` is the run's base key (from the seed).

  Example i of step s is augmented with fold_in(fold_in(key, s), index_i), dropout uses
  fold_in(key, s) split off, so results depend on (seed, step, example) only: not on the
  batch's device layout, and a resumed run repeats them. A step whose loss or gradients are
  not finite leaves the state as it was (but for `step` and `skipped`).

  `config.microbatches` > 1 accumulates the gradient over that many microbatches
  (`accumulate_gradients`; whole BatchNorm groups, so the step computes the same sums; dropout
  masks are then drawn per microbatch). `num_shards`: the devices the batch is sharded over.
  """
  loss_fn = losses.loss_from_config(config.loss, **config.loss_args.to_dict())
  transform = train_transform(config)
  microbatches = int(config.get('microbatches', 1))

  def train_step(state, batch, key):
    step_key = jax.random.fold_in(key, state['step'])
    example_keys = jax.vmap(lambda i: jax.random.fold_in(step_key, i))(
        batch['index'].astype(jnp.uint32))
    x = transform(batch['skeleton'], example_keys)
    dropout_key = jax.random.fold_in(jax.random.fold_in(key, 0x7FFFFFFF), state['step'])
    examples = batch['mask'].astype(jnp.float32).sum()
    count = jnp.maximum(examples, 1.0)

    def objective(params, part, dropout_key):
      x, label, mask = part
      variables = {**variables_of(state), 'params': params}
      logits, updates = model.apply(variables, x, train=True, rngs={'dropout': dropout_key},
                                    mutable=['batch_stats'])
      mask = mask.astype(jnp.float32)
      loss = (loss_fn(logits, label) * mask).sum() / count
      correct = (losses.topk_correct(logits, label, 1) * mask).sum()
      return loss, (correct, updates['batch_stats'])

    (loss, (correct, batch_stats)), grads = accumulate_gradients(
        jax.value_and_grad(objective, has_aux=True), state['params'],
        (x, batch['label'], batch['mask']), dropout_key, microbatches=microbatches,
        num_shards=num_shards, bn_group_size=config.get('bn_group_size'),
        batch_stats=state['batch_stats'])
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    finite = all_finite((loss, grads))
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
    # A skipped step keeps the optimiser's state but for the schedule's count: the learning
    # rate follows the step, one rate an epoch as the reference sets it (and as train.py logs).
    is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)
    opt_state = jax.tree_util.tree_map(
        lambda new, old: new if is_schedule(new) else keep(new, old), opt_state,
        state['opt_state'], is_leaf=is_schedule)
    new_state = dict(
        state, params=keep(params, state['params']), opt_state=opt_state,
        batch_stats=keep(batch_stats, state['batch_stats']), step=state['step'] + 1,
        skipped=state['skipped'] + (~finite).astype(jnp.int32))
    metrics = {'loss_sum': loss * examples, 'top1_sum': correct, 'count': examples,
               'skipped': (~finite).astype(jnp.float32)}
    return new_state, metrics

  return train_step


def entity_orders(num_entities: int, interchangeable: Sequence[int]) -> np.ndarray:
  """(P, M) int32: every order of the `interchangeable` entity slots, the others fixed.

  Row 0 is the identity. E.g. M=3, slots (0, 1) (H2O's two hands, never its object slot 2):
  [[0, 1, 2], [1, 0, 2]].
  """
  slots = _check_slots(num_entities, interchangeable)
  orders = []
  for perm in itertools.permutations(slots):
    order = list(range(num_entities))
    for slot, source in zip(slots, perm):
      order[slot] = source
    orders.append(order)
  return np.asarray(orders, np.int32)


def swap_order(num_entities: int, interchangeable: Sequence[int]) -> np.ndarray:
  """(M,) int32: the `interchangeable` slots in reverse order (two slots: swapped)."""
  slots = _check_slots(num_entities, interchangeable)
  order = list(range(num_entities))
  for slot, source in zip(slots, reversed(slots)):
    order[slot] = source
  return np.asarray(order, np.int32)


def _check_slots(num_entities: int, interchangeable: Sequence[int]) -> tuple:
  slots = tuple(int(s) for s in interchangeable)
  if len(set(slots)) != len(slots) or any(not 0 <= s < num_entities for s in slots):
    raise ValueError(f'interchangeable_entities {slots} must be distinct entity slots in '
                     f'0..{num_entities - 1}')
  return slots


def eval_views(config: ml_collections.ConfigDict, num_entities: int):
  """What one eval batch is run through: (orders (O, M), num_clips, swap_index or None).

  Orders: the identity, then (with `eval_entity_permutation`) every other order of the
  config's interchangeable entities; with `eval_swap_consistency` the swapped order is among
  them (added if needed) and `swap_index` is its row.
  """
  slots = tuple(config.get('interchangeable_entities', ()))
  identity = np.arange(num_entities, dtype=np.int32)[None]
  orders = entity_orders(num_entities, slots) if config.get('eval_entity_permutation') else identity
  swap_index = None
  if config.get('eval_swap_consistency', True) and len(slots) >= 2:
    swap = swap_order(num_entities, slots)
    matches = np.flatnonzero((orders == swap).all(1))
    if not matches.size:
      orders = np.concatenate([orders, swap[None]])
    swap_index = int(matches[0]) if matches.size else len(orders) - 1
  num_clips = int(config.get('eval_num_clips', 1))
  if num_clips < 1:
    raise ValueError(f'eval_num_clips must be >= 1, got {num_clips}')
  return orders, num_clips, swap_index


def make_eval_step(config: ml_collections.ConfigDict, model: ISTANet) -> Callable:
  """(state, batch) -> (sums of loss / top-1 / top-5 / per-class counts [/ swap], logits).

  Each batch runs through `eval_views`: `eval_num_clips` crops (their logits averaged) in each
  entity order; the logits reported are the identity order's, or with
  `eval_entity_permutation` the mean over all orders of the interchangeable entities (so they
  do not depend on which person or hand comes first). With `eval_swap_consistency` (default
  on) `swap_same_sum` counts the samples whose top-1 in the swapped order equals that in the
  identity order: one more forward pass per batch where permutation averaging is off.
  Several views run one after another (`lax.map`) through one traced copy of the model.
  """
  loss_fn = losses.loss_from_config(config.loss, **config.loss_args.to_dict())
  num_classes = model.num_classes
  orders, num_clips, swap_index = eval_views(config, model.num_persons)
  transform = eval_transform(config, num_clips)
  average_orders = bool(config.get('eval_entity_permutation'))
  # View v = (order v // num_clips, clip v % num_clips).
  view_orders = np.repeat(orders, num_clips, axis=0)
  view_clips = np.tile(np.arange(num_clips, dtype=np.int32), len(orders))

  def eval_step(state, batch):
    variables = variables_of(state)

    def forward(view):
      order, clip = view
      x = transform(batch['skeleton'], clip=clip) if num_clips > 1 else transform(batch['skeleton'])
      if len(orders) > 1:
        x = jnp.take(x, order, axis=3)
      return model.apply(variables, x, train=False)

    if len(view_clips) == 1:
      logits = forward((view_orders[0], view_clips[0]))
      per_order = logits[None]
    else:
      views = jax.lax.map(forward, (view_orders, view_clips))  # (O * clips, B, K)
      per_order = views.reshape((len(orders), num_clips) + views.shape[1:]).mean(1)
      logits = per_order.mean(0) if average_orders else per_order[0]
    mask = batch['mask'].astype(jnp.float32)
    label = jnp.clip(batch['label'], 0, num_classes - 1)
    top1 = losses.topk_correct(logits, label, 1) * mask
    one_hot = jax.nn.one_hot(label, num_classes) * mask[:, None]
    metrics = {'loss_sum': (loss_fn(logits, label) * mask).sum(), 'top1_sum': top1.sum(),
               'top5_sum': (losses.topk_correct(logits, label, 5) * mask).sum(),
               'count': mask.sum(), 'class_correct': (one_hot * top1[:, None]).sum(0),
               'class_count': one_hot.sum(0)}
    if swap_index is not None:
      same = jnp.argmax(per_order[0], -1) == jnp.argmax(per_order[swap_index], -1)
      metrics['swap_same_sum'] = (same * mask).sum()
    return metrics, logits

  return eval_step


def accumulate(total: Any, metrics: Any) -> Any:
  """Running sums on device: no host round trip until the sums are logged."""
  return metrics if total is None else jax.tree_util.tree_map(jnp.add, total, metrics)
