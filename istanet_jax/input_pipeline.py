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

Two back ends behind `make_iterator`, chosen by the prepared file format ('auto'), read the
host's split into host memory (on a thread of their own, from when the iterator is made until
its first batch), trimmed to max_frames (what big_vision's
`cache_raw` does for small data sets, and what the reference's feeders do; NTU Mutual 26 x-sub's
13,700 training examples of at most 300 frames take at most 2.5 GB), and every batch is then
gathered from it with numpy, one slice copy per example:
* 'grain': grain's reader threads over ArrayRecord (`builder.as_data_source`). Needs
  tensorflow_datasets, grain and array_record but not TensorFlow.
* 'tf': tf.data over TFRecord (`builder.as_dataset`), one file at a time in index order.
  TensorFlow is imported only here.
Before, grain streamed every example through Python under the GIL (no faster with 4 threads
than with 1) and tf.data gathered each example by a map over the split held in TensorFlow: 3,635
(grain) and 2,617 (tf) NTU examples/s against 61,514 and 57,267 now (`python -m
benchmarks.input_pipeline`, benchmarks/README.md), where a 110-epoch NTU run in 20
minutes needs ~1,800/s of its input alone.

Both back ends consume the same example order, computed here with numpy, so they deliver
identical batches, and an iterator's state is just `{'epoch', 'step'}`. The order is that of
the *global* batches, whatever the number of hosts, so a run on H hosts sees exactly the
batches a run on one host sees (and trains to the same result):
* training: epoch e visits the split in a permutation drawn from (seed, e); global batch b
  holds its positions [b*G, (b+1)*G) (G the global batch), the remainder is dropped;
* evaluation: the split in index order, padded with mask=False examples to whole global
  batches, so every example is counted exactly once;
* host h of H takes the h-th of H equal slices of every global batch (so each host reads
  from the whole split, which it holds in memory).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import os
from typing import Callable, Iterator, Mapping, Optional

import numpy as np

_BACKENDS = ('auto', 'tf', 'grain')
# Stands in for "repeat forever" (a stop step that is never reached).
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


def skeleton_shape(builder_or_name, data_dir: Optional[str] = None) -> tuple[int, int, int]:
  """(V, M, C) of the dataset's skeletons, the batches' trailing axes (read from its info)."""
  builder = get_builder(builder_or_name, data_dir)
  shape = tuple(builder.info.features['skeleton'].shape[1:])
  if len(shape) != 3 or None in shape:
    raise ValueError(f'{builder.name}: feature skeleton must be (None, V, M, 3) with fixed V, M; '
                     f'got {builder.info.features["skeleton"].shape}')
  return shape


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


@dataclasses.dataclass(frozen=True)
class _Examples:
  """A split in host memory: every example's frames (trimmed to max_frames) back to back."""

  frames: np.ndarray   # float32 (sum of the examples' T, V, M, 3)
  offsets: np.ndarray  # int64 (n + 1,): example i is frames[offsets[i]:offsets[i + 1]]
  length: np.ndarray   # int32 (n,): frames that count (<= the example's T)
  label: np.ndarray    # int32 (n,)
  name: np.ndarray     # str (n,)

  @classmethod
  def gather(cls, rows: Iterator[tuple], shape: tuple, max_frames: int, where: str
             ) -> '_Examples':
    """From (skeleton (T, *shape), length or None, label, sample name) rows in index order;
    `where` names the split in errors."""
    chunks, lengths, labels, names = [], [], [], []
    for i, (skeleton, length, label, name) in enumerate(rows):
      name = name.decode('utf-8') if isinstance(name, bytes) else str(name)
      skeleton = np.asarray(skeleton, np.float32)
      _check_skeleton(skeleton, shape, f'{where}[{i}] ({name!r})')
      skeleton = skeleton[:max_frames]
      chunks.append(skeleton)
      lengths.append(len(skeleton) if length is None else min(int(length), len(skeleton)))
      labels.append(label)
      names.append(name)
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in chunks])]).astype(np.int64)
    frames = np.concatenate(chunks) if chunks else np.zeros((0, *shape), np.float32)
    return cls(frames=frames, offsets=offsets, length=np.array(lengths, np.int32),
               label=np.array(labels, np.int32), name=np.array(names, dtype=str))

  def __len__(self) -> int:
    return len(self.length)


def _check_skeleton(skeleton: np.ndarray, shape: tuple, where: str) -> None:
  if skeleton.ndim != 4 or tuple(skeleton.shape[1:]) != tuple(shape):
    raise ValueError(f'{where}: field skeleton must be (T, {", ".join(map(str, shape))}), got '
                     f'shape {skeleton.shape}')


def _check_labels(examples: _Examples, num_classes: int, train: bool, where: str) -> None:
  low = 0 if train else -1
  bad = np.flatnonzero((examples.label < low) | (examples.label >= num_classes))
  if bad.size:
    i = int(bad[0])
    raise ValueError(
        f'{where}[{i}] ({str(examples.name[i])!r}): label {examples.label[i]} outside [0, '
        f'{num_classes}) of model.num_classes{"" if train else " (or -1: no label)"}; '
        f'{bad.size} such examples. Does the config\'s num_classes (or label_key) match the '
        f'dataset?')


