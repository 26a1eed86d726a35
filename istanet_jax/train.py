r"""Training and evaluation: `python -m istanet_jax.train --config configs/<name>.py[:arg]`.

  python -m istanet_jax.train --config configs/ntu26.py:xsub --workdir /tmp/ntu26 \
      [--config.batch_size=64] [--mode eval --checkpoint best.pt]

A thin `main()` over `train_and_evaluate(config, workdir)`. One jitted train step and one
jitted eval step (`istanet_jax.steps`) run over a `('data',)` mesh of every device of every
host; each host feeds its shard of the batch. Every `checkpoint_every_epochs` epochs the
state, the data position and the best score are saved with Orbax; rerunning the same command
in the same workdir resumes there, with the same batches and augmentations as an
uninterrupted run. Metrics go to `workdir/metrics.jsonl` and TensorBoard event files.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import json
import os
import sys
import time
from typing import Optional

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from istanet_jax import checkpoints, files, host, input_pipeline, optim, steps

# What the train and eval steps take of a host batch (input_pipeline's), in these dtypes.
BATCH_DTYPES = {'skeleton': np.float32, 'label': np.int32, 'index': np.int32, 'mask': np.bool_}
BATCH_KEYS = tuple(BATCH_DTYPES)
_COMPILATIONS = collections.Counter()
TRAIN_STEP = 'jit(train_step)'  # the train step's name in compilation events


def _count_compilations(event: str, duration: float, fun_name: str = '', **_) -> None:
  del duration
  if event == '/jax/core/compile/backend_compile_duration':
    _COMPILATIONS[fun_name] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compilations)


def compilations(fun_name: Optional[str] = None) -> int:
  """XLA compilations in this process so far (jax.monitoring events, not timing), all or
  those of one program ('jit(train_step)')."""
  return sum(_COMPILATIONS.values()) if fun_name is None else _COMPILATIONS[fun_name]


# --------------------------------------------------------------------------- metrics


class MetricWriter:
  """`workdir/metrics.jsonl` (one JSON object per line) and TensorBoard scalars."""

  def __init__(self, workdir: str, *, keep_until_epoch: Optional[int] = None,
               keep_until_step: Optional[int] = None, enabled: bool = True):
    """A resumed run (`keep_until_epoch`, `keep_until_step`: its checkpoint's) drops what
    followed the checkpoint, which it writes again; a fresh run starts the log anew."""
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    if keep_until_epoch is not None and os.path.exists(self.path):
      with open(self.path) as f:
        lines = [l for l in f if l.strip()]
      kept = []
      for number, line in enumerate(lines, start=1):
        try:
          record = json.loads(line)
        except ValueError:
          if number < len(lines):
            raise ValueError(f'{self.path}:{number}: not a JSON record') from None
          break  # the last line, cut short by a full disk or a power loss: written again
        if record.get('epoch', 0) <= keep_until_epoch:
          kept.append(line if line.endswith('\n') else line + '\n')
      with files.atomic_path(self.path) as tmp, open(tmp, 'w') as f:
        f.writelines(kept)
    elif keep_until_epoch is None and os.path.exists(self.path):
      os.remove(self.path)
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      # Events past the checkpoint are purged, as their lines above: no epoch shows twice.
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'),
                               purge_step=None if keep_until_step is None else keep_until_step + 1)
    except ImportError:
      self._tb = None

  def write(self, step: int, epoch: int, scalars: dict) -> None:
    if not self.enabled:
      return
    # Wall time (as TensorBoard keeps per scalar): epoch durations, checkpoints included, are
    # the differences.
    record = {'step': int(step), 'epoch': int(epoch), 'time': time.time()}
    record.update({k: float(v) for k, v in scalars.items()})
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list:
  """`workdir/metrics.jsonl`'s records (`viz.read_metrics`: a bad line is named)."""
  from istanet_jax import viz  # pylint: disable=g-import-not-at-top
  return viz.read_metrics(os.path.join(workdir, 'metrics.jsonl'))


# --------------------------------------------------------------------------- devices


def make_mesh(devices=None) -> Mesh:
  return Mesh(np.asarray(jax.devices() if devices is None else devices), ('data',))


def _check_batch_sizes(config, mesh: Mesh, *, train: bool = True) -> None:
  """ValueError naming the config key where the batches do not split over the mesh (`train`:
  the training batch, its microbatches and BatchNorm groups too, not only the eval batch)."""
  if config.test_batch_size % mesh.size:
    raise ValueError(f'test_batch_size {config.test_batch_size} must be a multiple of the '
                     f'{mesh.size} devices')
  if not train:
    return
  if config.batch_size % mesh.size:
    raise ValueError(f'batch_size {config.batch_size} must be a multiple of the {mesh.size} '
                     f'devices')
  steps.microbatch_rows(config.batch_size, config.get('microbatches', 1), mesh.size,
                        config.get('bn_group_size'))


def _check_schedule(config, n_train: int) -> None:
  """ValueError naming the config key, before anything runs (these would fail an epoch in)."""
  for key in ('eval_interval', 'checkpoint_every_epochs', 'keep_checkpoints'):
    value = config.get(key, 1)
    if value is not None and value < 1:  # keep_checkpoints None keeps every one
      raise ValueError(f'config.{key} must be >= 1, got {value}')
  if config.batch_size > n_train:
    raise ValueError(f'config.batch_size {config.batch_size} exceeds the {n_train} examples of '
                     f'{config.dataset} split {config.train_split!r}: no full training batch')


def to_global(batch: dict, sharding: NamedSharding) -> dict:
  """Host-local numpy batch -> global arrays sharded along the batch axis (no host sync)."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k]))
          for k in BATCH_KEYS}


def as_batch_dtypes(batch: dict) -> dict:
  """A host batch's arrays as the train and eval steps take them (`BATCH_DTYPES`)."""
  return {k: np.asarray(batch[k], dtype) for k, dtype in BATCH_DTYPES.items()}


def abstract_batch(config: ml_collections.ConfigDict, sharding: NamedSharding) -> dict:
  """The global train batch `to_global(as_batch_dtypes(...))` makes, as `jax.ShapeDtypeStruct`s
  (the dataset's skeleton shape from its info: no example is read)."""
  shape = input_pipeline.skeleton_shape(config.dataset, config.get('data_dir'))
  b = config.batch_size
  shapes = {'skeleton': (b, config.max_frames, *shape), 'label': (b,), 'index': (b,),
            'mask': (b,)}
  return {k: jax.ShapeDtypeStruct(shapes[k], dtype, sharding=sharding)
          for k, dtype in BATCH_DTYPES.items()}


# --------------------------------------------------------------------------- loop


def resolve_data(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Makes sure `config.dataset` is prepared; returns the config with absolute data paths.

  Relative `data_dir` / `manual_dir` are taken inside `workdir`. With `manual_dir` set, the
  dataset is prepared there first if it is not yet (TFDS reuses prepared data), after writing
  a synthetic raw tree into it when `synthetic_raw` names one (the demo).
  """
  config = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy
  for key in ('data_dir', 'manual_dir'):
    if config.get(key) and not os.path.isabs(config[key]):
      config[key] = os.path.join(os.path.abspath(workdir), config[key])
  manual_dir = config.get('manual_dir')
  if not manual_dir:
    return config
  if jax.process_index() == 0:
    kind = config.get('synthetic_raw')
    if kind and not (os.path.isdir(manual_dir) and os.listdir(manual_dir)):
      from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
      _say(f'Writing a synthetic {kind} raw tree to {manual_dir}')
      synthetic.write_tree(kind, manual_dir, seed=config.seed,
                           **config.get('synthetic_options', {}))
    from data_pipelines import prepare  # pylint: disable=g-import-not-at-top
    prepare.prepare(config.dataset, manual_dir, config.data_dir,
                    file_format=config.get('prepare_file_format', 'array_record'))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices('istanet_jax data prepared')
  return config


def _data_kwargs(config) -> dict:
  return dict(data_dir=config.get('data_dir'), backend=config.get('data_backend', 'auto'),
              max_frames=config.max_frames, label_key=config.get('label_key', 'label'),
              num_classes=config.model.num_classes)


def jit_steps(config: ml_collections.ConfigDict, model, tx, mesh: Mesh):
  """(init_state(key) -> state, train_step, eval_step), jitted and placed on `mesh` as training
  runs them: state replicated, batches split along 'data' (benchmarks/first_step.py times them).
  ValueError where the config's batch sizes do not split over the mesh."""
  _check_batch_sizes(config, mesh)
  replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  init_state = jax.jit(lambda k: steps.create_state(model, tx, k), out_shardings=replicated)
  train_step = jax.jit(steps.make_train_step(config, model, tx, num_shards=mesh.size),
                       in_shardings=(replicated, data, replicated),
                       out_shardings=(replicated, replicated), donate_argnums=0)
  return init_state, train_step, jit_eval_step(config, model, mesh)


def compile_first_step(train_step, state, batch, key) -> concurrent.futures.Future:
  """Traces, lowers and compiles `train_step` for (state, batch, key) on a thread of its own;
  the future gives {'trace_and_lower_s', 'compile_s'}. state and batch may be abstract
  (`jax.ShapeDtypeStruct`s with their shardings: `jax.eval_shape` of the initialiser,
  `abstract_batch`), so that training initialises its state and reads its split meanwhile.
  The jitted step then runs that executable when first called with arrays of those shapes,
  dtypes and shardings (no second compilation; tests/test_train.py). On the CPU the NTU state's
  initialisation (then 5.2-5.3 s) and the step's compilation took 15.9-17.4 s one after the
  other and 12.6-15.0 s side by side (`python -m benchmarks.first_step`,
  benchmarks/PERFORMANCE.md)."""
  def work():
    start = time.perf_counter()
    lowered = train_step.lower(state, batch, key)
    lowered_at = time.perf_counter()
    lowered.compile()
    return {'trace_and_lower_s': lowered_at - start,
            'compile_s': time.perf_counter() - lowered_at}
  pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='istanet-compile')
  try:
    return pool.submit(work)
  finally:
    pool.shutdown(wait=False)  # the thread ends with the compilation


def jit_eval_step(config: ml_collections.ConfigDict, model, mesh: Mesh):
  """`steps.make_eval_step`'s step jitted on `mesh`: state replicated, batch and logits split."""
  replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  return jax.jit(steps.make_eval_step(config, model), in_shardings=(replicated, data),
                 out_shardings=(replicated, data))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_after_epochs: Optional[int] = None, progress: bool = True,
                       devices: Optional[list] = None) -> dict:
  """Trains `config` in `workdir`, resuming from its last good checkpoint; returns the summary.

  `stop_after_epochs` ends the run after that many epochs of this call (a stand-in for a kill:
  the checkpoint of the last epoch is written first). `devices` restricts the mesh (default:
  every device of every host).
  """
  os.makedirs(workdir, exist_ok=True)
  config = resolve_data(config, workdir)
  mesh = make_mesh(devices)
  data_sharding = NamedSharding(mesh, P('data'))

  n_train = input_pipeline.num_examples(config.dataset, config.train_split, config.get('data_dir'))
  _check_schedule(config, n_train)
  steps_per_epoch = input_pipeline.num_batches(n_train, batch_size=config.batch_size, train=True,
                                               process_count=jax.process_count())
  model = steps.model_from_config(config)
  tx = steps.make_optimizer(config, steps_per_epoch)
  init_state, train_step, eval_step = jit_steps(config, model, tx, mesh)
  step_compilations = compilations(TRAIN_STEP)

  last = checkpoints.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                  max_to_keep=config.get('keep_checkpoints', 2))
  best = checkpoints.Checkpointer(os.path.join(workdir, 'best'), max_to_keep=1)
  meta = {'epoch': 0, 'best_top1': -1.0, 'best_epoch': -1, 'data_state': None}
  # The state's layout without running the initialiser, whose compilation a resumed run skips.
  base_key = jax.random.key(config.seed)
  abstract_state = jax.eval_shape(init_state, base_key)
  restored = last.restore_latest(checkpoints.abstract_like(abstract_state))
  at = -1
  if restored is not None:
    state, meta, at = restored
    _say(f'Resuming from {last.directory}/{at}: epoch {meta["epoch"]} done, '
         f'best top-1 {meta["best_top1"]:.4f}')
  _forget_best_after(best, at, workdir)
  start_epoch = int(meta['epoch'])
  end_epoch = config.num_epoch
  if stop_after_epochs is not None:
    end_epoch = min(end_epoch, start_epoch + stop_after_epochs)
  # The iterator reads the split into memory on a thread of its own, and the train step then
  # compiles on another while the state is initialised. The iterator comes first: its imports
  # (grain's, on this thread) go through etils' `lazy_imports`, which swaps the import function
  # of the whole process, and must not meet the step's tracing (test_train.py).
  train_iter = input_pipeline.make_iterator(
      config.dataset, config.train_split, batch_size=config.batch_size, train=True,
      seed=config.seed, start_state=meta['data_state'], **_data_kwargs(config))
  step_compiled = None
  if start_epoch < end_epoch:
    step_compiled = compile_first_step(train_step, abstract_state,
                                       abstract_batch(config, data_sharding), base_key)
  if restored is None:
    state = init_state(base_key)
  if step_compiled is not None:
    step_compiled.result()  # raises what the compilation raised
  writer = MetricWriter(workdir, keep_until_epoch=start_epoch if restored else None,
                        keep_until_step=at if restored else None,
                        enabled=jax.process_index() == 0)

  # One eval iterator for the run, a pass per evaluation: an iterator reads the whole split
  # into memory when it starts, which each evaluation would otherwise repeat.
  eval_iter = None
  summary = {'epochs_run': 0, 'resumed_from_epoch': start_epoch if restored else None}
  compiled_by_first_epoch = None
  for epoch in range(start_epoch, end_epoch):
    totals = None
    start = time.perf_counter()
    bar = _progress(steps_per_epoch * config.batch_size, f'epoch {epoch + 1}/{config.num_epoch}',
                    progress)
    # No device-to-host transfer inside an epoch: metrics stay on device until it ends (the
    # guard bites on accelerators; CPU arrays already live in host memory).
    with jax.transfer_guard_device_to_host('disallow_explicit'):
      for _ in range(steps_per_epoch):
        batch = to_global(as_batch_dtypes(next(train_iter)), data_sharding)
        state, metrics = train_step(state, batch, base_key)
        totals = steps.accumulate(totals, metrics)
        bar.update(config.batch_size)
    bar.close()
    totals = jax.device_get(totals)  # one pull per epoch
    step = epoch * steps_per_epoch + steps_per_epoch
    elapsed = time.perf_counter() - start
    scalars = {'train/loss': totals['loss_sum'] / max(totals['count'], 1),
               'train/top1': totals['top1_sum'] / max(totals['count'], 1),
               'train/skipped_steps': totals['skipped'],
               # Host arithmetic: the same rule as the step's schedule, no device work.
               'lr': optim.reference_lr(epoch, base_lr=config.base_lr,
                                        warm_up_epoch=config.warm_up_epoch, step=list(config.step),
                                        lr_decay_rate=config.lr_decay_rate),
               # `count` sums the global batch (every host's samples) already.
               'train/samples_per_second': totals['count'] / elapsed,
               'train/seconds': elapsed}
    writer.write(step, epoch + 1, scalars)
    _say(f'epoch {epoch + 1}: train loss {scalars["train/loss"]:.4f} top-1 '
         f'{scalars["train/top1"]:.4f} lr {scalars["lr"]:.6f} '
         f'({scalars["train/samples_per_second"]:.1f} samples/s)')

    if (epoch + 1) % config.eval_interval == 0 or epoch + 1 == config.num_epoch:
      if eval_iter is None:
        eval_iter = eval_iterator(config, passes=end_epoch - epoch)
      result = evaluate(config, state, eval_step, data_sharding, eval_iter)
      writer.write(step, epoch + 1, {k: v for k, v in result.items() if k.startswith('eval/')})
      _say(f'epoch {epoch + 1}: eval loss {result["eval/loss"]:.4f} top-1 '
           f'{result["eval/top1"]:.4f} top-5 {result["eval/top5"]:.4f}{_swap_text(result)}')
      if result['eval/top1'] > meta['best_top1']:
        meta.update(best_top1=result['eval/top1'], best_epoch=epoch + 1)
        best.save(step, state, dict(meta, epoch=epoch + 1, data_state=train_iter.get_state()))
        if config.get('save_score', True) and jax.process_index() == 0:
          save_scores(workdir, result)
      summary.update({k: v for k, v in result.items() if k.startswith('eval/')})
    meta.update(epoch=epoch + 1, data_state=train_iter.get_state())
    if (epoch + 1) % config.checkpoint_every_epochs == 0 or epoch + 1 == end_epoch:
      last.save(step, state, dict(meta))
    summary['epochs_run'] += 1
    if compiled_by_first_epoch is None:
      compiled_by_first_epoch = compilations()
  last.close()
  best.close()
  writer.close()
  # Train and eval steps (incl. the partial last eval batch) compile in the first epoch only.
  summary['compilations_after_first_epoch'] = compilations() - (compiled_by_first_epoch or compilations())
  # 1 where training ran: the compilation `compile_first_step` made is the one the step runs.
  summary['train_step_compilations'] = compilations(TRAIN_STEP) - step_compilations
  summary.update(best_top1=meta['best_top1'], best_epoch=meta['best_epoch'],
                 epoch=meta['epoch'], state=state)
  return summary


