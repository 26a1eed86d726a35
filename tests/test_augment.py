"""istanet_jax.augment against the reference feeders' transforms, and the laws they obey.

Expected outputs in tests/data/augment/ come from the reference's own `feeders/tools.py` and
NTU feeder (tests/tools/make_augment_expected.py); the inputs are regenerated here with that
tool's seeded generators. The resize is a float32 linear interpolation whose source positions
we reproduce exactly; PyTorch rounds the final `w0 * x0 + w1 * x1` differently (fused or not),
so outputs agree to 1e-5 relative plus a couple of float32 ulps of the data's scale.
"""

import functools
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from istanet_jax import augment

DATA = os.path.join(os.path.dirname(__file__), 'data', 'augment')
_spec = importlib.util.spec_from_file_location(
    'make_augment_expected',
    os.path.join(os.path.dirname(__file__), 'tools', 'make_augment_expected.py'))
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

EXPECTED = np.load(os.path.join(DATA, 'expected.npz'))
with open(os.path.join(DATA, 'expected.json')) as f:
  META = json.load(f)
CROP_INPUTS = gen.crop_inputs()


def _assert_close(got, want, scale=None):
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape and got.dtype == np.float32
  scale = np.abs(want).max() if scale is None else scale
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=2.5e-7 * max(scale, 1.0))


def _padded(names):
  num_frames = max(CROP_INPUTS[n].shape[0] for n in names)
  return np.stack([np.pad(CROP_INPUTS[n].astype(np.float32),
                          ((0, num_frames - CROP_INPUTS[n].shape[0]),) + ((0, 0),) * 3)
                   for n in names])


@functools.lru_cache(maxsize=None)
def _crop_outputs():
  """{case: our output}, computed in one batch per (window, p_interval): mixed valid lengths
  and zero padding in one call, as in training."""
  groups = {}
  for name, meta in META['crop'].items():
    groups.setdefault((meta['window'], tuple(meta['p_interval'])), []).append(name)
  outputs = {}
  for (window, p_interval), names in groups.items():
    metas = [META['crop'][n] for n in names]
    kwargs = {}
    if len(p_interval) == 2:
      kwargs = dict(p=jnp.array([m['p'] for m in metas]),
                    start=jnp.array([m['start'] for m in metas]))
    out = augment.valid_crop_resize(_padded(names), window, p_interval, **kwargs)
    outputs.update(zip(names, np.asarray(out)))
  return outputs


# -- parity with the reference ------------------------------------------------------------------

@pytest.mark.parametrize('name', list(META['crop']))
def test_valid_crop_resize_matches_reference(name):
  meta = META['crop'][name]
  x = CROP_INPUTS[name]
  assert int(augment.valid_frame_counts(x[None])[0]) == meta['valid']
  if 'u' in meta:
    length = augment.train_crop_length(jnp.array([meta['valid']]), jnp.array([meta['p']]))
    assert int(length[0]) == meta['length']
  _assert_close(_crop_outputs()[name], EXPECTED[f'crop_{name}_out'], np.abs(x).max())


def test_same_length_resize_is_a_copy():
  # L == window: PyTorch copies; so do we, bit for bit.
  np.testing.assert_array_equal(_crop_outputs()['eval_same_length'],
                                EXPECTED['crop_eval_same_length_out'])


def test_single_sequence_float64_input():
  # SBU's reference arrays are float64; the crop computes (and returns) float32.
  x = CROP_INPUTS['eval_sbu_pad']
  assert x.dtype == np.float64
  out = augment.valid_crop_resize(x[None], 40, [0.95])
  assert out.dtype == jnp.float32
  _assert_close(out[0], EXPECTED['crop_eval_sbu_pad_out'])


def test_eval_bias_truncates_like_float64():
  # (1 - 0.95) * 40 / 2 is 1.0000000000000009 in float64 but below 1 in float32.
  begin, length = augment.eval_crop_window(jnp.array([40, 120, 39, 1, 0]), 0.95, 300)
  np.testing.assert_array_equal(begin, [1, 3, 0, 0, 0])
  np.testing.assert_array_equal(length, [38, 114, 39, 1, 1])


