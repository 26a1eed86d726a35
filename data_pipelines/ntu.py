"""NTU RGB+D 60/120 raw reader: `.skeleton` text files to per-sample float32 arrays.

This module owns everything between the files a user downloads (`nturgb+d_skeletons/`, and for
NTU120 setups 18-32 `nturgb+d_skeletons120/`) and one `Sample` per sequence, reproducing the
reference's three scripts (`data/ntu120/get_raw_skes_data.py`, `get_raw_denoised_data.py`,
`seq_transformation.py`) and the class filter of `feeders/feeder_ntu.py`, file by file, with
no dataset-wide arrays.

Per file (see `process_skeleton_file`), bit-exact with the reference in float32:
  1. Frames with no body are deleted; a body's frames are indexed over the remaining frames and
     its gaps are squeezed out (each appearance is the previous index + 1), so a body that
     disappears and reappears is shifted earlier and leaves zeros at its end.
  2. With >= 2 bodyIDs: motion = sum over xyz of the variance of all its joint rows; bodies of
     <= 11 frames are dropped; then, in order of first appearance and stopping as soon as one
     body is left (so the last body is never tested), a body with >= 69.754% frames whose x
     spread exceeds 0.8 * y spread is dropped, otherwise its motion becomes
     min(motion, motion over its non-noisy frames).
  3. Actor assignment in order of decreasing motion: a body goes to actor 1 if its range does
     not overlap actor 1's, else to actor 2 by the same test, else it is dropped. Ranges that
     share one frame count as disjoint and the later body overwrites that frame. Actor 2's
     range starts as the virtual [0, 0] and is widened with min/max, so it always starts at 0
     (a later ID of actor 2 that begins before actor 2's end is dropped).
  4. With >= 2 bodyIDs, frames whose values sum to exactly 0 are removed.
  5. The origin (joint index 1, spine mid, of actor 1 in its first non-zero frame) is
     subtracted everywhere; in two-actor output, frames where an actor summed to 0 before
     the shift are set back to 0. A single actor is duplicated into both person slots (also
     for mutual actions where only one body survived), as `data/ntu120/seq_transformation.py`
     does; for NTU 60 (`dataset='ntu60'`) the second slot stays zero, as `data/ntu/`'s does.
The float32 reductions (np.var for motion, row sums for the zero tests) are the reference's own
calls on arrays of the same layout, so outputs are bit-identical, not merely close.

Deviations, all where the reference crashes or would accept a malformed file:
  * >= 2 bodyIDs that all have <= 11 frames (reference: IndexError): we keep the longest of
    them (the first one on ties) and go on as if one body had survived denoising.
  * A body whose squeezed range runs past the sequence (a bodyID repeated within a frame;
    reference: broadcast ValueError), or an actor 1 that is zero everywhere (reference:
    IndexError), raises DataError.
  * Parsing is stricter: body lines must have 10 values and joint lines 12, and non-blank
    text after the last frame is an error (the reference ignores it).

Dataset level (see `iter_ntu_samples`): the sample order is the reference's split order
(grouped by performer / setup / camera in ascending id order, name order inside a group),
the label is `action - 1`, and the class subsets are the feeder's. The reference pads every
sequence with zeros to the largest frame count of the whole prepared set (all 120 classes,
train and test), not to 300; samples here are unpadded and `pad_like_reference` does that
padding when wanted. The samples of NTU's missing-skeleton list are left out unread, as the
reference's scripts leave them out (`missing_skeletons`); any other file whose every frame is
empty is skipped with a warning.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import importlib.resources
import itertools
import multiprocessing
import operator
import os
import re
import warnings
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from data_pipelines.common import DataError, Sample, read_text

NUM_JOINTS = 25
NUM_PERSONS = 2
SKELETON_DIR = 'nturgb+d_skeletons'
SKELETON_DIR_120 = 'nturgb+d_skeletons120'
# The reference reads setups >= 18 from the second directory (`int(name[1:4]) >= 18`).
FIRST_SETUP_120 = 18

NOISE_LENGTH_MAX = 11
NOISE_SPREAD_RATIO = 0.8
NOISE_SPREAD_FRACTION = 0.69754
ORIGIN_JOINT = 1

# The official NTU120 cross-subject training performers (also the reference's list).
NTU120_XSUB_TRAIN = frozenset((
    1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38, 45, 46, 47, 49,
    50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91, 92, 93,
    94, 95, 97, 98, 100, 103))
NTU60_XSUB_TRAIN = frozenset((
    1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38))
NTU60_XVIEW_TRAIN = frozenset((2, 3))

_RANGES = {  # inclusive id ranges of each name field, NTU120 (NTU60 is the first 17 setups)
    'setup': (1, 32), 'camera': (1, 3), 'performer': (1, 106), 'replication': (1, 2),
    'action': (1, 120)}
_NAME_RE = re.compile(r'S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})')
_XYZ = operator.itemgetter(0, 1, 2)

CLASS_SUBSETS = ('mutual26', 'mutual11', 'all120')
BENCHMARKS = {'ntu120': ('xsub', 'xset'), 'ntu60': ('xsub', 'xview')}


class EmptySkeletonError(DataError):
  """Every frame of the file has zero bodies (the reference asserts; the dataset skips it)."""


# ----------------------------------------------------------------------------- names

@dataclasses.dataclass(frozen=True)
class NtuName:
  """The fields of `SsssCcccPpppRrrrAaaa`, 1-based as written."""
  setup: int
  camera: int
  performer: int
  replication: int
  action: int

  @property
  def label(self) -> int:
    return self.action - 1


def parse_ntu_name(name: str, path: Optional[str | os.PathLike] = None) -> NtuName:
  """Parses a sample name (file stem); raises DataError for a bad pattern or id range."""
  where = name if path is None else path
  match = _NAME_RE.fullmatch(name)
  if match is None:
    raise DataError(where, f'name {name!r} does not match SsssCcccPpppRrrrAaaa')
  fields = NtuName(*(int(g) for g in match.groups()))
  for field, (lo, hi) in _RANGES.items():
    value = getattr(fields, field)
    if not lo <= value <= hi:
      raise DataError(where, f'{field} {value} out of range {lo}..{hi}')
  return fields


def class_label(label: int, classes: str) -> int:
  """Maps a 0-based NTU120 label to the subset's label, or -1 when the subset drops it.

  mutual26 is the feeder's mapping: 49..59 (A050-A060) -> 0..10, 105..119 (A106-A120) ->
  11..25; mutual11 keeps only 49..59 -> 0..10; all120 keeps the label.
  """
  if classes not in CLASS_SUBSETS:
    raise ValueError(f'classes must be one of {CLASS_SUBSETS}, got {classes!r}')
  if classes == 'all120':
    return label
  if 49 <= label <= 59:
    return label - 49
  if classes == 'mutual26' and label >= 105:
    return label - 94
  return -1


def split_group(fields: NtuName, benchmark: str, split: str, dataset: str = 'ntu120'
                ) -> Optional[int]:
  """The id the reference groups by if the sample belongs to `split`, else None.

  xsub groups by performer, xset by setup (even = train), xview by camera (2, 3 = train).
  Sorting members by (group id, name) gives the reference's split order.
  """
  if benchmark not in BENCHMARKS.get(dataset, ()):
    raise ValueError(f'benchmark {benchmark!r} is not defined for {dataset!r}; '
                     f'use one of {BENCHMARKS.get(dataset)}')
  if split not in ('train', 'test'):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  if benchmark == 'xsub':
    group = fields.performer
    is_train = group in (NTU120_XSUB_TRAIN if dataset == 'ntu120' else NTU60_XSUB_TRAIN)
  elif benchmark == 'xset':
    group = fields.setup
    is_train = group % 2 == 0
  else:
    group = fields.camera
    is_train = group in NTU60_XVIEW_TRAIN
  return group if is_train == (split == 'train') else None


def is_train(fields: NtuName, benchmark: str, dataset: str = 'ntu120') -> bool:
  return split_group(fields, benchmark, 'train', dataset) is not None


# ----------------------------------------------------------------------------- parsing

@dataclasses.dataclass
class RawSkeleton:
  """A `.skeleton` file as written: per frame its bodies, in file order.

  bodies_per_frame: int (F,), the body count of each frame (0 for empty frames).
  body_ids: one bodyID string per body entry, frame-major.
  joints: float32 (N, 25, 3), x, y, z of each body entry (N = bodies_per_frame.sum()).
  """

  bodies_per_frame: np.ndarray
  body_ids: list[str]
  joints: np.ndarray

  @property
  def frames(self) -> list[list[tuple[str, np.ndarray]]]:
    """The same data as one list of (bodyID, (25, 3) joints) per frame."""
    out, start = [], 0
    for count in self.bodies_per_frame.tolist():
      out.append([(self.body_ids[i], self.joints[i]) for i in range(start, start + count)])
      start += count
    return out


def _count(lines: list[str], index: int, path, what: str) -> int:
  if index >= len(lines):
    raise DataError(path, f'file ends before the {what}', line=index + 1)
  text = lines[index].strip()
  try:
    value = int(text)
  except ValueError:
    raise DataError(path, f'{what} {text!r} is not an integer', line=index + 1) from None
  if value < 0:
    raise DataError(path, f'negative {what} {value}', line=index + 1)
  return value


def _locate_bad_value(lines, block_starts, path):
  for start in block_starts:
    for line in range(start, start + NUM_JOINTS):
      values = lines[line].split()[:3]
      try:
        np.array(values, dtype=np.float32)
      except ValueError:
        raise DataError(path, f'non-numeric joint value in {values}', line=line + 1) from None
  raise DataError(path, 'non-numeric joint value')


def parse_skeleton_file(path: str | os.PathLike) -> RawSkeleton:
  """Reads one `.skeleton` file.

  Format: the frame count; per frame the body count; per body a line of 10 values starting
  with the bodyID, the joint count (must be 25), then 25 lines of 12 values of which the
  first three (x, y, z, metres) are used and parsed as float32 the way the reference does.
  Only x, y, z are converted; the other values are only counted. Blank lines after the last
  frame are allowed, anything else there is an error.

  Raises DataError naming the file and line for a missing file, a truncated file, a wrong
  count, a wrong number of values on a line, or a non-numeric x/y/z.
  """
  lines = read_text(path, 'skeleton file').split('\n')
  if lines[-1] == '':  # the final newline ends the last line, it does not start another
    lines.pop()

  num_frames = _count(lines, 0, path, 'frame count')
  bodies_per_frame = np.zeros(num_frames, dtype=np.int64)
  body_ids, xyz_tokens, block_starts = [], [], []
  pos = 1
  for frame in range(num_frames):
    num_bodies = _count(lines, pos, path, f'body count of frame {frame + 1}')
    bodies_per_frame[frame] = num_bodies
    pos += 1
    for _ in range(num_bodies):
      if pos >= len(lines):
        raise DataError(path, f'file ends before a body line of frame {frame + 1}',
                        line=pos + 1)
      info = lines[pos].split()
      if len(info) != 10:
        raise DataError(path, f'body line has {len(info)} values, expected 10', line=pos + 1)
      body_ids.append(info[0])
      num_joints = _count(lines, pos + 1, path, 'joint count')
      if num_joints != NUM_JOINTS:
        raise DataError(path, f'joint count {num_joints}, expected {NUM_JOINTS}', line=pos + 2)
      pos += 2
      if pos + NUM_JOINTS > len(lines):
        raise DataError(path, f'file ends inside the joints of frame {frame + 1}',
                        line=len(lines) + 1)
      rows = list(map(str.split, lines[pos:pos + NUM_JOINTS]))
      # Every line on its own: a block's total alone misses a line of 13 beside one of 11.
      if list(map(len, rows)).count(12) != NUM_JOINTS:
        offset, row = next((o, r) for o, r in enumerate(rows) if len(r) != 12)
        raise DataError(path, f'joint line has {len(row)} values, expected 12',
                        line=pos + offset + 1)
      xyz_tokens.extend(itertools.chain.from_iterable(map(_XYZ, rows)))
      block_starts.append(pos)
      pos += NUM_JOINTS
  for line in range(pos, len(lines)):
    if lines[line].strip():
      raise DataError(path, f'unexpected content after the last of {num_frames} frames',
                      line=line + 1)
  try:
    joints = np.array(xyz_tokens, dtype=np.float32).reshape(-1, NUM_JOINTS, 3)
  except ValueError:
    _locate_bad_value(lines, block_starts, path)
  return RawSkeleton(bodies_per_frame, body_ids, joints)


# ----------------------------------------------------------------------------- denoising

@dataclasses.dataclass(eq=False)  # identity equality: list.remove must not compare arrays
class _Body:
  body_id: str
  start: int            # first (squeezed) frame index
  joints: np.ndarray    # float32 (n, 25, 3)
  motion: Optional[np.float32] = None

  @property
  def end(self) -> int:  # the reference's interval[-1]
    return self.start + len(self.joints) - 1


def _collect_bodies(raw: RawSkeleton) -> tuple[list[_Body], int]:
  """Bodies in order of first appearance, frame indices over non-empty frames only."""
  frame_of_entry = np.repeat(np.cumsum(raw.bodies_per_frame > 0) - 1, raw.bodies_per_frame)
  entries: dict[str, list[int]] = {}
  for index, body_id in enumerate(raw.body_ids):
    entries.setdefault(body_id, []).append(index)
  bodies = [_Body(body_id, int(frame_of_entry[idx[0]]), raw.joints[idx])
            for body_id, idx in entries.items()]
  return bodies, int(np.count_nonzero(raw.bodies_per_frame))


def _motion(joints: np.ndarray) -> np.float32:
  # Same float32 reduction as the reference: variance over all (frames x 25) joint rows.
  return np.sum(np.var(joints.reshape(-1, 3), axis=0))


def _spread_valid(joints: np.ndarray) -> np.ndarray:
  x, y = joints[:, :, 0], joints[:, :, 1]
  # NumPy 2 keeps this comparison in float32 (NEP 50), as the reference does under numpy 2.
  return (x.max(axis=1) - x.min(axis=1)) <= NOISE_SPREAD_RATIO * (y.max(axis=1) - y.min(axis=1))


def _denoise(bodies: list[_Body]) -> list[_Body]:
  """Length then spread denoising; returns the survivors sorted by decreasing motion."""
  for body in bodies:
    body.motion = _motion(body.joints)
  kept = [b for b in bodies if len(b.joints) > NOISE_LENGTH_MAX]
  if not kept:
    # The reference crashes here; keep the longest body instead (first one on ties).
    return [max(bodies, key=lambda b: len(b.joints))]
  if len(kept) == 1:
    return kept
  survivors = list(kept)
  for body in kept:
    if len(survivors) == 1:
      break
    valid = _spread_valid(body.joints)
    num_noise = len(valid) - int(np.count_nonzero(valid))
    if num_noise == 0:
      continue
    if num_noise / float(len(valid)) >= NOISE_SPREAD_FRACTION:
      survivors.remove(body)
    else:
      body.motion = min(body.motion, _motion(body.joints[valid]))
  if len(survivors) == 1:
    return survivors
  return sorted(survivors, key=lambda b: b.motion, reverse=True)  # stable: ties keep order


def _place(out: np.ndarray, body: _Body, column: int, path) -> None:
  if body.end >= out.shape[0]:
    # Only a bodyID repeated inside one frame can run past the end; the reference crashes.
    raise DataError(path, f'bodyID {body.body_id} has {len(body.joints)} entries, more than '
                    f'the frames it can occupy (bodyID repeated within a frame?)')
  out[body.start:body.end + 1, column:column + 75] = body.joints.reshape(-1, 75)


def _assign_actors(bodies: list[_Body], num_frames: int, path) -> np.ndarray:
  """(T, 150) actor 1 | actor 2, the reference's greedy interval assignment."""
  joints = np.zeros((num_frames, 150), dtype=np.float32)
  actor1, rest = bodies[0], bodies[1:]
  _place(joints, actor1, 0, path)
  start1, end1 = actor1.start, actor1.end
  start2, end2 = 0, 0  # the reference's virtual initial interval of actor 2
  for body in rest:
    start, end = body.start, body.end
    if min(end1, end) - max(start1, start) <= 0:
      _place(joints, body, 0, path)
      start1, end1 = min(start, start1), max(end, end1)
    elif min(end2, end) - max(start2, start) <= 0:
      _place(joints, body, 75, path)
      start2, end2 = min(start, start2), max(end, end2)
  return joints