def _batches(read: Callable[[], _Examples], plan: _Plan, start: int, stop: int,
             max_frames: int) -> Iterator[dict]:
  """The plan's batches of slots [start, stop) (multiples of the local batch), each built
  with numpy from the examples `read()` gives: no per-example Python but one slice copy per
  row."""
  examples = read()
  b = plan.local_batch
  shape = examples.frames.shape[1:]
  for first in range(start, stop, b):
    epoch, offset = divmod(first, plan.per_epoch)
    pos = plan.positions(epoch)[offset:offset + b]
    valid = pos >= 0
    k = np.where(valid, pos, 0)
    skeleton = np.zeros((b, max_frames, *shape), np.float32)
    begin, end = examples.offsets[k], examples.offsets[k + 1]
    for row in np.flatnonzero(valid):
      skeleton[row, :end[row] - begin[row]] = examples.frames[begin[row]:end[row]]
    yield dict(skeleton=skeleton,
               length=np.where(valid, examples.length[k], 0).astype(np.int32),
               label=np.where(valid, examples.label[k], 0).astype(np.int32),
               mask=valid,
               index=np.where(valid, plan.lo + pos, -1).astype(np.int64),
               sample_name=np.where(valid, examples.name[k], ''))


# --------------------------------------------------------------------------------- readers


def _read_grain(builder, split: str, plan: _Plan, max_frames: int, shape: tuple,
                num_threads: int, label_key: str) -> _Examples:
  """The split through `builder.as_data_source` (ArrayRecord), read by grain's threads."""
  import grain  # pylint: disable=g-import-not-at-top

  source = builder.as_data_source(split)
  if len(source) < plan.hi:
    raise ValueError(f'{builder.name}/{split}: data source has {len(source)} examples, expected '
                     f'at least {plan.hi}')

  def row(index: int) -> tuple:
    ex = source[index]
    return (ex['skeleton'], ex['length'] if 'length' in ex else None, ex[label_key],
            ex['sample_name'])

  rows = (grain.MapDataset.range(plan.lo, plan.hi).map(row)
          .to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=64)))
  return _Examples.gather(iter(rows), shape, max_frames, f'{builder.name}/{split}')


def _read_tf(builder, split: str, plan: _Plan, max_frames: int, shape: tuple,
             num_threads: int, label_key: str) -> _Examples:
  """The split through tf.data (TFRecord, no random access), one file at a time in order."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  tfds = _tfds()
  try:  # tf.data must leave accelerators to JAX.
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    pass  # TF already initialised elsewhere; its device choice is not ours to change.

  read_config = tfds.ReadConfig(interleave_cycle_length=1, shuffle_seed=None)
  count = plan.hi - plan.lo
  if split in builder.info.splits.keys():
    ds = builder.as_dataset(f'{split}[{plan.lo}:{plan.hi}]', shuffle_files=False,
                            read_config=read_config)
  else:  # Already a slice expression: TFDS cannot slice it again, so skip to the shard.
    ds = builder.as_dataset(split, shuffle_files=False,
                            read_config=read_config).skip(plan.lo).take(count)
  has_length = 'length' in builder.info.features

  def row(ex):
    skeleton = ex['skeleton'][:max_frames]  # trimmed inside tf.data: long tails stay out of Python
    length = ex['length'] if has_length else tf.shape(skeleton, out_type=tf.int64)[0]
    return skeleton, length, ex[label_key], ex['sample_name']

  rows = ds.map(row, num_parallel_calls=num_threads).as_numpy_iterator()
  examples = _Examples.gather(rows, shape, max_frames, f'{builder.name}/{split}')
  if len(examples) != count:
    raise ValueError(f'{builder.name}/{split}: read {len(examples)} examples for shard '
                     f'[{plan.lo}, {plan.hi}), expected {count}')
  return examples


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
                  num_threads: Optional[int] = None, label_key: str = 'label',
                  num_classes: Optional[int] = None) -> BatchIterator:
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
    num_threads: reader threads (grain) or parallel map calls (tf) of the read into memory;
      default: CPU count, <= 16.
    label_key: the feature delivered as `label` (Assembly101: 'label' = action, 'verb', 'noun').
    num_classes: where given, a label outside [0, num_classes) raises ValueError (at the first
      batch) naming the example; -1 (a split without labels) is allowed where not `train`.

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

  shape = skeleton_shape(builder)
  if num_threads is None:
    num_threads = min(16, os.cpu_count() or 1)
  if label_key not in builder.info.features:
    raise ValueError(f'{builder.name}: no feature {label_key!r} to use as label; it has '
                     f'{sorted(builder.info.features.keys())}')
  read = _read_grain if backend == 'grain' else _read_tf
  if backend == 'grain':
    # Imported here, not on the reading thread: grain's import enters etils' `lazy_imports`,
    # which swaps `builtins.__import__` for the whole process, and an import the caller makes
    # meanwhile (JAX imports modules inside functions while it lowers the initialiser) got a
    # lazy stand-in: "TypeError: 'LazyModule' object is not callable" in a train run's start.
    import grain  # pylint: disable=g-import-not-at-top,unused-import
  # The split is read on a thread of its own from here, while the caller goes on (training
  # initialises and compiles); the first batch waits for it, and a read error is raised there.
  pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='istanet-read')
  where = f'{builder.name}/{split}'

  def read_checked():
    examples = read(builder, split, plan, max_frames, shape, num_threads, label_key)
    if num_classes is not None:
      _check_labels(examples, num_classes, train, f'{where} {label_key!r}')
    return examples

  examples = pool.submit(read_checked)
  pool.shutdown(wait=False)  # the read goes on; the thread ends with it
  batches = _batches(examples.result, plan, start_step * local_batch, stop_step * local_batch,
                     max_frames)
  return BatchIterator(batches, plan, start_step, stop_step, n, backend)
