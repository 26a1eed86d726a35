"""Synthetic NTU RGB+D `.skeleton` trees for tests and demos, in the exact downloaded format.

`write_ntu_tree` writes `nturgb+d_skeletons/` (setups < 18) and `nturgb+d_skeletons120/`
(setups >= 18) with a few mutual classes from both ranges (A050, A055, A110, A120) and labels
just outside them (A049, A061, A105), performers from both cross-subject sides, odd and even
setups, and the awkward cases the reference's denoising handles (see `SCENARIOS`).
Motion is class-dependent: each action has its own arm trajectory (direction, frequency,
amplitude) for the first person, a lagged response for the second, and an approach or
retreat, plus per-sample jitter and noise, so a small model can learn the classes.
`write_skeleton_file` writes any hand-made frame list, for tests of single cases.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from data_pipelines.ntu import (FIRST_SETUP_120, NTU60_XSUB_TRAIN, NTU120_XSUB_TRAIN,
                                 NUM_JOINTS, SKELETON_DIR, SKELETON_DIR_120)

# Kinect v2 joints (x, y) in metres around the spine base, a standing person facing the camera.
_TEMPLATE_XY = np.array([
    (0.0, 0.0), (0.0, 0.3), (0.0, 0.58), (0.0, 0.72),                          # 1-4 spine, head
    (-0.18, 0.48), (-0.25, 0.22), (-0.28, 0.0), (-0.29, -0.07),                # 5-8 left arm
    (0.18, 0.48), (0.25, 0.22), (0.28, 0.0), (0.29, -0.07),                    # 9-12 right arm
    (-0.08, -0.05), (-0.1, -0.45), (-0.1, -0.85), (-0.1, -0.9),                # 13-16 left leg
    (0.08, -0.05), (0.1, -0.45), (0.1, -0.85), (0.1, -0.9),                    # 17-20 right leg
    (0.0, 0.5), (-0.3, -0.14), (-0.26, -0.06), (0.3, -0.14), (0.26, -0.06),    # 21-25
], dtype=np.float64)
_LEFT_ARM = {5: 0.45, 6: 0.8, 7: 1.0, 21: 1.05, 22: 0.95}    # 0-based joint: lever weight
_RIGHT_ARM = {9: 0.45, 10: 0.8, 11: 1.0, 23: 1.05, 24: 0.95}

MUTUAL_ACTIONS = (50, 55, 110, 120)
OTHER_ACTIONS = (49, 61, 105)
PERFORMERS = (1, 3, 45, 48, 2)   # 1, 2, 45 train and 3, 48 test under NTU120 cross-subject
SETUPS = (1, 2, 18, 19)          # odd and even, both directories
EMPTY_FILE_NAME = 'S002C001P003R002A055'

# Awkward cases, cycled over the mutual samples (each appears once with 4 per class):
SCENARIOS = (
    'clean',             # two bodies in every frame
    'noise_short',       # an 8-frame noise body, alone in the first frames (dropped by length)
    'tail12',            # person 2's ID switches for the last 12 frames (kept)
    'tail11',            # ... for the last 11 frames (dropped by length)
    'spread_flat',       # a flat noise object, first in the file (dropped by spread)
    'spread_partial',    # person 1 spreads its arms in ~42% of frames (kept, motion lowered)
    'empty_frames',      # frames with no body at the start, middle and end
    'gap',               # person 2 disappears for 5 frames and reappears (squeezed)
    'noise_gap',         # 3 frames hold only a short noise body (both people shifted)
    'id_switch_actor2',  # person 2 changes ID early; its calm first ID is lost to [0, 0]
    'shared_frame',      # person 1 changes ID with one frame holding both IDs
    'id_switch_actor1',  # person 1 changes ID halfway
    'single_body',       # a mutual action with only one body detected
    'lying_first',       # a lying person (dropped by spread) then a flat object that survives
    'late_entry',        # the more active person enters 10 frames late
)
OTHER_SCENARIOS = ('single_body', 'noise_short', 'tail11', 'single_body')


def _class_motion(action: int) -> dict:
  rng = np.random.default_rng(1000 + action)
  def unit():
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)
  return {
      'dir1': unit(), 'dir2': unit(), 'approach': unit() * np.array([1.0, 0.1, 1.0]),
      'freq1': rng.uniform(0.5, 3.0), 'freq2': rng.uniform(0.5, 3.0),
      'amp1': rng.uniform(0.1, 0.25), 'amp2': rng.uniform(0.04, 0.12),
      'shift': rng.uniform(-0.3, 0.3), 'lag': rng.uniform(0.0, np.pi),
  }


def _person(num_frames: int, x0: float, z0: float, arm: dict, displacement: np.ndarray,
            drift: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """(T, 25, 3) float64 joints: template at (x0, ~0, z0) + arm displacement + drift."""
  base = np.zeros((NUM_JOINTS, 3))
  base[:, :2] = _TEMPLATE_XY
  base[:, 2] = rng.normal(0.0, 0.02, NUM_JOINTS)
  base += (x0, rng.uniform(-0.05, 0.05), z0)
  joints = np.repeat(base[None], num_frames, axis=0)
  for joint, weight in arm.items():
    joints[:, joint] += weight * displacement
  joints += drift[:, None, :]
  return joints + rng.normal(0.0, 0.004, joints.shape)


def _two_people(action: int, num_frames: int, rng: np.random.Generator):
  m = _class_motion(action)
  t = np.arange(num_frames) / num_frames
  d1 = m['amp1'] * np.sin(2 * np.pi * m['freq1'] * t)[:, None] * m['dir1']
  d2 = m['amp2'] * np.sin(2 * np.pi * m['freq2'] * t + m['lag'])[:, None] * m['dir2']
  drift2 = m['shift'] * t[:, None] * m['approach']
  z0 = rng.uniform(2.6, 3.4)
  x0 = rng.uniform(-0.1, 0.1)
  a = _person(num_frames, x0 - 0.45, z0, _RIGHT_ARM, d1, np.zeros((num_frames, 3)), rng)
  b = _person(num_frames, x0 + 0.45, z0 + rng.uniform(-0.1, 0.1), _LEFT_ARM, d2, drift2, rng)
  return a, b


def _flat_object(num_frames: int, rng: np.random.Generator) -> np.ndarray:
  """A wide, thin thing (a table edge, a sofa back): every frame fails the spread test."""
  base = np.stack([rng.uniform(-0.6, 0.6, NUM_JOINTS), rng.uniform(-0.05, 0.05, NUM_JOINTS),
                   rng.uniform(-0.05, 0.05, NUM_JOINTS)], axis=1) + (0.2, -0.4, 3.8)
  return base[None] + rng.normal(0.0, 0.01, (num_frames, NUM_JOINTS, 3))


def _blob(num_frames: int, rng: np.random.Generator) -> np.ndarray:
  base = rng.normal(0.0, 0.15, (NUM_JOINTS, 3)) + (rng.uniform(-1, 1), 0.2, 3.5)
  return base[None] + rng.normal(0.0, 0.05, (num_frames, NUM_JOINTS, 3))


def _ids(rng: np.random.Generator, count: int) -> list[str]:
  return [str(v) for v in 72057594037900000 + rng.choice(99999, size=count, replace=False)]


def _scenario_frames(scenario: str, a: np.ndarray, b: np.ndarray, rng: np.random.Generator):
  """Frame list [(bodyID, joints)] per frame for one scenario (T = len(a))."""
  num_frames = len(a)
  ia, ib, ic, id_ = _ids(rng, 4)
  frames = [[(ia, a[f]), (ib, b[f])] for f in range(num_frames)]
  if scenario == 'noise_short':
    noise = _blob(8, rng)
    frames = [[] if f < 4 else people for f, people in enumerate(frames)]
    for f in range(8):
      frames[f].insert(0, (ic, noise[f]))
  elif scenario in ('tail12', 'tail11'):
    tail = 12 if scenario == 'tail12' else 11
    for f in range(num_frames - tail, num_frames):
      frames[f][1] = (ic, b[f])
  elif scenario == 'spread_flat':
    flat = _flat_object(num_frames - 10, rng)
    for f in range(num_frames - 10):
      frames[f].insert(0, (ic, flat[f]))
  elif scenario == 'spread_partial':
    wide = a.copy()
    lo, hi = num_frames // 4, num_frames // 4 + int(0.42 * num_frames)
    for joint, weight in _RIGHT_ARM.items():
      wide[lo:hi, joint, 0] += 0.9 * weight
    for joint, weight in _LEFT_ARM.items():
      wide[lo:hi, joint, 0] -= 0.9 * weight
    frames = [[(ia, wide[f]), (ib, b[f])] for f in range(num_frames)]
  elif scenario == 'empty_frames':
    for f in (0, 1, 2, num_frames // 2, num_frames - 2, num_frames - 1):
      frames[f] = []
  elif scenario == 'gap':
    for f in range(15, 20):
      del frames[f][1]
  elif scenario == 'noise_gap':
    noise = _blob(3, rng)
    for k, f in enumerate(range(20, 23)):
      frames[f] = [(ic, noise[k])]
  elif scenario == 'id_switch_actor2':
    calm = np.repeat(b[:1], 15, axis=0) + rng.normal(0.0, 0.002, (15, NUM_JOINTS, 3))
    for f in range(15):
      frames[f][1] = (ic, calm[f])
  elif scenario == 'shared_frame':
    k = num_frames // 2
    for f in range(k, num_frames):
      frames[f][0] = (ic, a[f])
    frames[k].insert(0, (ia, a[k] + 0.01))
  elif scenario == 'id_switch_actor1':
    for f in range(num_frames // 2, num_frames):
      frames[f][0] = (ic, a[f])
  elif scenario == 'single_body':
    frames = [[(ia, a[f])] for f in range(num_frames)]
  elif scenario == 'lying_first':
    lying = a[..., [1, 0, 2]] + (0.0, -0.6, 0.3)
    flat = _flat_object(num_frames - 2, rng)
    frames = [[(ia, lying[f])] + ([(ic, flat[f - 2])] if f >= 2 else [])
              for f in range(num_frames)]
  elif scenario == 'late_entry':
    big = a.copy()
    for joint, weight in _RIGHT_ARM.items():
      big[:, joint, 1] += 0.3 * weight * np.sin(np.linspace(0, 6 * np.pi, num_frames))
    frames = [([(ia, big[f])] if f >= 10 else []) + [(ib, b[f])] for f in range(num_frames)]
  elif scenario != 'clean':
    raise ValueError(f'unknown scenario {scenario!r}')
  return frames


def format_skeleton(frames: Sequence[Sequence[tuple[str, np.ndarray]]]) -> str:
  """The `.skeleton` text of a frame list [(bodyID, (25, 3) xyz)] per frame."""
  out = [str(len(frames))]
  for bodies in frames:
    out.append(str(len(bodies)))
    for body_id, joints in bodies:
      out.append(f'{body_id} 0 1 1 1 1 0 0.01234567 -0.1234567 2')
      out.append(str(NUM_JOINTS))
      for x, y, z in np.asarray(joints, dtype=np.float64):
        # depth/colour pixels and orientation are never used; plausible values only.
        dx, dy = 256 + 360 * x / z, 212 - 360 * y / z
        out.append(f'{x:.7g} {y:.7g} {z:.7g} {dx:.4f} {dy:.4f} {2.8 * dx:.3f} {2.5 * dy:.3f} '
                   f'0.9 0.01 -0.02 0.1 2')
  return '\r\n'.join(out) + '\r\n'


def write_skeleton_file(path: str | os.PathLike, frames) -> str:
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w', newline='') as f:
    f.write(format_skeleton(frames))
  return path


def sample_names(num_per_class: int = 4) -> list[tuple[str, str]]:
  """(name, scenario) of every file `write_ntu_tree` writes, empty file included.

  File i of an action takes setup `SETUPS[i % 4]`, performer `PERFORMERS[(i + action) % 5]`
  and a camera and replication cycling with i. Those repeat from the 42nd file of an action
  on; a name already taken moves to another performer on the same side of both cross-subject
  splits, then to another setup of the same parity and directory, so every split (x-sub,
  x-set, x-view, NTU60 and NTU120) keeps each file's side and the first 41 names per action
  stay what they were.
  """
  out, taken = [], {EMPTY_FILE_NAME}
  mutual = 0
  for action in OTHER_ACTIONS + MUTUAL_ACTIONS:
    for i in range(num_per_class):
      k = i + action
      name = _free_name(taken, SETUPS[i % len(SETUPS)], 1 + k % 3,
                        PERFORMERS[k % len(PERFORMERS)], 1 + (i // 3) % 2, action, num_per_class)
      taken.add(name)
      if action in MUTUAL_ACTIONS:
        scenario = SCENARIOS[mutual % len(SCENARIOS)]
        mutual += 1
      else:
        scenario = OTHER_SCENARIOS[i % len(OTHER_SCENARIOS)]
      out.append((name, scenario))
  out.append((EMPTY_FILE_NAME, 'empty'))
  return out


def _free_name(taken: set, setup: int, camera: int, performer: int, replication: int,
               action: int, num_per_class: int) -> str:
  side = lambda p: (p in NTU120_XSUB_TRAIN, p in NTU60_XSUB_TRAIN)
  group = lambda s: (s % 2, s >= FIRST_SETUP_120)
  setups = [setup] + [s for s in range(1, 33) if s != setup and group(s) == group(setup)]
  performers = [performer] + [p for p in range(1, 107)
                              if p != performer and side(p) == side(performer)]
  for s in setups:
    for p in performers:
      name = f'S{s:03d}C{camera:03d}P{p:03d}R{replication:03d}A{action:03d}'
      if name not in taken:
        return name
  raise ValueError(f'num_per_class {num_per_class}: too many files for A{action:03d} to name '
                   'apart within its splits')


def write_ntu_tree(root: str | os.PathLike, *, num_per_class: int = 4, seed: int = 0) -> str:
  """Writes a small NTU RGB+D 120 skeleton tree under `root`; returns root.

  root/nturgb+d_skeletons/SsssCcccPpppRrrrAaaa.skeleton for setups 1 and 2, and
  root/nturgb+d_skeletons120/... for setups 18 and 19, `num_per_class` files for each of
  A049, A061, A105 (outside the mutual ranges) and A050, A055, A110, A120 (mutual), 36-60
  frames each, plus `EMPTY_FILE_NAME` whose every frame has no body. Mutual samples cycle
  through `SCENARIOS`, the others through `OTHER_SCENARIOS`. Deterministic for a seed.
  """
  root = os.fspath(root)
  for name, scenario in sample_names(num_per_class):
    action = int(name[-3:])
    rng = np.random.default_rng([seed, action, int(name[1:4]), int(name[9:12])])
    if scenario == 'empty':
      frames = [[] for _ in range(20)]
    else:
      a, b = _two_people(action, int(rng.integers(36, 61)), rng)
      frames = _scenario_frames(scenario, a, b, rng)
    sub = SKELETON_DIR_120 if int(name[1:4]) >= FIRST_SETUP_120 else SKELETON_DIR
    write_skeleton_file(os.path.join(root, sub, name + '.skeleton'), frames)
  return root