def _forget_best_after(best: checkpoints.Checkpointer, step: int, workdir: str) -> None:
  """Sets `best/` checkpoints later than the state training resumes from (`step`; -1: a fresh
  start) aside, with the scores saved with them. They are ahead of the resumed run's record
  of its best (a kill between the best and the last checkpoint of an epoch, an epoch not
  checkpointed, a damaged newest checkpoint), and the rerun saves that step again when it gets
  there (Orbax refuses a step that exists)."""
  later = [s for s in best.steps() if s > step]
  for s in later:
    aside = best.set_aside(s, 'ahead')
    _say(f'{best.directory}/{s} is later than the state resumed from: moved to {aside}')
    if jax.process_index() == 0:
      for suffix in ('npy', 'json'):
        path = os.path.join(workdir, f'best_scores.{suffix}')
        if os.path.exists(path):
          os.replace(path, os.path.join(aside, f'best_scores.{suffix}'))


def eval_iterator(config, passes: int = 1) -> input_pipeline.BatchIterator:
  """The eval split in index order, padded to whole batches, `passes` times over."""
  return input_pipeline.make_iterator(
      config.dataset, config.eval_split, batch_size=config.test_batch_size, train=False,
      seed=0, num_epochs=passes, **_data_kwargs(config))


def evaluate(config, state, eval_step, data_sharding,
             batches: Optional[input_pipeline.BatchIterator] = None) -> dict:
  """Loss, top-1, top-5 and per-class accuracy over the whole eval split, plus the scores.

  `batches`: an eval-split iterator whose next `steps_per_epoch` batches are taken as the pass
  (default: a new one-pass iterator, whose start then counts in `eval/seconds`).

  With the config's `eval_swap_consistency` (and two or more interchangeable entities) also
  `eval/swap_consistency` (fraction of samples whose top-1 is unchanged when the entities are
  swapped; 1.0 = order-independent) and `eval/swap_changed` (1 minus it).
  """
  start = time.perf_counter()
  if batches is None:
    batches = eval_iterator(config)
  totals, logits, names, labels = None, [], [], []
  for host_batch in itertools.islice(batches, batches.steps_per_epoch):
    batch = to_global(as_batch_dtypes(host_batch), data_sharding)
    metrics, batch_logits = eval_step(state, batch)
    totals = steps.accumulate(totals, metrics)
    keep = np.asarray(host_batch['mask'])
    if jax.process_count() == 1:  # several hosts: sums only (each host holds its own logits)
      logits.append(np.asarray(batch_logits)[keep])
    names.extend(np.asarray(host_batch['sample_name'])[keep].tolist())
    labels.append(np.asarray(host_batch['label'])[keep])
  totals = jax.device_get(totals)
  count = max(float(totals['count']), 1.0)
  class_count = np.asarray(totals['class_count'])
  per_class = np.where(class_count > 0, np.asarray(totals['class_correct']) / np.maximum(class_count, 1), np.nan)
  result = {'eval/loss': float(totals['loss_sum']) / count,
            'eval/top1': float(totals['top1_sum']) / count,
            'eval/top5': float(totals['top5_sum']) / count,
            'eval/count': float(totals['count']),
            # Input pipeline and the pull of the logits included, as the train figure.
            'eval/seconds': time.perf_counter() - start}
  result['eval/samples_per_second'] = result['eval/count'] / result['eval/seconds']
  if 'swap_same_sum' in totals:
    # Fractions of eval samples whose top-1 stays / changes when the entities are swapped.
    result['eval/swap_consistency'] = float(totals['swap_same_sum']) / count
    result['eval/swap_changed'] = 1.0 - result['eval/swap_consistency']
  return dict(result, per_class_top1=per_class,
              scores=np.concatenate(logits) if logits else np.zeros((0,)),
              sample_names=[n.decode() if isinstance(n, bytes) else str(n) for n in names],
              labels=np.concatenate(labels) if labels else np.zeros((0,), np.int64))


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, checkpoint: str, *,
                        devices: Optional[list] = None) -> dict:
  """`--mode eval`: the eval split under `checkpoint`, scores written to workdir/eval_scores.*.

  `checkpoint` is a reference `.pt` state dict, an Orbax directory of this project
  (`workdir/best`, `workdir/checkpoints`: its newest good step), or one step of it.
  """
  os.makedirs(workdir, exist_ok=True)
  config = resolve_data(config, workdir)
  mesh = make_mesh(devices)
  _check_batch_sizes(config, mesh, train=False)
  replicated = NamedSharding(mesh, P())
  model = steps.model_from_config(config)
  # Shared with the exporter; unlike the training fallback, it never moves a checkpoint aside
  # (one of another config is reported key by key, not taken for corrupt).
  from istanet_jax import export  # pylint: disable=g-import-not-at-top
  state = jax.device_put(variables_as_state(export.load_variables(config, checkpoint)), replicated)
  eval_step = jit_eval_step(config, model, mesh)
  result = evaluate(config, state, eval_step, NamedSharding(mesh, P('data')))
  if jax.process_index() == 0:
    save_scores(workdir, result, 'eval_scores')
  _say(f'eval of {checkpoint}: loss {result["eval/loss"]:.4f} top-1 {result["eval/top1"]:.4f} '
       f'top-5 {result["eval/top5"]:.4f}{_swap_text(result)} over {int(result["eval/count"])} '
       'samples')
  return result


