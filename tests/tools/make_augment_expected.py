"""Writes tests/data/augment/: the reference feeders' transforms run on small seeded arrays.

Runs the reference's own `feeders/tools.py` (valid_crop_resize, _rot, random_rot) and the NTU
feeder's `__getitem__` (crop, rotation, entity rearrangement, bone, velocity) on inputs from
the seeded generators below, and stores the random draws they used and their outputs in our
channels-last layout (T, V, M, C). tests/test_augment.py regenerates the inputs with the same
generators (this module imports torch and the reference only inside `main`) and compares
without torch or the reference.

Usage:
  python tests/tools/make_augment_expected.py --reference_dir /tmp/ista_ref \
      --out tests/data/augment/

Patching needed to run the reference at all (its logic is untouched):
* `matplotlib` (imported, never used) is stubbed when missing;
* `np.random.rand` returns a fixed 0-d value instead of a (1,)-array: the reference's
  `int(np.floor(valid * p))` on a 1-element array raises TypeError on numpy >= 2.4. The value
  returned is the chosen `u`, so the reference's p is `u * (hi - lo) + lo`;
* `np.random.randint` returns the chosen crop start (and records its bound, which gives the
  reference's cropped length); `torch.randperm` and `tools._rot` are wrapped to record the
  permutations and angles the reference drew.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from reference_outputs import import_reference, save_expected, tool_args  # noqa: E402

NTU_WINDOW = 20
NTU_REALS = (90, 70, 50)
NTU_FRAMES = 90


def _motion(rng, num_real, num_joints, num_entities, scale=1.0):
  """(num_real, V, M, 3) float64 smooth trajectories plus noise, no zero frames."""
  t = np.arange(num_real)[:, None, None, None]
  freq = rng.uniform(0.02, 0.2, size=(1, num_joints, num_entities, 3))
  phase = rng.uniform(0, 2 * np.pi, size=(1, num_joints, num_entities, 3))
  offset = rng.uniform(-1, 1, size=(1, num_joints, num_entities, 3))
  out = offset + 0.5 * np.sin(2 * np.pi * freq * t + phase)
  out += 0.01 * rng.standard_normal(out.shape)
  return scale * out


def _sequence(rng, num_frames, num_real, *, zero_frames=(), zero_sum_frame=None, pad=None,
              num_joints=4, num_entities=2, dtype=np.float32):
  """A (T, V, M, 3) zero-padded sequence with the awkward features the tests need."""
  x = np.zeros((num_frames, num_joints, num_entities, 3), np.float64)
  x[:num_real] = _motion(rng, num_real, num_joints, num_entities)
  for f in zero_frames:
    x[f] = 0
  if zero_sum_frame is not None:
    # Non-zero values whose sum is exactly 0: the reference does not count such a frame.
    vals = np.zeros(num_joints * num_entities * 3)
    vals[0::2], vals[1::2] = 0.5, -0.5
    x[zero_sum_frame] = vals.reshape(num_joints, num_entities, 3)
  if pad is not None:
    x[num_real:] = pad
  return x.astype(dtype)


# name, sequence kwargs, window, p_interval, u (train only), start (train only)
CROP_CASES = [
    ('eval_full_down', dict(num_frames=100, num_real=100), 64, [0.95], None, None),
    ('eval_up', dict(num_frames=150, num_real=90), 120, [0.95], None, None),
    ('eval_interior_zeros', dict(num_frames=120, num_real=81, zero_frames=(30, 31, 32)), 64,
     [0.95], None, None),
    ('eval_short', dict(num_frames=60, num_real=37), 120, [0.95], None, None),
    ('eval_one_frame', dict(num_frames=50, num_real=1), 16, [0.95], None, None),
    ('eval_bias_boundary_40', dict(num_frames=80, num_real=40), 40, [0.95], None, None),
    ('eval_bias_boundary_120', dict(num_frames=130, num_real=120), 120, [0.95], None, None),
    ('eval_p_half', dict(num_frames=70, num_real=61), 30, [0.5], None, None),
    ('eval_sbu_pad', dict(num_frames=46, num_real=30, pad=(1280.0, 960.0, 0.0),
                          dtype=np.float64), 40, [0.95], None, None),
    ('eval_zero_sum_frame', dict(num_frames=60, num_real=50, zero_sum_frame=10), 64, [0.95],
     None, None),
    ('eval_same_length', dict(num_frames=70, num_real=64), 62, [0.95], None, None),
    ('train_full', dict(num_frames=300, num_real=300), 64, [0.5, 1], 0.5, 40),
    ('train_max_start', dict(num_frames=200, num_real=150), 120, [0.5, 1], 0.0, 75),
    ('train_below_floor', dict(num_frames=100, num_real=50), 40, [0.5, 1], 0.3, 0),
    ('train_interior_zeros', dict(num_frames=160, num_real=130, zero_frames=(60, 61, 62, 63, 64)),
     64, [0.5, 1], 0.9, 7),
    ('train_sbu_pad', dict(num_frames=46, num_real=30, pad=(1280.0, 960.0, 0.0),
                           dtype=np.float64), 40, [0.5, 1], 0.7, 0),
    ('train_one_frame', dict(num_frames=20, num_real=1), 16, [0.5, 1], 0.6, 0),
    ('train_odd_p', dict(num_frames=250, num_real=233), 64, [0.5, 1], 0.8372, 19),
    ('train_other_interval', dict(num_frames=300, num_real=280), 120, [0.2, 0.6], 0.25, 150),
]

ROT_ANGLES = [[0.0, 0.0, 0.0], [0.1, -0.2, 0.3], [0.3, 0.3, -0.3], [-0.25, 0.05, 0.17],
              [1.0, 2.0, -0.5]]


def _to_ref(x):
  """(T, V, M, C) -> the reference's (C, T, V, M)."""
  return np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2)))