def _translate(joints: np.ndarray, path) -> np.ndarray:
  """Subtracts actor 1's spine-mid in its first non-zero frame; keeps empty actors at zero."""
  nonzero = np.flatnonzero(np.any(joints[:, :75] != 0, axis=1))
  if nonzero.size == 0:
    raise DataError(path, 'actor 1 is zero in every frame, no origin to translate to')
  origin = joints[nonzero[0], 3 * ORIGIN_JOINT:3 * ORIGIN_JOINT + 3].copy()
  if joints.shape[1] == 75:
    return joints - np.tile(origin, 25)
  missing1 = joints[:, :75].sum(axis=1) == 0
  missing2 = joints[:, 75:].sum(axis=1) == 0
  joints = joints - np.tile(origin, 50)
  joints[missing1, :75] = 0
  joints[missing2, 75:] = 0
  return joints


def denoise_skeleton(raw: RawSkeleton, path: str | os.PathLike = '<skeleton>',
                     dataset: str = 'ntu120') -> np.ndarray:
  """The reference's per-file pipeline on parsed data; float32 (T, 25, 2, 3). `dataset` picks
  the single-actor rule of that release's scripts (module docstring, step 5)."""
  if dataset not in BENCHMARKS:
    raise ValueError(f'dataset must be one of {tuple(BENCHMARKS)}, got {dataset!r}')
  bodies, num_frames = _collect_bodies(raw)
  if num_frames == 0:
    raise EmptySkeletonError(path, f'all {len(raw.bodies_per_frame)} frames have no body')
  if len(bodies) == 1:
    joints = np.zeros((num_frames, 75), dtype=np.float32)
    _place(joints, bodies[0], 0, path)
  else:
    survivors = _denoise(bodies)
    if len(survivors) == 1:
      joints = np.zeros((num_frames, 75), dtype=np.float32)
      _place(joints, survivors[0], 0, path)
    else:
      joints = _assign_actors(survivors, num_frames, path)
    # Same (T, 75|150) float32 row sum as the reference, so the == 0 test agrees bit for bit.
    joints = joints[joints.sum(axis=1) != 0]
    if joints.shape[0] == 0:
      raise DataError(path, 'every frame is zero after denoising')
  joints = _translate(joints, path)
  if joints.shape[1] == 75:
    second = joints if dataset == 'ntu120' else np.zeros_like(joints)
    joints = np.concatenate([joints, second], axis=1)
  return np.ascontiguousarray(
      joints.reshape(-1, NUM_PERSONS, NUM_JOINTS, 3).transpose(0, 2, 1, 3))


