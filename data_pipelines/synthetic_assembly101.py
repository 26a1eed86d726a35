"""Synthetic Assembly101 download: the raw csvs and `poses_60fps` jsons, small and deterministic.

Owns `write_assembly101_tree`, used by the reader's tests (with expected outputs produced by running
the reference's preprocessing on the same tree) and by demos that train on it.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from data_pipelines.assembly101 import ANNOTATION_DIR, CONTEXT, POSE_DIR

# (action_id, verb_id, noun_id, action_cls, verb_cls, noun_cls), from Assembly101's actions.csv.
ACTIONS = (
    (3, 0, 2, 'pick up screwdriver', 'pick up', 'screwdriver'),
    (4, 1, 2, 'put down screwdriver', 'put down', 'screwdriver'),
    (0, 0, 1, 'pick up screw', 'pick up', 'screw'),
    (2, 1, 1, 'put down screw', 'put down', 'screw'),
    (1, 3, 0, 'rotate partial toy', 'rotate', 'partial toy'),
    (8, 2, 17, 'inspect diagram', 'inspect', 'diagram'),
)
TOYS = (('a30', 'suv'), ('c12', 'excavator'), ('b06b', 'dump truck'))

# Finger directions (radians in the hand plane) for thumb..pinky, and phalanx lengths in mm.
_FINGER_ANGLES = np.array([-0.9, -0.3, 0.0, 0.3, 0.6])
_PHALANX = np.array([35.0, 28.0, 22.0, 18.0])
_HAND_ORIGIN = np.array([[-150.0, 0.0, 450.0], [150.0, 0.0, 450.0]])


def _video_name(user: int, toy: str, stamp: str) -> str:
  return f'nusar-2021_action_both_{user}-{toy}_{user}_user_id_2021-02-{stamp}'


def _hand_shape(spread: np.ndarray) -> np.ndarray:
  """(F, 21, 3) hand landmarks around the wrist for per-frame finger `spread` (F,)."""
  angles = _FINGER_ANGLES[None, :] * spread[:, None]  # (F, 5)
  reach = np.cumsum(_PHALANX)  # (4,)
  x = np.sin(angles)[:, :, None] * reach[None, None, :]
  y = np.cos(angles)[:, :, None] * reach[None, None, :]
  z = np.broadcast_to(-4.0 * np.arange(1, 5), x.shape)
  fingers = np.stack([x, y, z], axis=-1).reshape(len(spread), 20, 3)
  return np.concatenate([np.zeros((len(spread), 1, 3)), fingers], axis=1)


def _verb_motion(verb: int, u: np.ndarray) -> np.ndarray:
  """(F, 3) offset of hand 0 over normalized segment time u in [0, 1]: one trajectory per verb."""
  zero = np.zeros_like(u)
  if verb == 0:  # pick up: lift
    return np.stack([zero, 20 * u, 80 * u], -1)
  if verb == 1:  # put down: lower
    return np.stack([zero, -20 * u, 80 * (1 - u)], -1)
  if verb == 3:  # rotate: circle in the table plane
    return np.stack([40 * np.cos(4 * np.pi * u), 40 * np.sin(4 * np.pi * u), zero], -1)
  if verb == 2:  # inspect: fast small wobble
    return np.stack([zero, 12 * np.sin(16 * np.pi * u), 6 * np.sin(8 * np.pi * u)], -1)
  phase = 0.7 * verb
  return np.stack([30 * np.sin(2 * np.pi * u + phase), zero, 30 * np.cos(2 * np.pi * u + phase)],
                  -1)


def _noun_pose(noun: int, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Hand 1's offset (F, 3) and finger spread (F,): one grip and placement per noun."""
  k = (noun * 7919) % 13  # spreads nouns over distinct placements
  offset = np.stack([np.full_like(u, -60.0 + 10.0 * k), 25 * np.sin(2 * np.pi * u * (1 + k % 3)),
                     np.full_like(u, 30.0 - 5.0 * k)], -1)
  spread = 0.4 + 0.1 * k + 0.15 * np.sin(2 * np.pi * u * (2 + k % 4))
  return offset, spread


def _render_video(rng, num_frames, segments):
  """(num_frames, 2, 21, 3) float64 poses: rest pose plus each segment's class motion."""
  t = np.arange(num_frames)
  drift = np.stack([5 * np.sin(t / 90.0), 5 * np.cos(t / 70.0), 3 * np.sin(t / 50.0)], -1)
  offsets = np.repeat(drift[:, None, :], 2, axis=1)  # (F, 2, 3)
  spread = np.ones((num_frames, 2))
  for seg in segments:
    s, e = seg['start60'], min(seg['end60'], num_frames - 1)
    if e < s:
      continue
    u = np.linspace(0.0, 1.0, e - s + 1)
    _, verb, noun = seg['action'][:3]
    offsets[s:e + 1, 0] += _verb_motion(verb, u)
    noun_offset, noun_spread = _noun_pose(noun, u)
    offsets[s:e + 1, 1] += noun_offset
    spread[s:e + 1, 1] = noun_spread
    spread[s:e + 1, 0] = 1.0 - 0.3 * np.sin(np.pi * u)
  shapes = np.stack([_hand_shape(spread[:, h]) for h in range(2)], axis=1)  # (F, 2, 21, 3)
  poses = shapes + (_HAND_ORIGIN[None] + offsets)[:, :, None, :]
  poses += rng.normal(0.0, 1.0, poses.shape)
  return poses


