"""Host input pipeline: prepared TFDS skeleton datasets to fixed-shape numpy batches.

This module owns the path from a prepared TFDS dataset (`skeleton` float32 (T, V, M, 3),
`label`, `sample_name`, optional `length`) to the batches the training loop puts on devices:

  skeleton  float32 (B, max_frames, V, M, 3), zero-padded / truncated at the end in T
  length    int32 (B,), frames that count: min(`length` feature or T, T, max_frames)
  label     int32 (B,)
  mask      bool (B,), False only for the padding examples that complete eval batches
  index     int64 (B,), the example's index within the split (-1 for padding), the key for
            per-example augmentation randomness
  sample_name  str (B,) ('' for padding)

`B` is the per-host batch, `batch_size // process_count`.

Two back ends behind `make_iterator`, chosen by the prepared file format ('auto'):
* 'grain': grain over ArrayRecord (`builder.as_data_source`), random access on disk. Needs
  tensorflow_datasets, grain and array_record but not TensorFlow.
* 'tf': tf.data over TFRecord (`builder.as_dataset`). TFRecord has no random access, so the
  host's shard is read once, in index order, into host memory (what big_vision's `cache_raw`
  does for small data sets) and tf.data gathers examples from it by index. TensorFlow is
  imported only here.

Both back ends consume the same example order, computed here with numpy, so they deliver
identical batches, and an iterator's state is just `{'epoch', 'step'}`. The order is that of
the *global* batches, whatever the number of hosts, so a run on H hosts sees exactly the
batches a run on one host sees (and trains to the same result):
* training: epoch e visits the split in a permutation drawn from (seed, e); global batch b
  holds its positions [b*G, (b+1)*G) (G the global batch), the remainder is dropped;
* evaluation: the split in index order, padded with mask=False examples to whole global
  batches, so every example is counted exactly once;
* host h of H takes the h-th of H equal slices of every global batch (so each host reads
  from the whole split: random access with grain; the tf back end holds the split in memory).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Iterator, Mapping, Optional

import numpy as np

_BACKENDS = ('auto', 'tf', 'grain')
# Grain's MapDataset needs a finite length; this stands in for "repeat forever".
_FOREVER = 2**62


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def get_builder(builder_or_name, data_dir: Optional[str] = None):
  """A TFDS builder from a builder or a registered / prepared dataset name ('name[/config]')."""
  if isinstance(builder_or_name, str):
    return _tfds().builder(builder_or_name, data_dir=data_dir)
  if not hasattr(builder_or_name, 'info') or not hasattr(builder_or_name, 'as_data_source'):
    raise TypeError(f'expected a TFDS DatasetBuilder or a dataset name, got {builder_or_name!r}')
  return builder_or_name


def num_examples(builder_or_name, split: str, data_dir: Optional[str] = None) -> int:
  """Number of examples in `split` (a split name or a TFDS slice such as 'train[:80%]')."""
  return int(get_builder(builder_or_name, data_dir).info.splits[split].num_examples)


def _local_batch(batch_size: int, process_count: int) -> int:
  if batch_size <= 0 or batch_size % process_count:
    raise ValueError(f'batch_size {batch_size} must be a positive multiple of process_count '
                     f'{process_count}')
  return batch_size // process_count


def num_batches(n: int, *, batch_size: int, train: bool, process_count: int = 1) -> int:
  """Batches per epoch (the same on every host) for a split of `n` examples and a global
  `batch_size`: training drops the remainder, eval pads, so `num_batches * batch_size >= n`."""
  _local_batch(batch_size, process_count)
  return n // batch_size if train else math.ceil(n / batch_size)


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Which shard-local positions each batch holds; pure numpy, shared by both back ends."""

  lo: int
  hi: int
  local_batch: int
  steps_per_epoch: int
  train: bool
  seed: int
  process_index: int
  process_count: int

  @property
  def per_epoch(self) -> int:
    return self.steps_per_epoch * self.local_batch

  @functools.lru_cache(maxsize=4)
  def positions(self, epoch: int) -> np.ndarray:
    """This host's example positions of epoch `epoch`, in batch order; -1 marks padding."""
    size = self.hi - self.lo
    total = self.per_epoch * self.process_count
    if self.train:
      rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
      order = rng.permutation(size)[:total].astype(np.int64)
    else:
      order = np.full(total, -1, np.int64)
      order[:size] = np.arange(size)
    # Global batch b = order[b*G:(b+1)*G]; this host takes its slice of each.
    return order.reshape(self.steps_per_epoch, self.process_count,
                         self.local_batch)[:, self.process_index].reshape(-1)