def process_skeleton_file(path: str | os.PathLike, dataset: str = 'ntu120') -> np.ndarray:
  """Parses and denoises one file: float32 (T, 25, 2, 3), T = the reference's frame count
  before dataset-wide padding. Raises EmptySkeletonError when every frame is empty."""
  return denoise_skeleton(parse_skeleton_file(path), path, dataset)


def pad_like_reference(skeleton: np.ndarray, max_frames: int) -> np.ndarray:
  """Zero-pads (T, ...) at the end to `max_frames`, the reference's `align_frames`; the
  reference uses the largest T over the whole prepared set (all classes, both splits)."""
  if skeleton.shape[0] > max_frames:
    raise ValueError(f'{skeleton.shape[0]} frames do not fit in {max_frames}')
  pad = [(0, max_frames - skeleton.shape[0])] + [(0, 0)] * (skeleton.ndim - 1)
  return np.pad(skeleton, pad)


# ----------------------------------------------------------------------------- dataset

@dataclasses.dataclass(frozen=True)
class NtuTask:
  """One file to read, as `list_ntu_files` orders them; picklable for process pools."""
  path: str
  name: str
  label: int  # the subset's label
  dataset: str = 'ntu120'  # the release whose scripts prepare it (`denoise_skeleton`)


def _as_roots(skeleton_dirs) -> list[str]:
  if isinstance(skeleton_dirs, (str, os.PathLike)):
    return [os.fspath(skeleton_dirs)]
  return [os.fspath(d) for d in skeleton_dirs]


