"""`python -m data_pipelines.prepare`: build one dataset's TFDS files from the raw download.

  python -m data_pipelines.prepare --dataset ntu_mutual26/xsub \\
      --manual_dir ~/raw/ntu --data_dir ~/tensorflow_datasets [--file_format array_record]

This file owns the command line: name and manual_dir checks with clear errors, then the
builder's own `download_and_prepare`. Unlike `tfds build`, it needs neither Apache Beam nor
(for array_record) TensorFlow: TFDS writes ArrayRecord files with its own protobuf serializer.
tfrecord files are written by TensorFlow and need it.

Two things about TFDS's shuffler (`tensorflow_datasets.core.shuffle`, which holds a split's
serialized examples in memory, then spills them to temporary bucket files and writes them out
in key-hash order) are changed while building, both for memory:
  * its in-memory cap, 1 GiB in TFDS, is `--shuffle_buffer_mb` (default 256): the cap is the
    one memory cost that grows with the dataset, and every large split (NTU120, NTU Mutual 26,
    Assembly101 train) spills either way, so the lower cap costs no extra I/O there;
  * its bucket files go through `tf.io.gfile`, the only TensorFlow use on the array_record
    path: that would import all of TensorFlow (~600 MiB RSS) just to write temporary files,
    or fail where TensorFlow is not installed. The calls go to `etils.epath` instead (see
    `_epath_spill_files`).
With both, NTU120 builds in a few hundred MiB plus ~40 MiB per parsing process
(benchmarks/prepare_memory.py).

Read the result with, e.g.,
  tfds.builder('ntu_mutual26/xsub', data_dir=...).as_data_source()   # array_record
  tfds.load('ntu_mutual26/xsub', data_dir=..., split='train')        # tfrecord, tf.data
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import os
import sys
import time
import types
from typing import Optional, Sequence

FILE_FORMATS = ('array_record', 'tfrecord')
DEFAULT_SHUFFLE_BUFFER_MB = 256


class MissingTensorflowError(RuntimeError):
  """tfrecord was asked for where TensorFlow is not installed."""


def _has_tensorflow() -> bool:
  return importlib.util.find_spec('tensorflow') is not None


class _NeverRaised(Exception):
  """Stands in for tf.errors.ResourceExhaustedError, which only TensorFlow's files raise."""


@contextlib.contextmanager
def _epath_spill_files():
  """Lets TFDS's shuffler spill its temporary buckets without TensorFlow.

  `shuffle._Bucket` only calls tf.io.gfile.GFile/exists/remove and catches
  tf.errors.ResourceExhaustedError; epath gives the same calls for local and remote paths.
  """
  from etils import epath
  from tensorflow_datasets.core import shuffle

  def open_file(path, mode='r'):
    try:
      return epath.Path(path).open(mode)
    except OSError as e:  # TFDS does the same on TensorFlow's "Too many open files"
      if e.errno != errno.EMFILE:
        raise
      shuffle._increase_open_files_limit()  # pylint: disable=protected-access
      return epath.Path(path).open(mode)

  gfile = types.SimpleNamespace(
      GFile=open_file,
      exists=lambda path: epath.Path(path).exists(),
      remove=lambda path: epath.Path(path).unlink())
  original = shuffle.tf
  shuffle.tf = types.SimpleNamespace(
      io=types.SimpleNamespace(gfile=gfile),
      errors=types.SimpleNamespace(ResourceExhaustedError=_NeverRaised))
  try:
    yield
  finally:
    shuffle.tf = original


@contextlib.contextmanager
def _shuffle_buffer(num_bytes: int):
  """Sets the serialized bytes TFDS's shuffler keeps in memory before spilling to disk."""
  from tensorflow_datasets.core import shuffle

  original = shuffle.MAX_MEM_BUFFER_SIZE
  shuffle.MAX_MEM_BUFFER_SIZE = num_bytes
  try:
    yield
  finally:
    shuffle.MAX_MEM_BUFFER_SIZE = original


