"""Reader for the raw H2O (two hands + object) action-recognition poses.

This file owns the on-disk format and the reference's clip rule (`data/h2o/generate_h2o.py` and
`feeders/feeder_h2o.py` in ISTA-Net).

On disk (as the H2O download unpacks it):

  <root>/label_split/action_{train,val,test}.txt
      space-separated with a header; we use the columns `id` (the key of a challenge
      submission), `path`, `start_act`, `end_act` and, for train, `action_label` (1..36).
      The test file has no labels.
  <root>/<path>/cam4/hand_pose/%06d.txt      one line: left-hand flag + 21 x xyz, then
                                             right-hand flag + 21 x xyz (128 numbers)
  <root>/<path>/cam4/obj_pose/%06d.txt       one line: object class + 21 x xyz (64 numbers)
  <root>/<path>/cam4/action_label/%06d.txt   the frame's action (train and val recordings)

What the reference does, and so what we do:
  * A clip is frames `start_act..end_act` inclusive.
  * A hand whose flag is 0 is all zeros, even when its coordinates are written. The object class
    is ignored. Entities are ordered left hand, right hand, object.
  * Validation labels come from `cam4/action_label/<start_act>.txt`, not from the split file.
  * Clips are zero-padded at the end to 120 frames; longer clips are centre-cropped, keeping
    frames `(T - 120) // 2` onwards (SBU and Assembly101 keep the first frames instead).
    `length` is the number of real frames kept, min(T, 120).
  * Labels are the file's label - 1 (the feeder's shift); the test split gets -1.
  * float32: each number is parsed as float64 and rounded once to float32, like the reference.

The reference prints a warning for a train label of 0 and would train on label -1; we raise a
`DataError` for any label outside 1..36 instead.

Skeletons come out as (T, V=21, M=3, 3). Sample names are `path:start_act:end_act`.
"""

from __future__ import annotations

import math
import os
from typing import Iterator, Optional

import numpy as np

from data_pipelines.common import DataError, Sample, read_text

NUM_CLASSES = 36
NUM_JOINTS = 21
NUM_ENTITIES = 3  # left hand, right hand, object
MAX_FRAMES = 120
SPLIT_FILES = {'train': 'action_train.txt', 'validation': 'action_val.txt',
               'test': 'action_test.txt'}

_HAND_VALUES = 2 * (1 + NUM_JOINTS * 3)
_OBJ_VALUES = 1 + NUM_JOINTS * 3


def _parse_numbers(path: str, expected: int) -> np.ndarray:
  """The single line of numbers in a pose file, as float64."""
  lines = [l for l in read_text(path, 'pose file').splitlines() if l.strip()]
  if len(lines) != 1:
    raise DataError(path, f'expected exactly 1 line of numbers, got {len(lines)}')
  tokens = lines[0].split()
  if len(tokens) != expected:
    raise DataError(path, f'expected {expected} numbers, got {len(tokens)}', 1)
  values = []
  for token in tokens:
    try:
      value = float(token)
    except ValueError:
      raise DataError(path, f'non-numeric value {token!r}', 1) from None
    if not math.isfinite(value):
      raise DataError(path, f'non-finite value {token!r}', 1)
    values.append(value)
  return np.asarray(values, np.float64)


def read_hand_pose(path: str | os.PathLike) -> np.ndarray:
  """float32 (2, 21, 3): left then right hand; a hand with flag 0 is all zeros."""
  values = _parse_numbers(os.fspath(path), _HAND_VALUES).reshape(2, 1 + NUM_JOINTS * 3)
  hands = values[:, 1:].reshape(2, NUM_JOINTS, 3)
  hands[values[:, 0] == 0] = 0.0
  return hands.astype(np.float32)


def read_object_pose(path: str | os.PathLike) -> np.ndarray:
  """float32 (1, 21, 3): the object's 21 points (the class value is dropped)."""
  values = _parse_numbers(os.fspath(path), _OBJ_VALUES)
  return values[1:].reshape(1, NUM_JOINTS, 3).astype(np.float32)


def _check_label(value: str, path: str, line: Optional[int]) -> int:
  try:
    label = int(value.strip())
  except ValueError:
    raise DataError(path, f'action label {value.strip()!r} is not an integer', line) from None
  if not 1 <= label <= NUM_CLASSES:
    raise DataError(path, f'action label {label} outside 1..{NUM_CLASSES}', line)
  return label