def _swap_text(result: dict) -> str:
  if 'eval/swap_consistency' not in result:
    return ''
  return f' swap consistency {result["eval/swap_consistency"]:.4f}'


def variables_as_state(variables: dict) -> dict:
  """What `eval_step` reads of a state, from plain Flax variables."""
  return {'params': variables['params'], 'batch_stats': variables['batch_stats'],
          'buffers': variables.get('buffers', {})}


def save_scores(workdir: str, result: dict, name: str = 'best_scores') -> None:
  """Scores as the reference's `save_score` keeps them (sample name -> logits), as .npy + .json.

  The .json holds `sample_names` and `labels` (row i of the .npy is sample i), per-class
  top-1 and the evaluation's `eval/*` scalars (`metrics`).
  """
  with files.atomic_path(os.path.join(workdir, f'{name}.npy'), '.npy') as tmp:
    np.save(tmp, result['scores'])
  with files.atomic_path(os.path.join(workdir, f'{name}.json')) as tmp, open(tmp, 'w') as f:
    json.dump({'sample_names': result['sample_names'],
               'labels': np.asarray(result['labels']).tolist(),
               'per_class_top1': [None if np.isnan(v) else float(v) for v in result['per_class_top1']],
               'metrics': {k: float(v) for k, v in result.items() if k.startswith('eval/')}},
              f)


