"""Assembly101 reader: fine-grained segment csvs plus `poses_60fps/<video>.json` hand landmarks.

Owns turning the raw download into `Sample`s, following the reference's two preprocessing stages
(`data/asb/Preprocess*/1_generate_pose_data.py` then `2_get_final_dataset.py`) and its feeder:

  <root>/fine-grained-annotations/train.csv, validation.csv   (frames at 60 fps, 13 columns:
      id,video,start_frame,end_frame,action_id,verb_id,noun_id,action_cls,verb_cls,noun_cls,
      toy_id,toy_name,is_shared; these are the MS-G3D csvs of the assembly101-action-recognition
      repository, not the 30 fps csvs of the annotation drive)
  <root>/fine-grained-annotations/test_challenge.csv         (frames at 30 fps, 5 columns:
      id,video,start_frame,end_frame,is_shared)
  <root>/poses_60fps/<video>.json   a list with one entry per 60 fps frame:
      {"landmarks": {"0": [[x, y, z] * 21], "1": [[x, y, z] * 21]},
       "tracking_confidence": {"0": c, "1": c}}

What a sample is, as in the reference:
  * The first csv row is a header and is discarded; columns are taken by position.
  * Test frames are converted to 60 fps as `2*f + 1`.
  * Frames `max(0, s-25) .. min(e+25, len-1)` (inclusive) of the video's pose list are taken, both
    hands, all 21 landmarks, exactly as stored: `tracking_confidence` is ignored, so lost hands stay
    zeros, and frames where both hands are lost stay all-zero inside the sequence (the feeder's
    `valid_frame_num` counts non-zero frames but crops from frame 0, so such gaps later cost the
    last real frames; that crop is applied downstream, not here).
  * The sequence is cut to its first 200 frames; a shorter one is zero-padded at the end (the
    reference's comments promise tile-repeating, but its `sel_val` is computed before the tile, so
    the tile never reaches the output).
  * train/validation: a segment whose json is missing, or whose window is empty (the segment starts
    past the end of the pose list), is skipped. The reference skips silently; we warn by default.
  * test: such a segment becomes 10 frames of ones (then zero-padded like any other) and is flagged
    with `Assembly101Sample.pose_missing`, so that a submission tool can mark its prediction.

Order (the reference's final order comes from `os.listdir`, which is not reproducible):
  * train/validation follow the reference's step-1 counter order: videos in sorted order of their
    json *file names* (so `v-2.json` sorts before `v.json`), and within a video segments by
    `start_frame`, stable (ties keep csv order). Sample i is the reference's `tr<i>_...` /
    `va<i>_...` file.
  * test follows the csv, whose ids must be 0..N-1 in row order (the reference asserts this).

Malformed input raises `DataError` (file, csv line where there is one): a csv that is empty, has
the wrong column count, a non-integer id/frame/label, a label out of range or a duplicate id; a pose
json that does not parse, is not a list, or whose frames (from the first to the last frame any of
the video's segments needs) lack `landmarks` "0"/"1", hold other than 21 xyz numbers, or hold
non-finite values. The reference's `np.array(..., dtype='float32')` would turn null into NaN and
numeric strings into numbers; we refuse both.

Labels are the csv's 0-based `action_id`, `verb_id` or `noun_id` depending on `task`; all three are
checked against 1380 / 24 / 90 classes. Test labels are -1.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import warnings
from typing import Iterator, Optional

import numpy as np

from data_pipelines.common import DataError, Sample, read_text

NUM_CLASSES = {'action': 1380, 'verb': 24, 'noun': 90}
NUM_JOINTS = 21
NUM_HANDS = 2
CONTEXT = 25
MAX_FRAMES = 200
# The reference's stand-in for a test segment without poses: this many frames of ones.
MISSING_POSE_FRAMES = 10

SPLITS = ('train', 'validation', 'test')
CSV_NAMES = {'train': 'train.csv', 'validation': 'validation.csv', 'test': 'test_challenge.csv'}
LABELED_COLUMNS = ('id', 'video', 'start_frame', 'end_frame', 'action_id', 'verb_id', 'noun_id',
                   'action_cls', 'verb_cls', 'noun_cls', 'toy_id', 'toy_name', 'is_shared')
TEST_COLUMNS = ('id', 'video', 'start_frame', 'end_frame', 'is_shared')
ANNOTATION_DIR = 'fine-grained-annotations'
POSE_DIR = 'poses_60fps'


@dataclasses.dataclass
class Assembly101Sample(Sample):
  """A `Sample` plus where it came from.

  start_frame/end_frame: the segment at 60 fps (test rows already converted with `2*f + 1`).
  raw_length: frames in the context window before the 200-frame cap (the reference's `_len<T>`).
  pose_missing: test only; True where the reference substituted 10 frames of ones.
  sample_name is `<video>:<start_frame>:<end_frame>:<id>` (60 fps frames, csv id), unique because
  ids are (train/validation: checked unique; test: the row positions).
  """

  video: str = ''
  start_frame: int = 0
  end_frame: int = 0
  raw_length: int = 0
  pose_missing: bool = False


@dataclasses.dataclass(frozen=True)
class Segment:
  """One csv row. Frames are at 60 fps; `line` is the csv line the row ends on."""

  line: int
  id: int
  video: str
  start_frame: int
  end_frame: int
  action: int = -1
  verb: int = -1
  noun: int = -1
  action_cls: str = ''


def _int_field(path, line, name, text):
  try:
    return int(text.strip())
  except ValueError:
    raise DataError(path, f'non-numeric {name} {text!r}', line) from None


def read_segments(csv_path: str | os.PathLike, split: str) -> list[Segment]:
  """Parses one split's csv, in row order, with test frames converted to 60 fps."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  columns = TEST_COLUMNS if split == 'test' else LABELED_COLUMNS
  text = read_text(csv_path, 'annotation csv', newline='', encoding='utf-8')
  segments = []
  reader = csv.reader(io.StringIO(text, newline=''))
  header = next(reader, None)
  if header is None:
    raise DataError(csv_path, 'empty csv (no header, no rows)')
  for row in reader:
    line = reader.line_num
    if not row or (len(row) == 1 and not row[0].strip()):
      continue  # pandas skips blank lines too
    if len(row) != len(columns):
      hint = '' if split == 'test' else ' (train/validation need the 60 fps MS-G3D csvs)'
      raise DataError(csv_path, f'expected {len(columns)} columns {",".join(columns)}, got '
                      f'{len(row)}{hint}', line)
    fields = dict(zip(columns, row))
    video = fields['video'].strip()
    if not video:
      raise DataError(csv_path, 'empty video name', line)
    seg_id = _int_field(csv_path, line, 'id', fields['id'])
    start = _int_field(csv_path, line, 'start_frame', fields['start_frame'])
    end = _int_field(csv_path, line, 'end_frame', fields['end_frame'])
    if split == 'test':
      if seg_id != len(segments):
        # The reference asserts that ids are the row positions; its output is indexed by them.
        raise DataError(csv_path, f'id {seg_id} is not the row position {len(segments)}', line)
      segments.append(Segment(line, seg_id, video, 2 * start + 1, 2 * end + 1))
      continue
    labels = {}
    for task in ('action', 'verb', 'noun'):
      value = _int_field(csv_path, line, f'{task}_id', fields[f'{task}_id'])
      if not 0 <= value < NUM_CLASSES[task]:
        raise DataError(csv_path, f'{task}_id {value} out of range [0, {NUM_CLASSES[task]})',
                        line)
      labels[task] = value
    segments.append(Segment(line, seg_id, video, start, end, labels['action'], labels['verb'],
                            labels['noun'], fields['action_cls']))
  if not segments:
    raise DataError(csv_path, 'empty csv (no segments)')
  if split != 'test':
    seen = {}
    for seg in segments:
      if seg.id in seen:
        raise DataError(csv_path, f'duplicate id {seg.id} (first on line {seen[seg.id]})', seg.line)
      seen[seg.id] = seg.line
  return segments


def load_pose_json(path: str | os.PathLike) -> list:
  """Loads one video's pose list (one entry per 60 fps frame)."""
  try:
    with open(path, encoding='utf-8') as f:
      frames = json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(path, f'malformed json: {e}') from None
  except UnicodeDecodeError as e:
    raise DataError(path, f'not a utf-8 json file: {e}') from None
  if not isinstance(frames, list):
    raise DataError(path, f'expected a list of frames, got {type(frames).__name__}')
  return frames


def _check_frame(path, frames, index):
  """Says what is wrong with frame `index`, or None."""
  frame = frames[index]
  try:
    hands = [frame['landmarks'][str(h)] for h in range(NUM_HANDS)]
  except (KeyError, TypeError):
    return (f'frame {index}: expected {{"landmarks": {{"0": [...], "1": [...]}}}}, '
            f'got {str(frame)[:80]}')
  for h, hand in enumerate(hands):
    arr = np.asarray(hand, dtype=object)
    if arr.shape != (NUM_JOINTS, 3):
      return (f'frame {index} hand {h}: expected {NUM_JOINTS} landmarks of xyz, '
              f'got shape {arr.shape}')
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in arr.ravel()):
      return f'frame {index} hand {h}: non-numeric landmark value'
  return None


