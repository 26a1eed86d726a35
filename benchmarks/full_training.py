r"""A full training run projected from the training loop's steady state, input pipeline included.

  python -m benchmarks.full_training --config configs/ntu26.py:xsub --workdir /tmp/ntu26_full \
      --epochs 4 --num_per_class 300 --config.dtype=bfloat16 \
      --out benchmarks/results/gpu_ntu26_full_training.json

What runs is `istanet_jax.train.train_and_evaluate` itself: the input pipeline (grain over
ArrayRecord where TensorFlow is absent), on-device augmentation, the jitted sharded train and
eval steps, checkpoints and metrics. Its data is a synthetic raw tree of the config's dataset
(`data_pipelines.synthetic`, the real on-disk format) written and prepared in the workdir first;
preparation is a one-off and is not timed (`benchmarks/prepare_memory.py` times it). The run
keeps the config's schedule (`num_epoch`, LR rule) but stops after `--epochs` epochs and
evaluates after each. Epoch 1 compiles; the later epochs give the steady state:

* train and eval samples/s as the loop measures them (waiting for input included),
* the rest of an epoch (checkpoint, metrics, the eval iterator's start): the time between the
  starts of consecutive epochs' training (metrics' wall times) less their train and eval time.

Scaled to the real split sizes (`--train_samples`, `--eval_samples`; for NTU Mutual 26 x-sub
the defaults, see `SPLIT_SIZES`) and to the config's epochs and evaluation interval:

  projected = setup + first-epoch extra (compilation)
              + num_epoch * (train_samples / train_sps + rest)
              + evaluations * eval_samples / eval_sps

Also reported: recompilations after the first epoch (train and eval, partial last eval batch
included), which must be 0, and the train step's compilations, 1 (the one training makes beside
the state's initialisation, `train.compile_first_step`). No host-device round trip happens
inside a training epoch: the loop runs under
`jax.transfer_guard_device_to_host('disallow_explicit')`.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from typing import Optional

# Estimated split sizes where no prepared real data is at hand, (train, eval).
# NTU Mutual 26 x-sub: the 11 NTU60 mutual classes have 948 files each and the 15 NTU120 ones
# 960 (114,480 files over 120 classes, 56,880 of them in NTU60), 96 of them on the dataset's
# missing-skeleton list: 24,732 samples; x-sub puts 55.3% of NTU120 in train (63,026 of
# 113,945), so about 13,700 train and 11,050 test. Rounded up, so the projection errs long.
SPLIT_SIZES = {'ntu_mutual26/xsub': (13_700, 11_100)}

# Synthetic raw tree writer (data_pipelines.synthetic.WRITERS) by dataset name prefix.
_SYNTHETIC_KIND = (('ntu', 'ntu'), ('sbu', 'sbu'), ('h2o', 'h2o'), ('assembly101', 'assembly101'))


def synthetic_kind(dataset: str) -> str:
  for prefix, kind in _SYNTHETIC_KIND:
    if dataset.startswith(prefix):
      return kind
  raise ValueError(f'no synthetic raw tree for dataset {dataset!r}')


def epoch_timings(records: list[dict]) -> list[dict]:
  """Per epoch: train and eval seconds and samples/s, and the epoch's wall time (train start to
  the next epoch's train start; None for the last epoch), from `metrics.jsonl` records."""
  by_epoch: dict[int, dict] = {}
  for r in records:
    e = by_epoch.setdefault(int(r['epoch']), {'epoch': int(r['epoch'])})
    if 'train/seconds' in r:
      e.update(train_s=r['train/seconds'], train_sps=r['train/samples_per_second'],
               train_start=r['time'] - r['train/seconds'])
    if 'eval/seconds' in r:
      e.update(eval_s=r['eval/seconds'], eval_sps=r['eval/samples_per_second'])
  epochs = [by_epoch[k] for k in sorted(by_epoch)]
  for e, nxt in zip(epochs, epochs[1:] + [None]):
    e['wall_s'] = None if nxt is None else nxt['train_start'] - e['train_start']
    if e['wall_s'] is not None:
      e['rest_s'] = e['wall_s'] - e['train_s'] - e.get('eval_s', 0.0)
  return epochs


def evaluations(num_epoch: int, eval_interval: int) -> int:
  """How many evaluations the training loop runs in `num_epoch` epochs."""
  return sum(1 for e in range(1, num_epoch + 1) if e % eval_interval == 0 or e == num_epoch)


def project(epochs: list[dict], *, setup_s: float, num_epoch: int, eval_interval: int,
            train_samples: int, eval_samples: int) -> dict:
  """The projection above from `epoch_timings` (epoch 1 and at least two more)."""
  steady = epochs[1:]
  walled = [e for e in steady if e['wall_s'] is not None]
  if not walled:
    raise ValueError('need at least 3 epochs: epoch 1 compiles, and a steady epoch\'s wall time '
                     'ends where the next one starts')
  train_sps = statistics.median(e['train_sps'] for e in steady)
  eval_sps = statistics.median(e['eval_sps'] for e in steady)
  rest_s = statistics.median(e['rest_s'] for e in walled)
  steady_wall = statistics.median(e['wall_s'] for e in walled)
  first_extra = max(epochs[0]['wall_s'] - steady_wall, 0.0)
  n_evals = evaluations(num_epoch, eval_interval)
  train_total = num_epoch * train_samples / train_sps
  eval_total = n_evals * eval_samples / eval_sps
  total = setup_s + first_extra + train_total + num_epoch * rest_s + eval_total
  return dict(train_samples_per_s=train_sps, eval_samples_per_s=eval_sps,
              rest_of_epoch_s=rest_s, first_epoch_extra_s=first_extra, setup_s=setup_s,
              num_epoch=num_epoch, evaluations=n_evals, train_samples=train_samples,
              eval_samples=eval_samples, train_total_s=train_total, eval_total_s=eval_total,
              projected_total_s=total, projected_total_min=total / 60)