def _from_ref(x):
  x = x.numpy() if hasattr(x, 'numpy') else np.asarray(x)
  return np.ascontiguousarray(np.transpose(x, (1, 2, 3, 0)))


class _Draws:
  """Patches the reference's random sources with chosen values and records what it drew."""

  def __init__(self, torch, tools):
    self.torch, self.tools = torch, tools
    self.u, self.start = [], []
    self.randint_high, self.angles, self.perms = [], [], []

  @contextlib.contextmanager
  def patched(self):
    orig_rand, orig_randint = np.random.rand, np.random.randint
    orig_randperm, orig_rot = self.torch.randperm, self.tools._rot

    def rand(*shape):
      assert shape == (1,), shape
      return np.float64(self.u.pop(0))

    def randint(low, high):
      self.randint_high.append(int(high))
      start = self.start.pop(0)
      assert low <= start < high, (low, start, high)
      return start

    def randperm(n, *args, **kwargs):
      perm = orig_randperm(n, *args, **kwargs)
      self.perms.append(perm.numpy().copy())
      return perm

    def rot(angles):
      self.angles.append(angles[0].numpy().copy())
      return orig_rot(angles)

    np.random.rand, np.random.randint = rand, randint
    self.torch.randperm, self.tools._rot = randperm, rot
    try:
      yield self
    finally:
      np.random.rand, np.random.randint = orig_rand, orig_randint
      self.torch.randperm, self.tools._rot = orig_randperm, orig_rot


def crop_inputs():
  """{case name: (T, V, M, 3) input} for CROP_CASES, deterministic."""
  return {case[0]: _sequence(np.random.default_rng([0, i]), **case[1])
          for i, case in enumerate(CROP_CASES)}


def rotation_input():
  """(T, V, M, 3) float32 input of the random_rot cases."""
  return _sequence(np.random.default_rng(1), 10, 8)


def ntu_input():
  """(N, T, 25, 2, 3) float32 NTU-shaped batch: full, padded, and < 64 valid frames."""
  return np.stack([_sequence(np.random.default_rng([2, i]), NTU_FRAMES, r, num_joints=25)
                   for i, r in enumerate(NTU_REALS)])


def _crop_cases(tools, draws, arrays, meta):
  inputs = crop_inputs()
  for name, _, window, p_interval, u, start in CROP_CASES:
    x = inputs[name]
    ref = _to_ref(x)
    valid = np.sum(ref.sum(0).sum(-1).sum(-1) != 0)
    entry = dict(window=window, p_interval=p_interval, valid=int(valid))
    if u is not None:
      draws.u.append(u)
      draws.start.append(start)
    with draws.patched():
      out = tools.valid_crop_resize(ref, valid, p_interval, window)
    if u is not None:
      lo, hi = p_interval
      entry.update(u=u, p=float(np.float64(u) * (hi - lo) + lo), start=start,
                   length=int(valid) - (draws.randint_high.pop() - 1))
    arrays[f'crop_{name}_out'] = _from_ref(out).astype(np.float32)
    meta['crop'][name] = entry