def pose_array(path: str | os.PathLike, frames: list, lo: int, hi: int) -> np.ndarray:
  """float32 (hi-lo, 2, 21, 3): both hands' landmarks of frames lo..hi-1, as stored."""
  rows = None
  try:
    rows = np.asarray([[frames[i]['landmarks'][str(h)] for h in range(NUM_HANDS)]
                       for i in range(lo, hi)])
  except (KeyError, TypeError, ValueError, IndexError):
    pass
  if (rows is None or rows.shape != (hi - lo, NUM_HANDS, NUM_JOINTS, 3)
      or rows.dtype.kind not in 'fiu'):
    for i in range(lo, hi):
      reason = _check_frame(path, frames, i)
      if reason:
        raise DataError(path, reason)
    raise DataError(path, f'frames {lo}..{hi - 1}: landmarks are not numeric (21, 3) arrays')
  out = rows.astype(np.float32)
  if not np.isfinite(out).all():
    bad = lo + int(np.argwhere(~np.isfinite(out))[0][0])
    raise DataError(path, f'frame {bad}: non-finite landmark value')
  return out


def context_window(start_frame: int, end_frame: int, num_frames: int) -> tuple[int, int]:
  """[lo, hi) of the pose frames a segment takes: 25 frames of context each side, clamped."""
  return max(0, start_frame - CONTEXT), min(end_frame + CONTEXT + 1, num_frames)