def run(config, workdir: str, *, epochs: int, num_per_class: int, train_samples: int,
        eval_samples: int) -> dict:
  from istanet_jax import train  # pylint: disable=import-outside-toplevel
  config.update(dict(synthetic_raw=synthetic_kind(config.dataset), manual_dir='raw',
                     data_dir='data'))
  config.synthetic_options.num_per_class = num_per_class
  num_epoch, eval_interval = config.num_epoch, config.eval_interval
  if epochs > num_epoch:
    raise ValueError(f'{epochs} epochs asked for, but the config trains {num_epoch}')
  config.eval_interval = 1  # measure eval in every epoch; the projection uses the real interval
  start = time.perf_counter()
  config = train.resolve_data(config, workdir)  # writes and prepares; the loop then reuses it
  prepare_s = time.perf_counter() - start
  start_wall = time.time()
  summary = train.train_and_evaluate(config, workdir, stop_after_epochs=epochs, progress=False)
  if summary['resumed_from_epoch'] is not None:
    raise ValueError(f'{workdir} held a run already (resumed from epoch '
                     f'{summary["resumed_from_epoch"]}): use an empty workdir')
  timings = epoch_timings(train.read_metrics(workdir))
  setup_s = timings[0]['train_start'] - start_wall
  projection = project(timings, setup_s=setup_s, num_epoch=num_epoch,
                       eval_interval=eval_interval, train_samples=train_samples,
                       eval_samples=eval_samples)
  return dict(dataset=config.dataset, dtype=config.get('dtype', 'float32'),
              batch_size=config.batch_size, bn_group_size=config.get('bn_group_size'),
              test_batch_size=config.test_batch_size,
              file_format=config.get('prepare_file_format'), prepare_s=prepare_s,
              epochs_run=summary['epochs_run'],
              compilations_after_first_epoch=summary['compilations_after_first_epoch'],
              train_step_compilations=summary['train_step_compilations'],
              epochs=timings, projection=projection)


def _flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'configs/<name>.py[:arg]; override fields '
                                  'with --config.<key>=value as for istanet_jax.train',
                                  flag_values=fv, lock_config=True)
  flags.DEFINE_string('workdir', None, 'an empty directory (default: a new one)', flag_values=fv)
  flags.DEFINE_integer('epochs', 4, 'epochs to run (>= 3)', flag_values=fv)
  flags.DEFINE_integer('num_per_class', 300, 'synthetic raw files per class', flag_values=fv)
  flags.DEFINE_integer('train_samples', None, "the real train split's size (default: "
                       'SPLIT_SIZES)', flag_values=fv)
  flags.DEFINE_integer('eval_samples', None, "the real eval split's size", flag_values=fv)
  flags.DEFINE_string('out', None, 'JSON path (default: print only)', flag_values=fv)
  flags.DEFINE_bool('no_host_defaults', False, 'skip istanet_jax.host.configure()',
                    flag_values=fv)
  return fv


def main(argv: Optional[list] = None) -> None:
  import sys  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  from benchmarks import throughput  # pylint: disable=import-outside-toplevel
  argv = sys.argv[1:] if argv is None else list(argv)
  # config_flags finds the --config.<key> overrides in sys.argv when the flag is defined.
  saved, sys.argv = sys.argv, ['full_training', *argv]
  try:
    fv = _flags()
    if any(a in ('-h', '--help', '-help', '--helpfull') for a in argv):
      print(f'{__doc__}\n{fv.get_help()}')
      return
    rest = fv(sys.argv)
  except (flags.Error, AttributeError, KeyError, ValueError) as e:  # config_flags: a bad field
    raise SystemExit(f'error: {e}') from None
  finally:
    sys.argv = saved
  if len(rest) > 1:
    raise SystemExit(f'error: unexpected arguments {rest[1:]}')
  args = argparse.Namespace(**{name: fv[name].value for name in fv})
  if args.config is None:
    raise SystemExit('error: --config is required')
  if args.epochs < 3:
    raise SystemExit('error: --epochs must be >= 3 (epoch 1 compiles; a steady epoch ends '
                     'where the next starts)')
  throughput.configure_host(args)
  config = copy.deepcopy(args.config)
  config.unlock()
  sizes = SPLIT_SIZES.get(config.dataset)
  train_samples = args.train_samples or (sizes and sizes[0])
  eval_samples = args.eval_samples or (sizes and sizes[1])
  if not (train_samples and eval_samples):
    raise SystemExit(f'error: no split sizes known for {config.dataset!r}: give '
                     '--train_samples and --eval_samples')
  workdir = args.workdir or tempfile.mkdtemp(prefix='full_training_')
  if os.path.isdir(workdir) and os.listdir(workdir):
    raise SystemExit(f'error: --workdir {workdir} is not empty')
  load_before = throughput.load_average()
  report = run(config, workdir, epochs=args.epochs, num_per_class=args.num_per_class,
               train_samples=train_samples, eval_samples=eval_samples)
  report.update(command=' '.join(argv), workdir=workdir,
                load_average=dict(before=load_before, after=throughput.load_average()),
                environment=throughput.environment())
  throughput.write_report(report, args.out)


if __name__ == '__main__':
  main()