def test_rotation_matrices_match_reference():
  got = augment.rotation_matrices(EXPECTED['rot_angles'])
  np.testing.assert_allclose(got, EXPECTED['rot_matrices'], rtol=0, atol=2e-7)


def test_rotation_applied_like_reference():
  x = gen.rotation_input()
  angles = EXPECTED['random_rot_angles']
  out = augment.apply_rotation(np.broadcast_to(x, (len(angles),) + x.shape),
                               augment.rotation_matrices(angles))
  _assert_close(out, EXPECTED['random_rot_out'])


@pytest.mark.parametrize('name', list(META['ntu']))
def test_ntu_feeder_pipeline_matches_reference(name):
  meta = META['ntu'][name]
  x = gen.ntu_input()
  streams = dict(bone_pairs=augment.NTU_BONE_PAIRS if meta.get('bone') else None,
                 vel=meta.get('vel', False))
  if len(meta['p_interval']) == 1:
    out = augment.augment_eval(x, window=META['ntu_window'], p_interval=meta['p_interval'],
                               **streams)
  else:
    draws = augment.TrainDraws(jnp.array(meta['p']), jnp.array(meta['start']),
                               jnp.asarray(EXPECTED[f'ntu_{name}_angles']),
                               jnp.asarray(EXPECTED[f'ntu_{name}_perm']))
    lengths = augment.train_crop_length(augment.valid_frame_counts(x), draws.p)
    np.testing.assert_array_equal(lengths, meta['length'])
    out = augment.apply_train(x, draws, window=META['ntu_window'], p_interval=meta['p_interval'],
                              random_rot=meta.get('random_rot', False),
                              entity_rearrangement=meta.get('entity_rearrangement', False),
                              **streams)
  _assert_close(out, EXPECTED[f'ntu_{name}_out'], np.abs(x).max())


# -- laws ---------------------------------------------------------------------------------------

def _random_batch(seed=0, n=4, num_frames=80, num_joints=25, num_entities=2):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, num_frames, num_joints, num_entities, 3)).astype(np.float32)
  lengths = rng.integers(1, num_frames + 1, size=n)
  x[np.arange(num_frames)[None, :] >= lengths[:, None]] = 0
  return x


def test_eval_crop_is_deterministic():
  x = _random_batch()
  a = augment.augment_eval(x, window=48)
  np.testing.assert_array_equal(a, augment.augment_eval(x.copy(), window=48))
  np.testing.assert_array_equal(a, augment.valid_crop_resize(x, 48, [0.95],
                                                             key=jax.random.key(5)))


def test_rotation_preserves_bone_lengths():
  x = _random_batch(1)
  keys = augment.example_keys(0, 0, np.arange(len(x)))
  out = augment.random_rot(x, keys, theta=np.pi)
  lengths = lambda y: np.linalg.norm(np.asarray(augment.bone(y)), axis=-1)
  np.testing.assert_allclose(lengths(out), lengths(x), rtol=1e-5, atol=1e-5)
  r = np.asarray(augment.rotation_matrices(jax.random.uniform(jax.random.key(0), (16, 3),
                                                              minval=-3, maxval=3)))
  np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape),
                             atol=1e-6)
  np.testing.assert_allclose(np.linalg.det(r), 1, atol=1e-5)


def test_rotation_angles_in_range():
  angles = augment.draw_angles(augment.example_keys(0, 0, np.arange(512)), theta=0.3)
  assert np.all(np.abs(np.asarray(angles)) <= 0.3)
  assert np.abs(np.asarray(angles)).max() > 0.25


def test_entity_rearrangement_is_a_permutation():
  x = _random_batch(2, n=64, num_frames=8, num_joints=3, num_entities=3)
  out = np.asarray(augment.entity_rearrangement(x, augment.example_keys(1, 2, np.arange(64))))
  orders = set()
  for n in range(len(x)):
    # Each output entity is one whole input entity, each used once, same order on all frames.
    match = [[np.array_equal(out[n, :, :, i], x[n, :, :, j]) for j in range(3)] for i in range(3)]
    perm = [int(np.argmax(row)) for row in match]
    assert all(any(row) for row in match) and sorted(perm) == [0, 1, 2]
    orders.add(tuple(perm))
  assert len(orders) == 6