def _write_json(path, poses, lost_hand, lost_both):
  """One frame entry per row: landmarks rounded to 1e-4 mm as in a float text dump."""
  poses = np.round(poses, 4)
  poses[lost_hand[:, 0], 0] = 0.0
  poses[lost_hand[:, 1], 1] = 0.0
  poses[lost_both] = 0.0
  conf = np.where(poses.any(axis=(2, 3)), 0.9, 0.0)
  frames = [{'landmarks': {'0': p[0].tolist(), '1': p[1].tolist()},
             'tracking_confidence': {'0': c[0], '1': c[1]}}
            for p, c in zip(poses, conf.tolist())]
  with open(path, 'w') as f:
    json.dump(frames, f, separators=(',', ':'))


def _layout_videos(rng, segs, num_videos, gap=(30, 70)):
  """Spreads segments over videos; returns [(segments, num_frames)] with start60/end60 filled."""
  per_video = [segs[i::num_videos] for i in range(num_videos)]
  out = []
  for vi, video_segs in enumerate(per_video):
    t = 5 if vi == 0 else int(rng.integers(30, 60))  # video 0 starts near frame 0: clamped context
    for seg in video_segs:
      seg['start60'] = t
      seg['end60'] = t + seg['duration'] - 1
      t = seg['end60'] + int(rng.integers(*gap))
    # The last segment of video 0 ends 8 frames before the pose list does (context clamping).
    num_frames = video_segs[-1]['end60'] + 9 if vi == 0 else t + CONTEXT
    out.append((video_segs, num_frames))
  return out


def _make_segments(rng, count_per_action, long_every=0):
  segs = []
  for action in ACTIONS:
    for _ in range(count_per_action):
      segs.append({'action': action, 'duration': int(rng.integers(24, 64))})
  order = rng.permutation(len(segs))
  segs = [segs[i] for i in order]
  if segs:
    segs[min(2, len(segs) - 1)]['duration'] = 230  # longer than 200 frames even without context
  return segs


def _add_gaps(rng, num_frames, segments, lost_hand, lost_both):
  """Pose gaps inside segments: a few frames with both hands lost, some with one hand lost."""
  for i, seg in enumerate(segments):
    s, e = seg['start60'], min(seg['end60'], num_frames - 1)
    if e - s < 8:
      continue
    if i % 2 == 0:
      g = int(rng.integers(s + 2, e - 4))
      lost_both[g:g + 3] = True
    h = int(rng.integers(0, 2))
    g = int(rng.integers(s, e - 2))
    lost_hand[g:g + 2, h] = True


def _labeled_rows(video, segs, toy):
  rows = []
  for seg in segs:
    a, v, n, acls, vcls, ncls = seg['action']
    rows.append([video, seg['start60'], seg['end60'], a, v, n, acls, vcls, ncls, toy[0], toy[1]])
  return rows