def _scan(roots: list[str], dataset: str) -> dict[str, str]:
  """name -> path of every `.skeleton` file where the reference would look for it."""
  found: dict[str, str] = {}
  misplaced: list[str] = []
  any_dir = False
  for root in roots:
    for sub, wants_120 in ((SKELETON_DIR, False), (SKELETON_DIR_120, True)):
      directory = os.path.join(root, sub)
      if not os.path.isdir(directory):
        continue
      any_dir = True
      for entry in os.listdir(directory):
        if not entry.endswith('.skeleton'):
          continue
        name, path = entry[:-len('.skeleton')], os.path.join(directory, entry)
        fields = parse_ntu_name(name, path)
        if (fields.setup >= FIRST_SETUP_120) != wants_120:
          misplaced.append(path)
          continue
        if dataset == 'ntu60' and fields.setup >= FIRST_SETUP_120:
          continue
        if name in found:
          raise DataError(path, f'sample {name} also found at {found[name]}')
        found[name] = path
  if not any_dir:
    raise DataError(roots[0] if len(roots) == 1 else ', '.join(roots),
                    f'no {SKELETON_DIR}/ or {SKELETON_DIR_120}/ directory found')
  if misplaced:
    warnings.warn(f'ignored {len(misplaced)} .skeleton files in the wrong directory (setups '
                  f'< {FIRST_SETUP_120} belong in {SKELETON_DIR}/, the others in '
                  f'{SKELETON_DIR_120}/, as the reference reads them), e.g. {misplaced[0]}')
  return found