def read_frame_label(root: str | os.PathLike, path: str, frame: int) -> int:
  """The 1-based action label stored for `frame` of recording `path`."""
  label_path = os.path.join(os.fspath(root), path, 'cam4', 'action_label', f'{frame:06d}.txt')
  first = read_text(label_path, 'action label file').split('\n', 1)[0]
  return _check_label(first, label_path, 1)


def read_split_file(path: str | os.PathLike, *, with_label: bool) -> list[dict]:
  """Rows of a `label_split/action_*.txt` file: dicts with id, path, start_act, end_act, line and,
  when `with_label`, the 1-based action_label."""
  path = os.fspath(path)
  lines = read_text(path, 'split file').splitlines()
  if not lines or not lines[0].strip():
    raise DataError(path, 'empty split file (no header)')
  header = lines[0].split()
  needed = ['id', 'path', 'start_act', 'end_act'] + (['action_label'] if with_label else [])
  absent = [c for c in needed if c not in header]
  if absent:
    raise DataError(path, f'header lacks column(s) {absent}', 1)
  column = {name: header.index(name) for name in needed}
  rows = []
  for lineno, line in enumerate(lines[1:], start=2):
    if not line.strip():
      continue
    fields = line.split()
    if len(fields) != len(header):
      raise DataError(path, f'expected {len(header)} fields, got {len(fields)}', lineno)
    row = {'path': fields[column['path']], 'line': lineno}
    for name in ('id', 'start_act', 'end_act'):
      try:
        row[name] = int(fields[column[name]])
      except ValueError:
        raise DataError(path, f'{name} {fields[column[name]]!r} is not an integer',
                        lineno) from None
    if row['end_act'] < row['start_act'] or row['start_act'] < 0:
      raise DataError(path, f'bad frame range {row["start_act"]}..{row["end_act"]}', lineno)
    if with_label:
      row['action_label'] = _check_label(fields[column['action_label']], path, lineno)
    rows.append(row)
  return rows


def load_clip(root: str | os.PathLike, path: str, start: int, end: int, *,
              max_frames: Optional[int] = MAX_FRAMES) -> tuple[np.ndarray, int]:
  """Frames start..end of a recording as float32 (T, V=21, M=3, 3), and the frames kept.

  max_frames: pad to / centre-crop to this many frames (None keeps the clip as it is).
  """
  cam = os.path.join(os.fspath(root), path, 'cam4')
  frames = []
  for t in range(start, end + 1):
    name = f'{t:06d}.txt'
    hands = read_hand_pose(os.path.join(cam, 'hand_pose', name))
    obj = read_object_pose(os.path.join(cam, 'obj_pose', name))
    frames.append(np.concatenate([hands, obj], axis=0))
  clip = np.stack(frames)  # (T, M, V, C)
  if max_frames is not None:
    if len(clip) > max_frames:
      st = (len(clip) - max_frames) // 2
      clip = clip[st:st + max_frames]
    length = len(clip)
    if length < max_frames:
      pad = np.zeros((max_frames - length,) + clip.shape[1:], np.float32)
      clip = np.concatenate([clip, pad], axis=0)
  else:
    length = len(clip)
  return np.ascontiguousarray(clip.transpose(0, 2, 1, 3)), length


def iter_h2o_samples(root: str | os.PathLike, split: str, *,
                     max_frames: Optional[int] = MAX_FRAMES) -> Iterator[Sample]:
  """Yields the clips of `split` ('train', 'validation' or 'test') in split-file order."""
  if split not in SPLIT_FILES:
    raise ValueError(f'split must be one of {sorted(SPLIT_FILES)}, got {split!r}')
  root = os.fspath(root)
  split_path = os.path.join(root, 'label_split', SPLIT_FILES[split])
  for row in read_split_file(split_path, with_label=split == 'train'):
    if split == 'train':
      label = row['action_label'] - 1
    elif split == 'validation':
      label = read_frame_label(root, row['path'], row['start_act']) - 1
    else:
      label = -1
    skeleton, length = load_clip(root, row['path'], row['start_act'], row['end_act'],
                                 max_frames=max_frames)
    yield Sample(skeleton=skeleton, length=length, label=label,
                 sample_name=f'{row["path"]}:{row["start_act"]}:{row["end_act"]}', id=row['id'])
