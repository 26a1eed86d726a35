"""Small deterministic SBU-Kinect-Interaction and H2O raw trees, in the exact on-disk formats.

Used by the reader tests (whose expected outputs come from the reference scripts run on these
same trees) and by demos that train on them, so motion is class-dependent: every class moves
particular joints along its own trajectory, plus per-sample jitter and noise.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

# ---------------------------------------------------------------------------------------------
# SBU

# One pair from each of the reference's five folds, plus one pair that is in no fold list.
SBU_DEFAULT_PAIRS = ('s01s02', 's02s03', 's01s03', 's02s01', 's04s02', 's08s09')
# A pair/label directory left out on purpose (the reference skips missing ones).
SBU_MISSING_LABEL_DIR = ('s04s02', '03')

# Offsets of the 15 SBU joints from the hip centre, in normalised image units (y grows
# downwards): head, neck, torso, l-shoulder, l-elbow, l-hand, r-shoulder, r-elbow, r-hand,
# l-hip, l-knee, l-foot, r-hip, r-knee, r-foot.
_SBU_BODY = np.array([
    [0.00, -0.22, 0.00], [0.00, -0.17, 0.00], [0.00, -0.08, 0.01],
    [-0.05, -0.16, 0.00], [-0.07, -0.09, 0.01], [-0.08, -0.02, 0.02],
    [0.05, -0.16, 0.00], [0.07, -0.09, 0.01], [0.08, -0.02, 0.02],
    [-0.03, 0.00, 0.00], [-0.03, 0.12, 0.01], [-0.03, 0.24, 0.00],
    [0.03, 0.00, 0.00], [0.03, 0.12, 0.01], [0.03, 0.24, 0.00],
])
_L_HAND, _R_HAND, _R_FOOT = 5, 8, 14
_ARMS = [4, 5, 7, 8]


def _sbu_motion(label: int, s: np.ndarray, amp: float) -> np.ndarray:
  """Per-frame displacement (T, 2, 15, 3) of both persons for 0-based SBU class `label`.

  Person A stands left (smaller x) facing +x, person B right facing -x.
  """
  d = np.zeros((len(s), 2, 15, 3))
  u = s[:, None]                            # (T, 1): broadcasts over the joints indexed
  s = amp * u                               # steady drift
  bump = amp * np.sin(np.pi * u)            # out and back
  strike = amp * np.sin(np.pi * u) ** 4     # fast out and back
  every = slice(None)
  moves = {
      0: [(0, every, 0, 0.08 * s), (1, every, 0, -0.08 * s)],                   # approaching
      1: [(0, every, 0, -0.08 * s), (1, every, 0, 0.08 * s)],                   # departing
      2: [(0, [_R_FOOT], 0, 0.12 * bump), (0, [_R_FOOT], 1, -0.08 * bump),     # kicking
          (1, every, 0, 0.03 * s)],
      3: [(0, [_L_HAND, _R_HAND], 0, 0.10 * bump), (1, every, 0, 0.06 * s)],   # pushing
      4: [(0, [_R_HAND], 0, 0.09 * bump), (1, [_L_HAND], 0, -0.09 * bump),     # shaking hands
          (0, [_R_HAND], 1, 0.02 * np.sin(6 * np.pi * u) * bump),
          (1, [_L_HAND], 1, 0.02 * np.sin(6 * np.pi * u) * bump)],
      5: [(0, every, 0, 0.06 * s), (1, every, 0, -0.06 * s),                   # hugging
          (0, _ARMS, 0, 0.06 * s), (1, _ARMS, 0, -0.06 * s),
          (0, _ARMS, 1, -0.05 * s), (1, _ARMS, 1, -0.05 * s)],
      6: [(0, [_R_HAND], 0, 0.10 * bump), (1, [_R_HAND], 0, -0.10 * bump),     # exchanging
          (0, [_R_HAND], 2, -0.04 * bump), (1, [_R_HAND], 2, -0.04 * bump)],
      7: [(0, [_R_HAND], 0, 0.14 * strike), (0, [_R_HAND], 1, -0.04 * strike),    # punching
          (1, [0, 1, 2], 0, 0.03 * strike)],
  }
  for person, joints, axis, offset in moves[label]:
    d[:, person, joints, axis] += offset
  return d


def _sbu_sequence(rng: np.random.Generator, label: int, length: int, noise: float,
                  motion_scale: float = 1.0) -> np.ndarray:
  centre = np.array([[0.38, 0.5, 0.62], [0.62, 0.5, 0.62]]) + rng.normal(0, 0.015, (2, 3))
  body = centre[:, None, :] + _SBU_BODY[None] * rng.uniform(0.9, 1.1)
  s = np.linspace(0.0, 1.0, length)
  seq = body[None] + _sbu_motion(label, s, rng.uniform(0.8, 1.2) * motion_scale)
  seq = seq + rng.normal(0, noise, seq.shape)
  return np.clip(seq, 0.0, 1.0)


def _write_sbu_file(path: str, seq: np.ndarray, full_precision: bool) -> None:
  flat = seq.reshape(len(seq), -1)
  with open(path, 'w') as f:
    for t, row in enumerate(flat, start=1):
      values = [repr(float(v)) for v in row] if full_precision else [f'{v:.6f}' for v in row]
      f.write(f'{t},' + ','.join(values) + '\n')


def write_sbu_tree(root: str | os.PathLike, *, num_per_class: int = 2, seed: int = 0,
                   pairs: Sequence[str] = SBU_DEFAULT_PAIRS,
                   versions: Sequence[str] = ('Clean', 'Noisy'),
                   motion_scale: float = 1.0) -> str:
  """Writes `root/<Clean|Noisy>/<pair>/<label>/<seq>/skeleton_pos.txt` and returns `root`.

  Every pair gets `num_per_class` sequences (`001`, `002`, ...) of each of the 8 labels, except
  the `s04s02/03` directory, which is left out (as some real pair/label directories are).
  Lines are `frame,` + 90 values in the normalised [0, 1] units: person A's 15 joints x xyz then
  person B's. Clean sequences are 10-52 frames, Noisy ones 18-102 frames with extra jitter, so
  both have sequences shorter and longer than the reference's 46 frames. Some files are written
  with full float precision, the rest with 6 decimals. `s08s09` is in no fold list.
  """
  root = os.fspath(root)
  for v_index, version in enumerate(versions):
    rng = np.random.default_rng([seed, v_index])
    lo, hi, noise = (18, 103, 0.008) if version == 'Noisy' else (10, 53, 0.003)
    for p_index, pair in enumerate(pairs):
      for label in range(8):
        label_dir = f'{label + 1:02d}'
        if (pair, label_dir) == SBU_MISSING_LABEL_DIR:
          continue
        for i in range(num_per_class):
          length = int(rng.integers(lo, hi))
          if p_index == 0 and label == 0 and i == 0:
            length = 12   # always one short and one long sequence
          elif p_index == 0 and label == 1 and i == 0:
            length = 60
          seq = _sbu_sequence(rng, label, length, noise, motion_scale)
          seq_dir = os.path.join(root, version, pair, label_dir, f'{i + 1:03d}')
          os.makedirs(seq_dir, exist_ok=True)
          _write_sbu_file(os.path.join(seq_dir, 'skeleton_pos.txt'), seq,
                          full_precision=(label + i) % 3 == 0)
  return root


# ---------------------------------------------------------------------------------------------
# H2O

# A handful of the 36 H2O actions (1-based, as in the label files): grab, place, open, close,
# pour, take out, put in, squeeze.
H2O_DEFAULT_LABELS = (1, 9, 17, 20, 23, 24, 28, 36)
H2O_SPLIT_SUBJECTS = {'train': ('subject1', 'subject2'), 'val': ('subject3',),
                      'test': ('subject4',)}


def _hand_template(rng: np.random.Generator, side: float) -> np.ndarray:
  """21 hand joints (wrist, then 4 joints per finger from thumb to pinky) in metres."""
  joints = [np.zeros(3)]
  for finger in range(5):
    angle = np.deg2rad(-40 + 20 * finger) * side
    direction = np.array([np.sin(angle), -np.cos(angle), 0.01 * finger])
    base = 0.02 * direction + rng.normal(0, 0.002, 3)
    for j in range(4):
      joints.append(base + (0.025 + 0.022 * j) * direction)
  return np.stack(joints)


def _box_points(size: np.ndarray) -> np.ndarray:
  """21 object points: 8 box corners, the centre, then the 12 edge midpoints."""
  corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
  edges = [(a, b) for a in range(8) for b in range(a + 1, 8)
           if np.sum(corners[a] != corners[b]) == 1]
  mids = np.stack([(corners[a] + corners[b]) / 2 for a, b in edges])
  return np.concatenate([corners, np.zeros((1, 3)), mids]) * size / 2


def _h2o_class_params(label: int) -> dict:
  rng = np.random.default_rng(1000 + label)
  unit = lambda v: v / np.linalg.norm(v)
  return dict(right_dir=unit(rng.normal(size=3)), left_dir=unit(rng.normal(size=3)),
              freq=float(rng.choice([0.5, 1.0, 1.5, 2.0])), curl=float(rng.uniform(0.0, 0.03)),
              carries=bool(label % 2), obj_size=rng.uniform(0.04, 0.12, 3))


def _h2o_clip(rng: np.random.Generator, label: int, length: int):
  """Hands (T, 2, 21, 3) and object points (T, 21, 3), metres, for a 1-based H2O label."""
  p = _h2o_class_params(label)
  s = np.linspace(0.0, 1.0, length)[:, None]
  amp = rng.uniform(0.8, 1.2)
  wrist_r = np.array([0.12, 0.05, 0.45]) + rng.normal(0, 0.01, 3)
  wrist_l = np.array([-0.12, 0.05, 0.45]) + rng.normal(0, 0.01, 3)
  wave = np.sin(2 * np.pi * p['freq'] * s + rng.uniform(0, 0.3))
  right = wrist_r + 0.08 * amp * wave * p['right_dir']
  left = wrist_l + 0.04 * amp * np.sin(np.pi * s) * p['left_dir']
  curl = p['curl'] * np.sin(np.pi * s)[:, :, None] * np.linspace(0, 1, 21)[None, :, None]
  hands = np.stack([left[:, None] + _hand_template(rng, -1.0)[None] + curl,
                    right[:, None] + _hand_template(rng, 1.0)[None] + curl], axis=1)
  obj_centre = np.array([0.0, 0.08, 0.5]) + rng.normal(0, 0.01, 3)
  if p['carries']:
    # The object travels towards and with the right hand during the action.
    obj_centre = obj_centre + (right - right[:1]) * s
  else:
    obj_centre = np.broadcast_to(obj_centre, (length, 3))
  obj = obj_centre[:, None] + _box_points(p['obj_size'])[None]
  hands = hands + rng.normal(0, 0.002, hands.shape)
  obj = obj + rng.normal(0, 0.001, obj.shape)
  return hands, obj


def _fmt(values: np.ndarray) -> str:
  return ' '.join(f'{v:f}' for v in values)


def write_h2o_tree(root: str | os.PathLike, *, num_per_class: int = 2, num_eval_per_class: int = 1,
                   seed: int = 0, labels: Sequence[int] = H2O_DEFAULT_LABELS) -> str:
  """Writes a small H2O tree in the downloaded layout and returns `root`.

  root/label_split/action_{train,val,test}.txt: space-separated with a header,
    `id path action_label start_act end_act start_frame end_frame` (test has no action_label);
    ids count from 1 in each file; `start_frame end_frame` span the whole recording.
  root/subjectN/<h1|k1|o1>/<n>/cam4/hand_pose/%06d.txt: one line of 128 numbers, left hand flag
    + 21 x xyz, then right hand flag + 21 x xyz (metres, camera frame).
  .../cam4/obj_pose/%06d.txt: one line of 64 numbers, object class + 21 x xyz.
  .../cam4/action_label/%06d.txt: the frame's 1-based action (0 between actions); train and val
    subjects only, as the test labels are withheld.

  Train has `num_per_class` clips per label (subjects 1-2), val and test `num_eval_per_class`
  (subjects 3 and 4). Each recording holds up to three clips separated by background frames.
  Awkward cases: clips longer than 120 frames (centre-cropped by the reference), frames whose
  hand flag is 0 although coordinates are written, trailing spaces on some pose lines.
  """
  root = os.fspath(root)
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, 'label_split'), exist_ok=True)
  for split_index, (split, subjects) in enumerate(H2O_SPLIT_SUBJECTS.items()):
    count = num_per_class if split == 'train' else num_eval_per_class
    clip_labels = [l for l in labels for _ in range(count)]
    rng.shuffle(clip_labels)
    lengths = [int(rng.integers(20, 100)) for _ in clip_labels]
    if lengths:
      lengths[0] = (131, 150, 124)[split_index]   # longer than 120: odd and even excess
    rows = []
    recordings = [clip_labels[i:i + 3] for i in range(0, len(clip_labels), 3)]
    clip = 0
    for r_index, rec_labels in enumerate(recordings):
      subject = subjects[r_index % len(subjects)]
      rel = f'{subject}/{"hko"[r_index % 3]}1/{r_index // len(subjects)}'
      cam = os.path.join(root, rel, 'cam4')
      for sub in ('hand_pose', 'obj_pose') + (('action_label',) if split != 'test' else ()):
        os.makedirs(os.path.join(cam, sub), exist_ok=True)
      obj_class = int(rng.integers(1, 9))
      frame = 0
      rec_rows = []
      for label in rec_labels:
        gap = int(rng.integers(3, 8))
        length = lengths[clip]
        clip += 1
        hands, obj = _h2o_clip(rng, label, gap + length)
        flags = np.ones((gap + length, 2))
        if clip % 2 == 0:
          lost = int(rng.integers(gap, gap + length - 5))
          flags[lost:lost + 4, clip % 4 // 2] = 0.0   # hand not tracked, numbers still written
        for t in range(gap + length):
          name = f'{frame + t:06d}.txt'
          trail = ' ' if (frame + t) % 3 else ''
          with open(os.path.join(cam, 'hand_pose', name), 'w') as f:
            f.write(_fmt(np.concatenate([flags[t, :1], hands[t, 0].ravel(),
                                         flags[t, 1:], hands[t, 1].ravel()])) + trail + '\n')
          with open(os.path.join(cam, 'obj_pose', name), 'w') as f:
            f.write(_fmt(np.concatenate([[obj_class], obj[t].ravel()])) + trail + '\n')
          if split != 'test':
            with open(os.path.join(cam, 'action_label', name), 'w') as f:
              f.write(f'{label if t >= gap else 0}\n')
        rec_rows.append((label, frame + gap, frame + gap + length - 1))
        frame += gap + length
      # Background frames after the last action, as in the recordings.
      tail = int(rng.integers(2, 5))
      hands, obj = _h2o_clip(rng, rec_labels[-1], tail)
      for t in range(tail):
        name = f'{frame + t:06d}.txt'
        with open(os.path.join(cam, 'hand_pose', name), 'w') as f:
          f.write(_fmt(np.concatenate([[1.0], hands[t, 0].ravel(),
                                       [1.0], hands[t, 1].ravel()])) + '\n')
        with open(os.path.join(cam, 'obj_pose', name), 'w') as f:
          f.write(_fmt(np.concatenate([[obj_class], obj[t].ravel()])) + '\n')
        if split != 'test':
          with open(os.path.join(cam, 'action_label', name), 'w') as f:
            f.write('0\n')
      last = frame + tail - 1
      rows += [(rel, label, st, end, 0, last) for label, st, end in rec_rows]
    header = 'id path start_act end_act start_frame end_frame' if split == 'test' else \
             'id path action_label start_act end_act start_frame end_frame'
    with open(os.path.join(root, 'label_split', f'action_{split}.txt'), 'w') as f:
      f.write(header + '\n')
      for i, (rel, label, st, end, first, last) in enumerate(rows, start=1):
        cols = [i, rel] + ([] if split == 'test' else [label]) + [st, end, first, last]
        f.write(' '.join(str(c) for c in cols) + '\n')
  return root