def _parser() -> argparse.ArgumentParser:
  from data_pipelines import builders

  names = [f'{name}/{{{",".join(c.name for c in cls.BUILDER_CONFIGS)}}}'
           if cls.BUILDER_CONFIGS else name for name, cls in builders.BUILDERS.items()]
  parser = argparse.ArgumentParser(
      prog='python -m data_pipelines.prepare', description=__doc__.split('\n')[0],
      epilog='datasets: ' + ', '.join(names),
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--dataset', required=True,
                      help='<name>/<config>, e.g. ntu_mutual26/xsub, sbu_kinect_interaction/'
                           'clean, h2o, assembly101')
  parser.add_argument('--manual_dir', required=True,
                      help='the raw download, laid out as the builder\'s instructions say')
  parser.add_argument('--data_dir', required=True, help='where the TFDS files are written')
  parser.add_argument('--file_format', choices=FILE_FORMATS, default='array_record')
  parser.add_argument('--num_workers', type=int, default=None,
                      help='NTU only: processes parsing .skeleton files (default: all cores '
                           'this process may use; 0 parses inline)')
  parser.add_argument('--shuffle_buffer_mb', type=float, default=DEFAULT_SHUFFLE_BUFFER_MB,
                      help='serialized MiB per split TFDS keeps in memory before spilling to '
                           'temporary files in data_dir (TFDS alone: 1000)')
  return parser


def resolve(dataset: str):
  """(builder class, config name or None) for '<name>[/<config>]'; ValueError if unknown."""
  from data_pipelines import builders

  name, _, config = dataset.partition('/')
  cls = builders.BUILDERS.get(name)
  if cls is None:
    raise ValueError(f'unknown dataset {name!r}; choose one of {", ".join(builders.BUILDERS)}')
  configs = [c.name for c in cls.BUILDER_CONFIGS]
  if configs and not config:
    raise ValueError(f'{name} needs a config: {", ".join(f"{name}/{c}" for c in configs)}')
  if config and config not in configs:
    choices = ', '.join(configs) if configs else f'none ({name} has no configs)'
    raise ValueError(f'unknown config {config!r} for {name}; choose one of: {choices}')
  return cls, config or None


def prepare(dataset: str, manual_dir: str | os.PathLike, data_dir: str | os.PathLike, *,
            file_format: str = 'array_record', num_workers: Optional[int] = None,
            shuffle_buffer_mb: Optional[float] = DEFAULT_SHUFFLE_BUFFER_MB):
  """Builds `dataset` ('<name>/<config>') into data_dir; returns the prepared builder.

  num_workers: NTU only, see `builders.NtuBuilder`. shuffle_buffer_mb: TFDS's in-memory shuffle
  cap while building (None keeps TFDS's own).

  Raises ValueError for an unknown name/config or file format, DataError (a ValueError) when
  manual_dir lacks the dataset's sub-folders (or the reader meets a malformed file),
  MissingTensorflowError for tfrecord without TensorFlow.
  """
  if file_format not in FILE_FORMATS:
    raise ValueError(f'file_format must be one of {FILE_FORMATS}, got {file_format!r}')
  cls, config = resolve(dataset)
  if file_format == 'tfrecord' and not _has_tensorflow():
    raise MissingTensorflowError('tfrecord files are written by TensorFlow, which is not installed; '
                       'use --file_format array_record or install tensorflow-cpu')
  import tensorflow_datasets as tfds
  from data_pipelines import builders

  kwargs = {'num_workers': num_workers} if issubclass(cls, builders.NtuBuilder) else {}
  builder = cls(config=config, data_dir=os.fspath(data_dir), file_format=file_format, **kwargs)
  builders.check_manual_dir(builder, manual_dir)
  download_config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
  cap = (contextlib.nullcontext() if shuffle_buffer_mb is None
         else _shuffle_buffer(int(shuffle_buffer_mb * 2**20)))
  with _epath_spill_files(), cap:
    builder.download_and_prepare(download_config=download_config)
  return builder


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  from data_pipelines.common import DataError

  try:
    resolve(args.dataset)
  except ValueError as e:
    parser.error(str(e))
  start = time.perf_counter()
  try:
    builder = prepare(args.dataset, args.manual_dir, args.data_dir,
                      file_format=args.file_format, num_workers=args.num_workers,
                      shuffle_buffer_mb=args.shuffle_buffer_mb)
  except (DataError, MissingTensorflowError) as e:
    parser.exit(1, f'{parser.prog}: error: {e}\n')
  splits = ', '.join(f'{name}: {split.num_examples}'
                     for name, split in sorted(builder.info.splits.items()))
  print(f'{builder.info.full_name} ({args.file_format}) in {builder.data_dir}: {splits} '
        f'[{time.perf_counter() - start:.1f} s]')
  return 0


if __name__ == '__main__':
  sys.exit(main())