# One training configuration shared by the tests below, so they reuse one compiled program.
TRAIN = dict(window=48, p_interval=(0.5, 1), random_rot=True, entity_rearrangement=True,
             bone_pairs=augment.NTU_BONE_PAIRS, vel=True)


def test_same_key_same_output_different_key_different_output():
  x = _random_batch(3)
  k = augment.example_keys(7, 3, np.arange(4))
  out = np.asarray(augment.augment_train(x, k, **TRAIN))
  np.testing.assert_array_equal(
      out, augment.augment_train(x, augment.example_keys(7, 3, np.arange(4)), **TRAIN))
  for other in (augment.example_keys(8, 3, np.arange(4)), augment.example_keys(7, 4, np.arange(4)),
                augment.example_keys(7, 3, np.arange(4) + 4)):
    diff = np.abs(out - np.asarray(augment.augment_train(x, other, **TRAIN))).max(axis=(1, 2, 3, 4))
    assert np.all(diff > 1e-3)


def test_example_keys_derivation():
  keys = augment.example_keys(3, 17, np.array([0, 9]))
  for key, index in zip(keys, (0, 9)):
    want = jax.random.fold_in(jax.random.fold_in(jax.random.key(3), 17), index)
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(want))


def test_example_augmentation_independent_of_batch():
  # Keys depend on (seed, step, example index) only: an example gets the same augmentation
  # whatever batch, or position in it, it lands in (a resumed run re-batches freely).
  x = _random_batch(4)
  indices = np.array([5, 6, 7, 8])
  order = np.array([2, 0, 3, 1])
  full = augment.augment_train(x, augment.example_keys(0, 11, indices), **TRAIN)
  shuffled = augment.augment_train(x[order], augment.example_keys(0, 11, indices[order]), **TRAIN)
  np.testing.assert_array_equal(np.asarray(full)[order], shuffled)


def test_flags_do_not_change_other_draws():
  x = _random_batch(5)
  k = augment.example_keys(0, 0, np.arange(4))
  crop_only = augment.augment_train(x, k, window=48, random_rot=False)
  rotated = augment.augment_train(x, k, window=48, random_rot=True)
  draws = augment.draw_train(k, augment.valid_frame_counts(x), p_interval=(0.5, 1),
                             num_entities=2)
  r = np.asarray(augment.rotation_matrices(draws.angles))
  _assert_close(rotated, np.einsum('nck,ntvmk->ntvmc', r, np.asarray(crop_only)))


def test_train_crop_draws_stay_in_range():
  valid = jnp.array([0, 1, 40, 63, 64, 65, 100, 300] * 64)
  keys = augment.example_keys(0, 0, np.arange(valid.shape[0]))
  draws = augment.draw_train(keys, valid, p_interval=(0.5, 1), num_entities=2)
  p, start = np.asarray(draws.p), np.asarray(draws.start)
  length = np.asarray(augment.train_crop_length(valid, draws.p))
  assert np.all((p >= 0.5) & (p < 1))
  short = np.asarray(valid) <= 64
  np.testing.assert_array_equal(length[short], np.asarray(valid)[short])  # never cropped
  assert np.all((length >= np.minimum(64, valid)) & (length <= valid))
  assert np.all((start >= 0) & (start <= valid - length))
  assert start[np.asarray(valid) == 300].max() > 100  # starts spread over the range