@functools.cache
def missing_skeletons() -> frozenset[str]:
  """NTU RGB+D 120's 535 samples with missing skeletons (NTU 60's 302 among them), which the
  reference's scripts leave out (`statistics/skes_available_name.txt` lists the others): the
  names NTU publishes as `NTU_RGBD120_samples_with_missing_skeletons.txt`, kept beside this
  module. Files of theirs that are not entirely empty would otherwise be read."""
  text = importlib.resources.files('data_pipelines').joinpath(
      'ntu_missing_skeletons.txt').read_text()
  return frozenset(text.split())


def list_ntu_files(skeleton_dirs: str | os.PathLike | Sequence[str | os.PathLike], *,
                   benchmark: str, split: str, classes: str = 'mutual26',
                   dataset: str = 'ntu120', exclude: Optional[Iterable[str]] = None
                   ) -> list[NtuTask]:
  """The files of one split and class subset, in the reference's order; reads no file.

  skeleton_dirs: one directory, or several, each holding `nturgb+d_skeletons/` (setups
    1-17) and/or `nturgb+d_skeletons120/` (setups 18-32).
  benchmark: 'xsub' or 'xset' for dataset='ntu120'; 'xsub' or 'xview' for 'ntu60' (which
    keeps only setups 1-17).
  exclude: sample names to leave out without reading them; None: NTU's list of samples with
    missing skeletons (`missing_skeletons()`), as the reference's scripts leave them out.
  """
  if classes not in CLASS_SUBSETS:
    raise ValueError(f'classes must be one of {CLASS_SUBSETS}, got {classes!r}')
  if dataset not in BENCHMARKS:
    raise ValueError(f'dataset must be one of {tuple(BENCHMARKS)}, got {dataset!r}')
  excluded = missing_skeletons() if exclude is None else frozenset(exclude)
  keyed = []
  for name, path in _scan(_as_roots(skeleton_dirs), dataset).items():
    if name in excluded:
      continue
    fields = parse_ntu_name(name, path)
    group = split_group(fields, benchmark, split, dataset)
    label = class_label(fields.label, classes)
    if group is not None and label >= 0:
      keyed.append(((group, name), NtuTask(path, name, label, dataset)))
  keyed.sort(key=operator.itemgetter(0))
  return [task for _, task in keyed]