def _finish(seq: np.ndarray, max_frames: Optional[int], pad: bool) -> tuple[np.ndarray, int]:
  """(T, 2, 21, 3) -> capped/padded (T', 21, 2, 3) and the number of frames that count."""
  seq = seq.transpose(0, 2, 1, 3)
  if max_frames is None:
    return np.ascontiguousarray(seq), seq.shape[0]
  length = min(seq.shape[0], max_frames)
  if not pad:
    return np.ascontiguousarray(seq[:length]), length
  out = np.zeros((max_frames,) + seq.shape[1:], np.float32)
  out[:length] = seq[:length]
  return out, length


def _check_args(split, task, missing):
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  if task not in NUM_CLASSES:
    raise ValueError(f'task must be one of {tuple(NUM_CLASSES)}, got {task!r}')
  if missing not in ('warn', 'ignore', 'raise'):
    raise ValueError(f"missing must be 'warn', 'ignore' or 'raise', got {missing!r}")


def _list_poses(pose_dir):
  try:
    return set(os.listdir(pose_dir))
  except (FileNotFoundError, NotADirectoryError):
    raise DataError(pose_dir, 'pose directory not found') from None


def iter_assembly101_samples(root: str | os.PathLike, split: str, task: str = 'action', *,
                             max_frames: Optional[int] = MAX_FRAMES, pad: bool = True,
                             missing: str = 'warn', annotation_dir: Optional[str] = None,
                             pose_dir: Optional[str] = None) -> Iterator[Assembly101Sample]:
  """Yields one split's samples in the reference's order (see the module docstring).

  Args:
    root: the download root holding `fine-grained-annotations/` and `poses_60fps/`.
    split: 'train', 'validation' or 'test'.
    task: 'action' | 'verb' | 'noun': which csv column becomes `label` (-1 for test).
    max_frames: the frame cap (the reference's 200); None keeps every frame and never pads.
    pad: zero-pad to `max_frames` frames, as the reference's arrays are. `length` is the number of
      frames before padding either way.
    missing: train/validation segments without poses (no json, or an empty window) are skipped as
      in the reference; 'warn' (default) also names the file, 'ignore' is silent, 'raise' raises
      `DataError` instead. Test segments without poses always become 10 frames of ones.
    annotation_dir, pose_dir: override `<root>/fine-grained-annotations` and `<root>/poses_60fps`.
  """
  _check_args(split, task, missing)
  annotation_dir = annotation_dir or os.path.join(root, ANNOTATION_DIR)
  pose_dir = pose_dir or os.path.join(root, POSE_DIR)
  csv_path = os.path.join(annotation_dir, CSV_NAMES[split])
  segments = read_segments(csv_path, split)
  available = _list_poses(pose_dir)
  if split == 'test':
    yield from _iter_test(segments, pose_dir, available, max_frames, pad)
  else:
    yield from _iter_labeled(segments, split, task, pose_dir, available, max_frames, pad, missing,
                             csv_path)