def _padding_example(shape, max_frames: int) -> dict[str, Any]:
  return dict(skeleton=np.zeros((max_frames, *shape), np.float32), length=np.int32(0),
              label=np.int32(0), mask=np.bool_(False), index=np.int64(-1), sample_name='')


def _finish_batch(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Fixed dtypes for both back ends (sample names as str whatever the back end gave)."""
  names = batch['sample_name']
  return dict(
      skeleton=np.asarray(batch['skeleton'], np.float32),
      length=np.asarray(batch['length'], np.int32),
      label=np.asarray(batch['label'], np.int32),
      mask=np.asarray(batch['mask'], bool),
      index=np.asarray(batch['index'], np.int64),
      sample_name=np.array([n.decode('utf-8') if isinstance(n, bytes) else str(n)
                            for n in names]),
  )


def _check_skeleton(skeleton: np.ndarray, shape: tuple, where: str) -> None:
  if skeleton.ndim != 4 or tuple(skeleton.shape[1:]) != tuple(shape):
    raise ValueError(f'{where}: field skeleton must be (T, {", ".join(map(str, shape))}), got '
                     f'shape {skeleton.shape}')


# --------------------------------------------------------------------------------------- grain


def _grain_batches(builder, split, plan: _Plan, start: int, stop: int, max_frames: int,
                   shape: tuple, num_threads: int, prefetch: int,
                   label_key: str) -> Iterator[dict]:
  import grain  # pylint: disable=g-import-not-at-top

  source = builder.as_data_source(split)
  if len(source) < plan.hi:
    raise ValueError(f'{builder.name}/{split}: data source has {len(source)} examples, expected '
                     f'at least {plan.hi}')

  def load(k: int) -> dict[str, Any]:
    pos = int(plan.positions(k // plan.per_epoch)[k % plan.per_epoch])
    if pos < 0:
      return _padding_example(shape, max_frames)
    index = plan.lo + pos
    ex = source[index]
    where = f'{builder.name}/{split}[{index}] ({ex.get("sample_name")!r})'
    skeleton = np.asarray(ex['skeleton'], np.float32)
    _check_skeleton(skeleton, shape, where)
    frames = min(len(skeleton), max_frames)
    out = np.zeros((max_frames, *shape), np.float32)
    out[:frames] = skeleton[:frames]
    length = min(int(ex['length']), frames) if 'length' in ex else frames
    return dict(skeleton=out, length=np.int32(length), label=np.int32(ex[label_key]),
                mask=np.bool_(True), index=np.int64(index), sample_name=ex['sample_name'])

  ds = (grain.MapDataset.range(start, stop).map(load)
        .to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                           prefetch_buffer_size=prefetch * plan.local_batch))
        .batch(plan.local_batch, drop_remainder=True))
  for batch in ds:
    yield _finish_batch(batch)


# ----------------------------------------------------------------------------------- tf.data


def _tf_batches(builder, split, plan: _Plan, start: int, stop: int, max_frames: int,
                shape: tuple, num_threads: int, prefetch: int, label_key: str) -> Iterator[dict]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  tfds = _tfds()
  try:  # tf.data must leave accelerators to JAX.
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    pass  # TF already initialised elsewhere; its device choice is not ours to change.

  # Read this host's shard in index order: one file at a time (cycle length 1), no shuffling.
  read_config = tfds.ReadConfig(interleave_cycle_length=1, shuffle_seed=None)
  count = plan.hi - plan.lo
  if split in builder.info.splits.keys():
    ds = builder.as_dataset(f'{split}[{plan.lo}:{plan.hi}]', shuffle_files=False,
                            read_config=read_config)
  else:  # Already a slice expression: TFDS cannot slice it again, so skip to the shard.
    ds = builder.as_dataset(split, shuffle_files=False,
                            read_config=read_config).skip(plan.lo).take(count)
  has_length = 'length' in builder.info.features

  def trim(ex):
    skeleton = ex['skeleton'][:max_frames]
    frames = tf.shape(skeleton, out_type=tf.int64)[0]
    length = tf.minimum(ex['length'], frames) if has_length else frames
    return skeleton, length, ex[label_key], ex['sample_name']

  chunks, lengths, labels, names = [], [], [], []
  for i, (skeleton, length, label, name) in enumerate(ds.map(trim).as_numpy_iterator()):
    _check_skeleton(skeleton, shape, f'{builder.name}/{split}[{plan.lo + i}] ({name!r})')
    chunks.append(skeleton)
    lengths.append(length)
    labels.append(label)
    names.append(name)
  if len(chunks) != count:
    raise ValueError(f'{builder.name}/{split}: read {len(chunks)} examples for shard '
                     f'[{plan.lo}, {plan.hi}), expected {count}')
  frames_per = np.array([len(c) for c in chunks], np.int64)
  offsets = np.concatenate([[0], np.cumsum(frames_per)]).astype(np.int64)
  flat = np.concatenate(chunks) if chunks else np.zeros((0, *shape), np.float32)

  # Variables, not constants: a captured constant this large would hit the 2 GB graph limit.
  with tf.device('/CPU:0'):
    store = dict(flat=tf.Variable(flat, trainable=False),
                 offsets=tf.Variable(offsets, trainable=False),
                 frames=tf.Variable(frames_per, trainable=False),
                 length=tf.Variable(np.array(lengths, np.int64), trainable=False),
                 label=tf.Variable(np.array(labels, np.int64), trainable=False),
                 name=tf.Variable(np.array(names, object), dtype=tf.string, trainable=False))
  del chunks, flat  # The variables hold the only copy from here on.

  @tf.function(input_signature=[tf.TensorSpec((), tf.int64)])  # traced once, not per epoch
  def example(pos):
    valid = pos >= 0
    p = tf.maximum(pos, 0)
    begin = store['offsets'][p]
    frames = store['frames'][p]
    skeleton = store['flat'][begin:begin + frames]
    skeleton = tf.pad(skeleton, [[0, max_frames - frames], [0, 0], [0, 0], [0, 0]])
    skeleton = tf.ensure_shape(skeleton, (max_frames, *shape))
    zero = tf.zeros((), tf.int64)
    return dict(
        skeleton=tf.where(valid, skeleton, tf.zeros_like(skeleton)),
        length=tf.where(valid, store['length'][p], zero),
        label=tf.where(valid, store['label'][p], zero),
        mask=valid,
        index=tf.where(valid, plan.lo + pos, -tf.ones((), tf.int64)),
        sample_name=tf.where(valid, store['name'][p], ''))

  # One dataset per epoch over its positions, so that no Python runs inside tf.data: with
  # `from_generator`, dropping an iterator whose generator was still being pulled deadlocked
  # (the destructor waits, holding the GIL, for a py_func that waits for the GIL), and TF
  # wrote `tf.maximum(pos, 0)` in place into a 64-byte-aligned array it had taken without
  # copying: padding (-1) became example 0 in the plan's cached array, which grain shares.
  # Each epoch gets a copy, then, never the plan's array (TF 2.21).
  first_epoch, first_pos = divmod(start, plan.per_epoch)
  for epoch in range(first_epoch, math.ceil(stop / plan.per_epoch)):
    begin = first_pos if epoch == first_epoch else 0
    end = min(plan.per_epoch, stop - epoch * plan.per_epoch)
    ds = (tf.data.Dataset.from_tensor_slices(plan.positions(epoch)[begin:end].copy())
          .map(example, num_parallel_calls=num_threads, deterministic=True)
          .batch(plan.local_batch, drop_remainder=True)
          .prefetch(prefetch))
    for batch in ds.as_numpy_iterator():
      yield _finish_batch(batch)


# -------------------------------------------------------------------------------- iterator


class BatchIterator:
  """Iterator of host batches with a resumable `{'epoch', 'step'}` state.

  `get_state()` is the position of the next batch `__next__` returns; passing it as
  `start_state` to `make_iterator` (same dataset, split, sizes, seed and hosts) resumes with
  exactly the batches an uninterrupted iterator would have produced.
  """

  def __init__(self, batches: Iterator[dict], plan: _Plan, start_step: int, stop_step: int,
               num_examples: int, backend: str):
    self._batches = batches
    self._plan = plan
    self._step = start_step
    self._stop = stop_step
    self.num_examples = num_examples
    self.steps_per_epoch = plan.steps_per_epoch
    self.backend = backend

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._step >= self._stop:
      raise StopIteration
    batch = next(self._batches)
    self._step += 1
    return batch

  def get_state(self) -> dict[str, int]:
    epoch, step = divmod(self._step, self.steps_per_epoch)
    return {'epoch': int(epoch), 'step': int(step)}


def _resolve_backend(builder, backend: str) -> str:
  if backend not in _BACKENDS:
    raise ValueError(f'backend must be one of {_BACKENDS}, got {backend!r}')
  file_format = builder.info.file_format
  fmt = getattr(file_format, 'value', file_format)
  wanted = {'tfrecord': 'tf', 'array_record': 'grain'}.get(fmt)
  if backend == 'auto':
    if wanted is None:
      raise ValueError(f'{builder.name}: cannot pick a back end for file format {fmt!r} '
                       '(prepare it as tfrecord or array_record)')
    return wanted
  if wanted is not None and wanted != backend:
    need = 'array_record' if backend == 'grain' else 'tfrecord'
    raise ValueError(f'{builder.name}: back end {backend!r} needs data prepared as {need}, '
                     f'found {fmt}')
  return backend


def make_iterator(builder_or_name, split: str, *, batch_size: int, max_frames: int, train: bool,
                  seed: int = 0, data_dir: Optional[str] = None, backend: str = 'auto',
                  process_index: Optional[int] = None, process_count: Optional[int] = None,
                  num_epochs: Optional[int] = None,
                  start_state: Optional[Mapping[str, int]] = None,
                  num_threads: Optional[int] = None, prefetch: int = 2,
                  label_key: str = 'label') -> BatchIterator:
  """Host batches of `split` (see the module docstring for the layout and the order).

  Args:
    builder_or_name: a TFDS builder, or a dataset name resolved with `tfds.builder`.
    split: split name or TFDS slice ('train', 'test', 'train[:90%]').
    batch_size: global batch size; each host gets `batch_size // process_count` examples.
    max_frames: T of the batches; longer sequences are truncated at the end.
    train: shuffle per epoch and drop the remainder; otherwise index order, padded batches.
    seed: shuffling seed (epoch e of host h uses a permutation drawn from (seed, e, h)).
    data_dir: TFDS data directory when `builder_or_name` is a name.
    backend: 'grain' (ArrayRecord), 'tf' (TFRecord), or 'auto' (by the prepared format).
    process_index, process_count: this host and the number of hosts; JAX's by default.
    num_epochs: epochs to deliver, counted from epoch 0 (a resumed iterator stops at the same
      point); None repeats forever. Defaults to 1 for eval (train=False).
    start_state: a `get_state()` result to resume from.
    num_threads: reader threads (grain) or parallel map calls (tf); default: CPU count, <= 16.
    prefetch: batches to read ahead.
    label_key: the feature delivered as `label` (Assembly101: 'label' = action, 'verb', 'noun').

  Returns:
    A `BatchIterator` of numpy dicts with `get_state()`, `steps_per_epoch`, `num_examples`.
  """
  if max_frames <= 0:
    raise ValueError(f'max_frames must be positive, got {max_frames}')
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if seed < 0:
    raise ValueError(f'seed must be non-negative, got {seed}')
  builder = get_builder(builder_or_name, data_dir)
  backend = _resolve_backend(builder, backend)
  n = num_examples(builder, split)
  local_batch = _local_batch(batch_size, process_count)
  steps = num_batches(n, batch_size=batch_size, train=train, process_count=process_count)
  if steps == 0:
    raise ValueError(f'{builder.name}/{split}: {n} examples over {process_count} host(s) '
                     f'give no full batch of {local_batch}')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  plan = _Plan(lo=0, hi=n, local_batch=local_batch, steps_per_epoch=steps, train=train,
               seed=seed, process_index=process_index, process_count=process_count)

  if num_epochs is None and not train:
    num_epochs = 1
  start_step = 0
  if start_state is not None:
    epoch, step = int(start_state['epoch']), int(start_state['step'])
    if epoch < 0 or not 0 <= step < steps:
      raise ValueError(f'start_state {dict(start_state)} out of range: {steps} steps per epoch')
    start_step = epoch * steps + step
  stop_step = _FOREVER // plan.per_epoch * steps if num_epochs is None else num_epochs * steps
  start_step = min(start_step, stop_step)

  shape = tuple(builder.info.features['skeleton'].shape[1:])
  if len(shape) != 3 or None in shape:
    raise ValueError(f'{builder.name}: feature skeleton must be (None, V, M, 3) with fixed V, M; '
                     f'got {builder.info.features["skeleton"].shape}')
  if num_threads is None:
    num_threads = min(16, os.cpu_count() or 1)
  read = _grain_batches if backend == 'grain' else _tf_batches
  if label_key not in builder.info.features:
    raise ValueError(f'{builder.name}: no feature {label_key!r} to use as label; it has '
                     f'{sorted(builder.info.features.keys())}')
  batches = read(builder, split, plan, start_step * local_batch, stop_step * local_batch,
                 max_frames, shape, num_threads, prefetch, label_key)
  return BatchIterator(batches, plan, start_step, stop_step, n, backend)