def load_ntu_sample(task: NtuTask) -> Optional[Sample]:
  """Reads one task; None for a file whose every frame is empty. Usable with Pool.imap."""
  try:
    skeleton = process_skeleton_file(task.path, task.dataset)
  except EmptySkeletonError:
    return None
  return Sample(skeleton=skeleton, length=int(skeleton.shape[0]), label=task.label,
                sample_name=task.name)


def iter_ntu_samples(skeleton_dirs: str | os.PathLike | Sequence[str | os.PathLike], *,
                     benchmark: str, split: str, classes: str = 'mutual26',
                     dataset: str = 'ntu120', exclude: Optional[Iterable[str]] = None,
                     num_workers: int = 0, chunksize: int = 16) -> Iterator[Sample]:
  """Yields the split's samples one file at a time, in the reference's order.

  See `list_ntu_files` for the arguments. Labels are the subset's (`class_label`).
  Files whose every frame is empty are skipped with a warning. num_workers > 0 parses in
  that many spawned processes (order preserved, at most num_workers * chunksize files in
  flight). For your own pool, `list_ntu_files` + `pool.imap(load_ntu_sample, tasks)`.
  """
  tasks = list_ntu_files(skeleton_dirs, benchmark=benchmark, split=split, classes=classes,
                         dataset=dataset, exclude=exclude)

  def emit(task, sample):
    if sample is None:
      warnings.warn(f'{task.path}: skipped, every frame is empty')
    return sample

  if num_workers <= 0:
    for task in tasks:
      sample = emit(task, load_ntu_sample(task))
      if sample is not None:
        yield sample
    return
  # apply_async over a bounded window rather than imap, which would queue every task at
  # once and buffer finished arrays without limit when the consumer is slower.
  max_in_flight = max(1, num_workers * chunksize)
  with multiprocessing.get_context('spawn').Pool(num_workers) as pool:
    pending = collections.deque()
    for task in tasks:
      pending.append((task, pool.apply_async(load_ntu_sample, (task,))))
      if len(pending) >= max_in_flight:
        done, result = pending.popleft()
        sample = emit(done, result.get())
        if sample is not None:
          yield sample
    while pending:
      done, result = pending.popleft()
      sample = emit(done, result.get())
      if sample is not None:
        yield sample