def _say(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


class _NoBar:
  def update(self, n):
    pass

  def close(self):
    pass


def _progress(total: int, desc: str, enabled: bool):
  if not enabled or jax.process_index() != 0:
    return _NoBar()
  try:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:
    return _NoBar()
  # Samples, so tqdm's rate is samples/s and its ETA the epoch's.
  return tqdm(total=total, desc=desc, unit='sample', leave=False, file=sys.stderr)


# --------------------------------------------------------------------------- main


def main(argv=None) -> None:
  host.configure()
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file('config', None, 'experiment config file (configs/<name>.py[:arg])',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'where checkpoints, metrics and scores go')
  flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'train (resumes) or evaluate only')
  flags.DEFINE_string('checkpoint', None, '--mode eval: an Orbax checkpoint dir or a reference .pt')
  flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (several hosts)')
  flags.DEFINE_integer('num_processes', None, 'number of processes (several hosts)')
  flags.DEFINE_integer('process_id', None, 'this process (several hosts)')
  flags.DEFINE_string('compilation_cache_dir', host.default_cache_dir(),
                      'persistent XLA cache: a rerun or resume loads its compiled steps from '
                      'here (empty: none)')
  flags.mark_flags_as_required(['config', 'workdir'])

  def run(_):
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every file it writes at INFO.
    f = flags.FLAGS
    if f.coordinator_address:
      jax.distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
    if f.compilation_cache_dir:
      host.enable_compilation_cache(f.compilation_cache_dir)
    if f.mode == 'train':
      result = train_and_evaluate(f.config, f.workdir)
      _say(f'best eval top-1 {result["best_top1"]:.4f} at epoch {result["best_epoch"]}')
    else:
      if not f.checkpoint:
        raise app.UsageError('--mode eval needs --checkpoint (an Orbax directory or a .pt file)')
      evaluate_checkpoint(f.config, f.workdir, f.checkpoint)

  app.run(run, argv=argv, flags_parser=host.parse_flags)


if __name__ == '__main__':
  main()