def test_train_draws_are_uniform():
  """One block of words per key (`augment._draw_words`) gives every draw its distribution."""
  n = 6000
  keys = augment.example_keys(3, 7, np.arange(n))
  valid = jnp.full((n,), 100)  # p in [0.5, 1): lengths 64..99, starts in [0, 100 - length]
  draws = augment.draw_train(keys, valid, p_interval=(0.5, 1), num_entities=3)
  p = np.asarray(draws.p)
  np.testing.assert_allclose(np.histogram(p, bins=5, range=(0.5, 1))[0] / n, 0.2, atol=0.02)
  length = np.asarray(augment.train_crop_length(valid, draws.p))
  # start / (choices) is uniform in [0, 1) whatever the length.
  relative = (np.asarray(draws.start) + 0.5) / (100 - length + 1)
  np.testing.assert_allclose(np.histogram(relative, bins=4, range=(0, 1))[0] / n, 0.25, atol=0.025)
  short = length == 99  # two choices: 0 and 1
  assert set(np.asarray(draws.start)[short]) == {0, 1}
  angles = np.asarray(draws.angles)
  assert np.all(np.abs(angles) <= augment.DEFAULT_THETA)
  np.testing.assert_allclose(angles.mean(0), 0, atol=0.01)
  np.testing.assert_allclose(angles.std(0), augment.DEFAULT_THETA / np.sqrt(3), rtol=0.03)
  assert abs(np.corrcoef(angles.T)[0, 1]) < 0.05  # the three angles are independent
  perms = np.asarray(draws.perm)
  np.testing.assert_array_equal(np.sort(perms, 1), np.broadcast_to(np.arange(3), perms.shape))
  counts = np.unique(perms, axis=0, return_counts=True)[1]
  assert len(counts) == 6
  np.testing.assert_allclose(counts / n, 1 / 6, atol=0.02)


def test_standalone_draws_are_draw_trains():
  keys = augment.example_keys(0, 2, np.arange(8))
  x = _random_batch(7, n=8)
  draws = augment.draw_train(keys, augment.valid_frame_counts(x), p_interval=(0.5, 1),
                             num_entities=2)
  np.testing.assert_array_equal(augment.draw_angles(keys), draws.angles)
  np.testing.assert_array_equal(augment.draw_permutations(keys, 2), draws.perm)
  np.testing.assert_array_equal(
      augment.valid_crop_resize(x, 48, (0.5, 1), key=keys),
      augment.valid_crop_resize(x, 48, (0.5, 1), p=draws.p, start=draws.start))


def test_all_zero_sequence_gives_zeros():
  # The reference crashes on valid == 0; we return zeros.
  x = np.zeros((4, 80, 25, 2, 3), np.float32)
  for out in (augment.augment_eval(x, window=48),
              augment.augment_train(x, augment.example_keys(0, 0, np.arange(4)), **TRAIN)):
    assert out.shape == (4, 48, 25, 2, 3)
    np.testing.assert_array_equal(out, 0)


def test_streams():
  x = _random_batch(6, n=2, num_frames=10)
  b = np.asarray(augment.bone(x))
  np.testing.assert_array_equal(b[:, :, 20], 0)  # the (21, 21) pair
  np.testing.assert_array_equal(b[:, :, 0], x[:, :, 0] - x[:, :, 1])
  np.testing.assert_array_equal(b[:, :, 22], x[:, :, 22] - x[:, :, 7])
  v = np.asarray(augment.velocity(x))
  np.testing.assert_array_equal(v[:, :-1], x[:, 1:] - x[:, :-1])
  np.testing.assert_array_equal(v[:, -1], 0)
  with pytest.raises(ValueError, match='1-based'):
    augment.bone(x, ((0, 1),))


def test_keys_accepted_as_one_or_per_example():
  x = _random_batch(7)
  a = augment.random_rot(x, jax.random.key(3))
  b = augment.random_rot(x, jax.random.split(jax.random.key(3), 4))
  np.testing.assert_array_equal(a, b)
  augment.random_rot(x, jax.random.PRNGKey(3))  # raw uint32 key
  with pytest.raises(ValueError, match='keys'):
    augment.random_rot(x, jax.random.split(jax.random.key(3), 3))
  with pytest.raises(ValueError, match='key'):
    augment.valid_crop_resize(x, 16, (0.5, 1))


def test_jit_does_not_recompile_for_new_lengths():
  train = jax.jit(functools.partial(augment.augment_train, **TRAIN))
  evaluate = jax.jit(functools.partial(augment.augment_eval, window=48))
  for seed in range(4):
    x = _random_batch(10 + seed)  # a different mix of valid lengths each time
    assert len(set(np.asarray(augment.valid_frame_counts(x)).tolist())) > 1
    train(x, augment.example_keys(0, seed, np.arange(len(x)))).block_until_ready()
    evaluate(x).block_until_ready()
  assert train._cache_size() == 1  # pylint: disable=protected-access
  assert evaluate._cache_size() == 1  # pylint: disable=protected-access
