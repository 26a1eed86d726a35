r"""Peak memory and wall time of `data_pipelines.prepare` on a synthetic NTU RGB+D 120 tree.

  python -m benchmarks.prepare_memory --num_files 2000 \
      --out benchmarks/results/prepare_memory_ntu2000.json

Writes `--num_files` `.skeleton` files (two people, 30-60 frames, every one of the 120 actions,
all setups/cameras/replications, so every file lands in a split of `ntu120/xsub`), then runs
`prepare.main` for `ntu120/xsub` in this process, NTU parsing in `--num_workers` spawned
processes. Recorded: peak RSS from `resource.getrusage` (this process, and the largest child:
getrusage reports the maximum over children, not their sum), the sum of the RSS of this process
and its workers sampled every 20 ms with psutil (the number to hold against a memory budget),
wall time, file and example counts, and bytes written.

What grows with the dataset: TFDS's shuffler keeps serialized examples in memory up to a cap
(`prepare --shuffle_buffer_mb`, default 256 MiB) per split, then spills them to temporary
bucket files; pass a small `--shuffle_buffer_mb` to see the spilling regime of the full
NTU120 on a small tree. Everything else (the reader's file list, at most num_workers * 16
parsed samples in flight) is small.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
import warnings

import numpy as np


def _name(i: int) -> str:
  # (action, camera, replication, setup) alone are unique for up to 23040 files.
  action, rest = 1 + i % 120, i // 120
  camera, rest = 1 + rest % 3, rest // 3
  replication, rest = 1 + rest % 2, rest // 2
  setup = 1 + rest % 32
  performer = 1 + (7 * i) % 106
  return f'S{setup:03d}C{camera:03d}P{performer:03d}R{replication:03d}A{action:03d}'


def write_tree(root: str, num_files: int, seed: int = 0) -> int:
  """Writes num_files two-person files of 30-60 frames; returns the total frame count."""
  from data_pipelines import ntu
  from data_pipelines.synthetic_ntu import write_skeleton_file

  rng = np.random.default_rng(seed)
  total = 0
  for i in range(num_files):
    name = _name(i)
    num_frames = int(rng.integers(30, 61))
    total += num_frames
    bodies = []
    for person, x0 in enumerate((-0.45, 0.45)):
      # A standing-person-like spread (tall rather than wide, so denoising keeps both).
      base = np.stack([rng.uniform(-0.3, 0.3, 25) + x0, rng.uniform(-0.9, 0.7, 25),
                       rng.uniform(2.9, 3.1, 25)], axis=1)
      walk = np.cumsum(rng.normal(0, 0.01, (num_frames, 25, 3)), axis=0)
      bodies.append((f'7205759403790{i:04d}{person}', base + walk))
    frames = [[(body_id, joints[t]) for body_id, joints in bodies] for t in range(num_frames)]
    sub = ntu.SKELETON_DIR_120 if int(name[1:4]) >= ntu.FIRST_SETUP_120 else ntu.SKELETON_DIR
    write_skeleton_file(os.path.join(root, sub, name + '.skeleton'), frames)
  return total


class _TreeRss:
  """Samples the RSS summed over this process and its descendants; keeps the peak."""

  def __init__(self, interval: float = 0.02):
    import psutil
    self._process = psutil.Process()
    self._interval = interval
    self.peak_total = self.peak_children_total = 0
    self.max_processes = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    import psutil
    while not self._stop.is_set():
      try:
        children = self._process.children(recursive=True)
        own = self._process.memory_info().rss
        rss = []
        for child in children:
          try:
            rss.append(child.memory_info().rss)
          except psutil.Error:  # exited between the listing and the read
            pass
        self.peak_total = max(self.peak_total, own + sum(rss))
        self.peak_children_total = max(self.peak_children_total, sum(rss))
        self.max_processes = max(self.max_processes, 1 + len(rss))
      except psutil.Error:
        pass
      self._stop.wait(self._interval)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()


def _du(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--num_files', type=int, default=2000)
  parser.add_argument('--num_workers', type=int, default=None,
                      help='default: prepare\'s default (every core this process may use)')
  parser.add_argument('--file_format', default='array_record',
                      choices=('array_record', 'tfrecord'))
  parser.add_argument('--shuffle_buffer_mb', type=float, default=None,
                      help='passed to prepare (default: prepare\'s default)')
  parser.add_argument('--workdir', default=None, help='default: a temporary directory')
  parser.add_argument('--out', default=None, help='JSON file to write')
  args = parser.parse_args(argv)

  workdir = args.workdir or tempfile.mkdtemp(prefix='prepare_memory_')
  raw, data = os.path.join(workdir, 'raw'), os.path.join(workdir, 'data')
  shutil.rmtree(data, ignore_errors=True)
  start = time.perf_counter()
  if not os.path.isdir(raw):
    total_frames = write_tree(raw, args.num_files)
  else:
    total_frames = None
  write_s = time.perf_counter() - start
  num_files = sum(len(files) for _, _, files in os.walk(raw))
  rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

  from data_pipelines import builders, prepare
  buffer_mb = (prepare.DEFAULT_SHUFFLE_BUFFER_MB if args.shuffle_buffer_mb is None
               else args.shuffle_buffer_mb)
  num_workers = (builders.default_num_workers() if args.num_workers is None
                 else args.num_workers)
  argv = ['--dataset', 'ntu120/xsub', '--manual_dir', raw, '--data_dir', data,
          '--file_format', args.file_format, '--num_workers', str(num_workers),
          '--shuffle_buffer_mb', str(buffer_mb)]
  start = time.perf_counter()
  with _TreeRss() as sampled, warnings.catch_warnings():
    warnings.simplefilter('ignore')
    prepare.main(argv)
  wall = time.perf_counter() - start
  self_usage = resource.getrusage(resource.RUSAGE_SELF)
  child_usage = resource.getrusage(resource.RUSAGE_CHILDREN)

  import tensorflow_datasets as tfds
  info = tfds.builder('ntu120/xsub', data_dir=data).info
  mib = lambda kib: round(kib / 1024, 1)  # ru_maxrss is in KiB on Linux
  result = {
      'command': 'python -m benchmarks.prepare_memory ' + ' '.join(sys.argv[1:]),
      'prepare_argv': ['python', '-m', 'data_pipelines.prepare'] + argv,
      'dataset': 'ntu120/xsub',
      'file_format': args.file_format,
      'num_files': num_files,
      'total_frames': total_frames,
      'examples': {name: split.num_examples for name, split in info.splits.items()},
      'serialized_bytes': {name: split.num_bytes for name, split in info.splits.items()},
      'bytes_on_disk': _du(data),
      'num_workers': num_workers,
      'wall_s_prepare': round(wall, 2),
      'wall_s_write_tree': round(write_s, 2),
      'files_per_s': round(num_files / wall, 1),
      'peak_rss_mib_self_getrusage': mib(self_usage.ru_maxrss),
      'peak_rss_mib_self_before_prepare': mib(rss_before),
      # Linux counts a spawned child's RSS from before its exec (the fork of this process),
      # so this over-states a worker; the sampled figures below are the workers' real RSS.
      'peak_rss_mib_largest_child_getrusage': mib(child_usage.ru_maxrss),
      'peak_rss_mib_self_plus_largest_child': mib(self_usage.ru_maxrss + child_usage.ru_maxrss),
      'peak_rss_mib_tree_sampled': round(sampled.peak_total / 2**20, 1),
      'peak_rss_mib_children_sampled': round(sampled.peak_children_total / 2**20, 1),
      'max_processes_sampled': sampled.max_processes,
      'shuffle_buffer_mib': buffer_mb,
      'spilled_to_disk': max(info.splits[s].num_bytes for s in info.splits) > buffer_mb * 2**20,
      'tensorflow_imported': 'tensorflow' in sys.modules,
      'host': {'python': platform.python_version(), 'cpus': os.cpu_count(),
               'tensorflow_datasets': tfds.__version__,
               'tensorflow_installed': prepare._has_tensorflow()},
      'date_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
  }
  text = json.dumps(result, indent=2)
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
    with open(args.out, 'w') as f:
      f.write(text + '\n')
  if not args.workdir:
    shutil.rmtree(workdir, ignore_errors=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