def write_assembly101_tree(root: str | os.PathLike, *, num_per_class: int = 2,
                           seed: int = 0) -> str:
  """Writes a small Assembly101 download under `root` and returns `root`.

  Tree:
    fine-grained-annotations/train.csv, validation.csv (60 fps, the 13 MS-G3D columns, zero-padded
      numbers as in the real files), test_challenge.csv (30 fps, id,video,start_frame,end_frame,
      is_shared), actions.csv (the six actions used).
    poses_60fps/<video>.json: per 60 fps frame {"landmarks": {"0": 21 xyz, "1": 21 xyz},
      "tracking_confidence": {"0": c, "1": c}}, in mm.

  Classes: the six `ACTIONS` (4 verbs, 4 nouns). Hand 0 follows a verb-specific trajectory, hand 1
  a noun-specific placement, grip and rhythm, plus 1 mm Gaussian noise, so action, verb and noun are
  each learnable. train has `num_per_class` segments per action, validation and test
  `max(1, num_per_class // 2)`.

  Awkward cases: all-zero frames (both hands lost) and single-hand gaps inside segments; one segment
  per split longer than 200 frames; a video whose first segment starts at frame 5 and whose last
  segment ends 8 frames before its pose list does (clamped context); two segments sharing a
  start_frame (stable sort); csv rows shuffled across videos; two video names whose order differs
  with and without the `.json` suffix; train/validation/test rows whose video json is missing; train
  and test rows that start past the end of their video's poses (empty window).
  """
  rng = np.random.default_rng(seed)
  root = os.fspath(root)
  ann_dir = os.path.join(root, ANNOTATION_DIR)
  pose_dir = os.path.join(root, POSE_DIR)
  os.makedirs(ann_dir, exist_ok=True)
  os.makedirs(pose_dir, exist_ok=True)
  small = max(1, num_per_class // 2)

  # A '-' sorts before '.', so 'X-2.json' < 'X.json' although 'X' < 'X-2'.
  base = _video_name(9011, 'a30', '01_153724')
  split_videos = {
      'train': [base, base + '-2', _video_name(9012, 'c12', '02_101500')],
      'validation': [_video_name(9033, 'a30', '04_131528'), _video_name(9034, 'b06b', '04_140102')],
      'test': [_video_name(9051, 'c12', '08_094512'), _video_name(9052, 'a30', '08_110933')],
  }
  counts = {'train': num_per_class, 'validation': small, 'test': small}
  rows = {}
  for split, videos in split_videos.items():
    segs = _make_segments(rng, counts[split])
    if split == 'test':
      for seg in segs:  # test csv frames are 30 fps; keep the duration at 60 fps
        seg['duration'] += seg['duration'] % 2 == 0
    layout = _layout_videos(rng, segs, len(videos))
    split_rows = []
    for vi, (video, (video_segs, num_frames)) in enumerate(zip(videos, layout)):
      if split == 'test':
        for seg in video_segs:  # 60 fps frames of the form 2*f+1
          seg['start60'] += seg['start60'] % 2 == 0
          seg['end60'] = seg['start60'] + seg['duration'] - 1
        num_frames = max(num_frames, video_segs[-1]['end60'] + (9 if vi == 0 else CONTEXT))
      poses = _render_video(rng, num_frames, video_segs)
      lost_hand = np.zeros((num_frames, 2), bool)
      lost_both = np.zeros(num_frames, bool)
      _add_gaps(rng, num_frames, video_segs, lost_hand, lost_both)
      _write_json(os.path.join(pose_dir, video + '.json'), poses, lost_hand, lost_both)
      if split == 'test':
        split_rows += [[video, (s['start60'] - 1) // 2, (s['end60'] - 1) // 2] for s in video_segs]
      else:
        split_rows += _labeled_rows(video, video_segs, TOYS[vi % len(TOYS)])
      if vi == 0:
        first = video_segs[0]
        tie = dict(first, duration=first['duration'] + 6)
        tie['end60'] = first['start60'] + tie['duration'] - 1
        tie['action'] = ACTIONS[(ACTIONS.index(first['action']) + 1) % len(ACTIONS)]
        if split == 'test':
          tie['end60'] += tie['end60'] % 2 == 0
          split_rows.append([video, (tie['start60'] - 1) // 2, (tie['end60'] - 1) // 2])
        else:
          split_rows += _labeled_rows(video, [tie], TOYS[0])
        if split != 'validation':
          # An annotation that starts after the pose list ends: the window is empty.
          late = num_frames + CONTEXT + 40
          if split == 'test':
            split_rows.append([video, late // 2, late // 2 + 20])
          else:
            late_seg = {'action': ACTIONS[0], 'start60': late, 'end60': late + 30}
            split_rows += _labeled_rows(video, [late_seg], TOYS[0])
    missing = _video_name(9099, 'b06b', '09_120000')  # no json is written for it
    if split == 'test':
      split_rows.append([missing, 101, 140])
    else:
      late_seg = {'action': ACTIONS[-1], 'start60': 300, 'end60': 380}
      split_rows += _labeled_rows(missing, [late_seg], TOYS[2])
    order = rng.permutation(len(split_rows))
    rows[split] = [split_rows[i] for i in order]

  for split in ('train', 'validation'):
    with open(os.path.join(ann_dir, f'{split}.csv'), 'w', newline='') as f:
      w = csv.writer(f, lineterminator='\n')
      w.writerow(['id', 'video', 'start_frame', 'end_frame', 'action_id', 'verb_id', 'noun_id',
                  'action_cls', 'verb_cls', 'noun_cls', 'toy_id', 'toy_name', 'is_shared'])
      for i, (video, s, e, a, v, n, acls, vcls, ncls, toy_id, toy_name) in enumerate(rows[split]):
        w.writerow([f'{i:07d}', video, f'{s:09d}', f'{e:09d}', f'{a:04d}', f'{v:04d}', f'{n:04d}',
                    acls, vcls, ncls, toy_id, toy_name, i % 2])
  with open(os.path.join(ann_dir, 'test_challenge.csv'), 'w', newline='') as f:
    w = csv.writer(f, lineterminator='\n')
    w.writerow(['id', 'video', 'start_frame', 'end_frame', 'is_shared'])
    for i, (video, s, e) in enumerate(rows['test']):
      w.writerow([i, video, s, e, i % 2])
  with open(os.path.join(ann_dir, 'actions.csv'), 'w', newline='') as f:
    w = csv.writer(f, lineterminator='\n')
    w.writerow(['id', 'action_id', 'verb_id', 'noun_id', 'action_cls', 'verb_cls', 'noun_cls'])
    for i, action in enumerate(ACTIONS):
      w.writerow([i, *action])
  return root
