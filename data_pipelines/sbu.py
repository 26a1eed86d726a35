"""Reader for the raw SBU-Kinect-Interaction 2.0 skeletons (Clean and Noisy versions).

This file owns the on-disk format, the reference's five-fold cross-validation lists and the
reference's padding/de-normalisation rule (`feeders/feeder_sbu.py: get_SBU` in ISTA-Net).

On disk (as the download unpacks it):

  <root>/<Clean|Noisy>/<pair>/<label>/<seq>/skeleton_pos.txt

`pair` is like `s01s02`, `label` is `01`..`08`, `seq` is like `001`. Each line of
`skeleton_pos.txt` is one frame: the frame number followed by 90 comma-separated values,
person A's 15 joints x (x, y, z) then person B's, all in the dataset's normalised units.

What the reference does, and so what we do by default:
  * Folds: `test` = that fold's pairs, `train` = the other folds' pairs, in fold-list order.
    Pairs in no list (e.g. `s08s09`) are never read; a missing `pair/label` directory is
    skipped. `missing_pairs` lists the fold pairs absent from a tree so callers can warn.
  * Each sequence is zero-padded at the end, or cut to its first 46 frames, BEFORE the
    de-normalisation `x = 1280 - 2560 x`, `y = 960 - 1920 y`, `z = z * 10000 / 7.8125`. Padded
    frames therefore become (1280, 960, 0), never zeros, and the reference's valid-frame count
    is always 46; `length` is reported as 46 accordingly. `pad_quirk=False` de-normalises
    first and pads with true zeros, and reports the real number of frames.
  * Arithmetic is float64 (the reference's pandas/torch.double path), cast to float32 at the
    end, so our arrays equal float32(reference) bit for bit.

Deviation: within a label directory the reference takes sequences in unsorted `os.listdir`
order (file-system dependent); we sort them by name so the order is reproducible. Entries that
are not directories (e.g. `.DS_Store`, which the reference's copy script deletes and `get_SBU`
would crash on) are skipped.

Skeletons come out as (T, V=15, M=2, 3): frames, joints, persons, xyz. Labels are 0-based
(`label dir - 1`); sample names are `pair/label/seq`.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from data_pipelines.common import DataError, Sample, read_text

NUM_CLASSES = 8
NUM_JOINTS = 15
NUM_PERSONS = 2
MAX_FRAMES = 46
VERSIONS = {'clean': 'Clean', 'noisy': 'Noisy'}
LABEL_DIRS = tuple(f'{i:02d}' for i in range(1, NUM_CLASSES + 1))
SKELETON_FILE = 'skeleton_pos.txt'

# The reference's five folds (from the dataset README), in the reference's order.
FOLD_PAIRS = (
    ('s01s02', 's03s04', 's05s02', 's06s04'),
    ('s02s03', 's02s07', 's03s05', 's05s03'),
    ('s01s03', 's01s07', 's07s01', 's07s03'),
    ('s02s01', 's02s06', 's03s02', 's03s06'),
    ('s04s02', 's04s03', 's04s06', 's06s02', 's06s03'),
)
NUM_FOLDS = len(FOLD_PAIRS)

_VALUES_PER_LINE = 1 + NUM_PERSONS * NUM_JOINTS * 3


def fold_pairs(k: int) -> tuple[str, ...]:
  """The pairs of fold `k` (0..4)."""
  if not 0 <= k < NUM_FOLDS:
    raise ValueError(f'fold must be in 0..{NUM_FOLDS - 1}, got {k}')
  return FOLD_PAIRS[k]


def split_folds(fold: int, split: str) -> list[int]:
  """Fold indices that make up `split` ('train' or 'test') of cross-validation fold `fold`."""
  fold_pairs(fold)
  if split == 'test':
    return [fold]
  if split == 'train':
    return [i for i in range(NUM_FOLDS) if i != fold]
  raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def version_dir(root: str | os.PathLike, version: str) -> str:
  """`root/Clean` or `root/Noisy`."""
  if version not in VERSIONS:
    raise ValueError(f'version must be one of {sorted(VERSIONS)}, got {version!r}')
  return os.path.join(os.fspath(root), VERSIONS[version])


def missing_pairs(root: str | os.PathLike, *, version: str,
                  folds: Iterable[int] = range(NUM_FOLDS)) -> dict[int, list[str]]:
  """Fold pairs with no directory under `root/<version>`, per fold (folds with none omitted)."""
  base = version_dir(root, version)
  missing = {}
  for k in folds:
    absent = [p for p in fold_pairs(k) if not os.path.isdir(os.path.join(base, p))]
    if absent:
      missing[k] = absent
  return missing


def read_skeleton_file(path: str | os.PathLike) -> np.ndarray:
  """Parses one `skeleton_pos.txt` into float64 (T, M=2, V=15, 3), still normalised."""
  lines = read_text(path, SKELETON_FILE).splitlines()
  frames = []
  for lineno, line in enumerate(lines, start=1):
    # pandas (the reference's parser) skips blank lines, so we do too.
    if not line.strip():
      continue
    fields = line.split(',')
    if len(fields) != _VALUES_PER_LINE:
      raise DataError(path, f'expected {_VALUES_PER_LINE} comma-separated values (frame number + '
                      f'{NUM_PERSONS}x{NUM_JOINTS}x3), got {len(fields)}', lineno)
    try:
      values = [float(v) for v in fields]
    except ValueError:
      bad = next(v for v in fields if not _is_float(v))
      raise DataError(path, f'non-numeric value {bad.strip()!r}', lineno) from None
    if not all(math.isfinite(v) for v in values):
      raise DataError(path, 'non-finite value', lineno)
    frames.append(values[1:])
  if not frames:
    raise DataError(path, 'empty skeleton file')
  return np.asarray(frames, np.float64).reshape(-1, NUM_PERSONS, NUM_JOINTS, 3)


def _is_float(s: str) -> bool:
  try:
    float(s)
    return True
  except ValueError:
    return False


def _denormalise(xyz: np.ndarray) -> np.ndarray:
  # Same operations in the same order as the reference, so float64 results are identical.
  x = 1280 - xyz[..., 0] * 2560
  y = 960 - xyz[..., 1] * 1920
  z = xyz[..., 2] * 10000 / 7.8125
  return np.stack([x, y, z], axis=-1)


def _fit_length(data: np.ndarray, max_frames: Optional[int]) -> np.ndarray:
  if max_frames is None:
    return data
  if len(data) >= max_frames:
    return data[:max_frames]
  pad = np.zeros((max_frames - len(data),) + data.shape[1:], data.dtype)
  return np.concatenate([data, pad], axis=0)


def load_sequence(path: str | os.PathLike, *, max_frames: Optional[int] = MAX_FRAMES,
                  pad_quirk: bool = True) -> tuple[np.ndarray, int]:
  """One sequence as float32 (T, V, M, 3) in de-normalised units, and its length.

  max_frames: pad/truncate to this many frames (None keeps the sequence as it is).
  pad_quirk: pad before de-normalising, as the reference does (see the module docstring).
  """
  raw = read_skeleton_file(path)
  if pad_quirk:
    data = _denormalise(_fit_length(raw, max_frames))
    length = len(data)
  else:
    data = _fit_length(_denormalise(raw), max_frames)
    length = min(len(raw), len(data))
  # (T, M, V, C) -> (T, V, M, C)
  return np.ascontiguousarray(data.transpose(0, 2, 1, 3)).astype(np.float32), length


def iter_sbu_samples(root: str | os.PathLike, *, version: str, folds: Sequence[int],
                     max_frames: Optional[int] = MAX_FRAMES,
                     pad_quirk: bool = True) -> Iterator[Sample]:
  """Yields the samples of the pairs in `folds` (in the order given), label by label.

  root: the directory holding `Clean/` and `Noisy/`.
  version: 'clean' or 'noisy'.
  folds: fold indices; use `split_folds(k, 'train'|'test')` for the reference's splits.
  """
  base = version_dir(root, version)
  if not os.path.isdir(base):
    raise DataError(base, 'no such directory')
  for k in folds:
    for pair in fold_pairs(k):
      for label_index, label_dir in enumerate(LABEL_DIRS):
        seq_root = os.path.join(base, pair, label_dir)
        if not os.path.isdir(seq_root):
          continue
        for seq in sorted(os.listdir(seq_root)):
          seq_dir = os.path.join(seq_root, seq)
          if seq.startswith('.') or not os.path.isdir(seq_dir):
            continue
          skeleton, length = load_sequence(os.path.join(seq_dir, SKELETON_FILE),
                                           max_frames=max_frames, pad_quirk=pad_quirk)
          yield Sample(skeleton=skeleton, length=length, label=label_index,
                       sample_name=f'{pair}/{label_dir}/{seq}')