def _no_pose(missing, path, reason):
  if missing == 'raise':
    raise DataError(path, reason)
  if missing == 'warn':
    warnings.warn(f'{path}: {reason}; skipped as in the reference', stacklevel=3)


def _iter_labeled(segments, split, task, pose_dir, available, max_frames, pad, missing, csv_path):
  by_video = {}
  for seg in segments:
    by_video.setdefault(seg.video + '.json', []).append(seg)
  for name in sorted(by_video):
    video_segments = sorted(by_video[name], key=lambda s: s.start_frame)
    path = os.path.join(pose_dir, name)
    if name not in available:
      _no_pose(missing, path, f'pose file missing for {len(video_segments)} segment(s) of '
               f'{csv_path} (first on line {min(s.line for s in video_segments)})')
      continue
    frames = load_pose_json(path)
    windows = [context_window(s.start_frame, s.end_frame, len(frames)) for s in video_segments]
    kept = [(s, w) for s, w in zip(video_segments, windows) if w[1] > w[0]]
    for s, (lo, hi) in zip(video_segments, windows):
      if hi <= lo:
        _no_pose(missing, path, f'no pose frames for segment {s.start_frame}..{s.end_frame} '
                 f'({len(frames)} frames; {csv_path} line {s.line})')
    if not kept:
      continue
    # One conversion per video: overlapping windows share their frames.
    first = min(lo for _, (lo, _) in kept)
    poses = pose_array(path, frames, first, max(hi for _, (_, hi) in kept))
    for seg, (lo, hi) in kept:
      skeleton, length = _finish(poses[lo - first:hi - first], max_frames, pad)
      yield Assembly101Sample(
          skeleton=skeleton, length=length, label=getattr(seg, task),
          sample_name=f'{seg.video}:{seg.start_frame}:{seg.end_frame}:{seg.id}', id=seg.id,
          verb=seg.verb, noun=seg.noun, video=seg.video, start_frame=seg.start_frame,
          end_frame=seg.end_frame, raw_length=hi - lo)


def _iter_test(segments, pose_dir, available, max_frames, pad):
  cached_name, frames = None, None
  for seg in segments:
    name = seg.video + '.json'
    path = os.path.join(pose_dir, name)
    seq = None
    if name in available:
      if name != cached_name:
        # Test rows are grouped by video, so keeping the last video avoids reloading it.
        cached_name, frames = name, load_pose_json(path)
      lo, hi = context_window(seg.start_frame, seg.end_frame, len(frames))
      if hi > lo:
        seq = pose_array(path, frames, lo, hi)
    pose_missing = seq is None
    if pose_missing:
      seq = np.ones((MISSING_POSE_FRAMES, NUM_HANDS, NUM_JOINTS, 3), np.float32)
    skeleton, length = _finish(seq, max_frames, pad)
    yield Assembly101Sample(
        skeleton=skeleton, length=length, label=-1,
        sample_name=f'{seg.video}:{seg.start_frame}:{seg.end_frame}:{seg.id}', id=seg.id,
        video=seg.video, start_frame=seg.start_frame, end_frame=seg.end_frame,
        raw_length=seq.shape[0], pose_missing=pose_missing)
