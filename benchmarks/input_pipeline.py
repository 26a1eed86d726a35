r"""Host input pipeline alone: how fast `input_pipeline.make_iterator` delivers train batches.

  python -m benchmarks.input_pipeline --config configs/ntu26.py:xsub --num_per_class 300 \
      --batch 32 --out benchmarks/results/cpu_epyc_ntu26_input_pipeline.json

Writes the config dataset's synthetic raw tree (as `full_training` does), prepares it in both
file formats, then per back end ('grain' over ArrayRecord, 'tf' over TFRecord) times making
the training iterator (the split read into memory included) and the samples per second of its
batches over `--seconds`, each batch's skeleton read once as the copy to a device reads it.
No model runs: this is what the training loop's host side can feed, to set against a step's
samples/s (`throughput`). A 110-epoch NTU Mutual 26 x-sub run in 20
minutes reads 110 x 13,700 training and 55 x 11,100 eval examples: ~1,800 per second.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FORMATS = {'grain': 'array_record', 'tf': 'tfrecord'}


def measure(config, batch: int, seconds: float, num_threads: int | None) -> dict:
  """Make the train iterator of the prepared `config.dataset`, then pull batches for `seconds`."""
  from istanet_jax import input_pipeline, train  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  # The data keywords as training passes them (data_dir, back end, max_frames, label_key).
  it = input_pipeline.make_iterator(config.dataset, config.train_split, batch_size=batch,
                                    train=True, seed=0, num_epochs=None, num_threads=num_threads,
                                    **train._data_kwargs(config))  # pylint: disable=protected-access
  first = next(it)
  make_s = time.perf_counter() - start
  samples, start = 0, time.perf_counter()
  while (elapsed := time.perf_counter() - start) < seconds:
    got = next(it)
    # Read every byte once, as the copy to the device does (numpy's zeros are untouched
    # pages until then).
    got['skeleton'].sum()
    samples += len(got['label'])
  return dict(backend=it.backend, batch=batch, examples=it.num_examples,
              steps_per_epoch=it.steps_per_epoch, num_threads=num_threads,
              make_and_first_batch_s=round(make_s, 3), samples=samples,
              seconds=round(elapsed, 3), samples_per_s=round(samples / elapsed, 1),
              skeleton_shape=list(first['skeleton'].shape))


def run(config_spec: str, workdir: str, *, num_per_class: int, batch: int, seconds: float,
        backends: list[str], num_threads: int | None = None) -> list[dict]:
  from benchmarks.full_training import synthetic_kind  # pylint: disable=import-outside-toplevel
  from istanet_jax import train, viz  # pylint: disable=import-outside-toplevel
  rows = []
  for backend in backends:
    config = viz.load_config(config_spec)
    config.unlock()
    config.update(dict(synthetic_raw=synthetic_kind(config.dataset),
                       manual_dir=os.path.join(workdir, 'raw'),
                       data_dir=os.path.join(workdir, f'data_{FORMATS[backend]}'),
                       prepare_file_format=FORMATS[backend], data_backend=backend))
    config.synthetic_options.num_per_class = num_per_class
    config = train.resolve_data(config, workdir)
    rows.append(measure(config, batch, seconds, num_threads))
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', required=True, help='configs/<name>.py[:arg]')
  parser.add_argument('--num_per_class', type=int, default=300)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--seconds', type=float, default=15.0)
  parser.add_argument('--backends', default='grain,tf')
  parser.add_argument('--num_threads', type=int, default=None)
  parser.add_argument('--workdir', default=None, help='reused if it holds the same tree')
  parser.add_argument('--out', default=None)
  parser.add_argument('--no_host_defaults', action='store_true')
  args = parser.parse_args(argv)
  from benchmarks import throughput  # pylint: disable=import-outside-toplevel
  throughput.configure_host(args)
  backends = [b for b in args.backends.split(',') if b]
  if not backends or set(backends) - set(FORMATS):
    raise SystemExit(f'error: --backends must name some of {sorted(FORMATS)}')
  workdir = args.workdir or tempfile.mkdtemp(prefix='input_pipeline_')
  rows = run(args.config, workdir, num_per_class=args.num_per_class, batch=args.batch,
             seconds=args.seconds, backends=backends, num_threads=args.num_threads)
  throughput.write_report(dict(config=args.config, num_per_class=args.num_per_class,
                               results=rows, command=' '.join(sys.argv[1:] if argv is None
                                                              else argv),
                               environment=throughput.environment()), args.out)


if __name__ == '__main__':  # the NTU prepare spawns processes that import this module
  main()