def _rotation_cases(torch, tools, arrays, meta):
  angles = torch.tensor(ROT_ANGLES, dtype=torch.float32)
  arrays['rot_angles'] = angles.numpy()
  arrays['rot_matrices'] = tools._rot(angles).numpy()  # pylint: disable=protected-access
  x = rotation_input()
  got_angles, outs = [], []
  for seed in range(3):
    torch.manual_seed(seed)
    got_angles.append(torch.zeros(3).uniform_(-0.3, 0.3).numpy())
    torch.manual_seed(seed)
    outs.append(_from_ref(tools.random_rot(_to_ref(x))))
  arrays['random_rot_angles'] = np.stack(got_angles)
  arrays['random_rot_out'] = np.stack(outs)


def _ntu_cases(torch, tools, feeder_ntu, draws, arrays, meta, workdir):
  rng = np.random.default_rng(3)
  reals, labels = NTU_REALS, (50, 110, 55)
  x = ntu_input()
  # The NTU npz row layout: T x (M, V, C) flattened.
  flat = np.transpose(x, (0, 1, 3, 2, 4)).reshape(len(reals), NTU_FRAMES, 150)
  onehot = np.zeros((len(reals), 120), np.float32)
  onehot[np.arange(len(reals)), labels] = 1
  path = os.path.join(workdir, 'ntu.npz')
  np.savez(path, x_train=flat, y_train=onehot, x_test=flat, y_test=onehot)

  runs = {
      'eval_bone': dict(p_interval=[0.95], bone=True),
      'eval_vel': dict(p_interval=[0.95], vel=True),
      'eval_bone_vel': dict(p_interval=[0.95], bone=True, vel=True),
      'train_rot_er': dict(p_interval=[0.5, 1], random_rot=True, entity_rearrangement=True),
      'train_rot_er_bone_vel': dict(p_interval=[0.5, 1], random_rot=True,
                                    entity_rearrangement=True, bone=True, vel=True),
      'train_rot_vel': dict(p_interval=[0.5, 1], random_rot=True, vel=True),
  }
  meta['ntu'] = {}
  torch.manual_seed(3)
  for name, args in runs.items():
    feeder = feeder_ntu.Feeder(path, split='train', window_size=NTU_WINDOW, use_mmap=False,
                               **args)
    train = len(args['p_interval']) == 2
    entry = dict(args, p=[], start=[], length=[])
    outs, angles, perms = [], [], []
    for i in range(len(reals)):
      if train:
        u = float(rng.uniform())
        valid = int(np.sum(_to_ref(x[i]).sum(0).sum(-1).sum(-1) != 0))
        length = min(max(int(np.floor(valid * (u * 0.5 + 0.5))), 64), valid)
        start = int(rng.integers(0, valid - length + 1))
        draws.u.append(u)
        draws.start.append(start)
      with draws.patched():
        data, _, _ = feeder[i]
      outs.append(_from_ref(data))
      if train:
        entry['p'].append(float(np.float64(u) * 0.5 + 0.5))
        entry['start'].append(start)
        entry['length'].append(valid - (draws.randint_high.pop() - 1))
      angles.append(draws.angles.pop() if args.get('random_rot') else np.zeros(3, np.float32))
      perms.append(draws.perms.pop() if args.get('entity_rearrangement') else np.arange(2))
    assert not draws.angles and not draws.perms
    arrays[f'ntu_{name}_out'] = np.stack(outs).astype(np.float32)
    arrays[f'ntu_{name}_angles'] = np.stack(angles)
    arrays[f'ntu_{name}_perm'] = np.stack(perms).astype(np.int32)
    meta['ntu'][name] = entry


def main(argv=None):
  args = tool_args(__doc__, argv)
  import torch  # pylint: disable=import-outside-toplevel
  feeder_ntu, tools = import_reference(args.reference_dir, 'feeder_ntu', 'tools')
  draws = _Draws(torch, tools)
  arrays, meta = {}, {'crop': {}, 'ntu_window': NTU_WINDOW}
  _crop_cases(tools, draws, arrays, meta)
  _rotation_cases(torch, tools, arrays, meta)
  with tempfile.TemporaryDirectory() as workdir:
    _ntu_cases(torch, tools, feeder_ntu, draws, arrays, meta, workdir)
  save_expected(args.out, meta, arrays, arrays_name='expected.npz')
  print(f'wrote {len(arrays)} arrays to {args.out}')


if __name__ == '__main__':
  main()
