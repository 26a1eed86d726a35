"""On-device sequence transforms of the reference feeders, as pure jittable JAX functions.

This module owns what the reference's `Feeder.__getitem__` does to one sequence after loading
(`feeders/tools.py: valid_crop_resize, random_rot, _rot` and the bone / velocity code inlined
in `feeders/feeder_ntu.py`), rewritten for whole batches on the accelerator:

* batches are channels-last `(N, T, V, M, C)` (frames, joints, entities, xyz), zero-padded in
  T; outputs are float32 `(N, window, V, M, C)`;
* every function is vectorised over the batch (vmap) with static shapes, so one compiled
  program serves every mix of sequence lengths (the crop length is data, not a shape);
* randomness comes from JAX keys, one per example, derived from (seed, step, example index)
  by `example_keys`, so a resumed run sees the same augmentations; the draws are factored out
  (`draw_train` / `apply_train`, `p=` / `start=` of `valid_crop_resize`, `rotation_matrices`)
  so each step can be checked against the reference with the same draws.

Reference feeder order (NTU, SBU, H2O; train and test alike): crop + resize, rotation,
entity rearrangement, bone, velocity. Assembly101's feeder only crops + resizes.

Reference behaviour matched on purpose (see also docs/reference_preprocessing.md):
* `valid` is the number of frames whose *sum* over (C, V, M) is non-zero, wherever they lie;
  the crop always starts counting at frame 0, so interior empty frames push real frames at the
  end out of the crop, and a frame whose values cancel to a zero sum does not count.
* Test crop: `bias = int((1 - p) * valid / 2)` evaluated in float64 (a host-side table, so the
  truncation equals the reference's exactly), window `[bias, valid - bias)`.
* Train crop: `length = min(max(floor(valid * p), 64), valid)`; sequences shorter than 64
  valid frames (all of SBU, whose valid count is always 46) are therefore never cropped, only
  resized. `start` is uniform in `[0, valid - length]`.
* Resize = `F.interpolate(bilinear, align_corners=False)` over time, i.e. 1-D linear
  interpolation with `src = (t + 0.5) * L / W - 0.5` clamped to >= 0 and the upper neighbour
  clamped to L - 1, in float32. The source positions equal PyTorch's bit for bit (including
  its single-rounding multiply-add and its correctly rounded L / W); the final weighted sum
  may differ by an ulp, so outputs agree to float32 rounding, not bit for bit.
* Rotation: angles uniform in [-theta, theta] per axis, one draw per sequence (all frames),
  `R = Rz @ Ry @ Rx` with the reference's sign convention, applied as `xyz' = R @ xyz`.
* Entity rearrangement: one uniform permutation of the M axis per sequence, all frames.
* Bone: joint `v1` minus joint `v2` for each (v1, v2) pair, other joints zero (the NTU pair
  (21, 21) makes the spine-shoulder bone always zero). Velocity: `x[t+1] - x[t]`, last frame
  zero, computed after the resize (so over `window` frames) and after bone.

Deviations (where the reference crashes, we define a result):
* an all-zero sequence (valid = 0) crashes the reference; here it yields zeros;
* a test crop that would keep 0 frames (only possible for p < ~2/valid) keeps 1 frame;
* the train crop of the reference cannot run on numpy >= 2.4 (`int()` of a 1-element array);
  here it runs, with p drawn in float32 (so `floor(valid * p)` is taken in float32);
* NTU's feeder crashes on entity rearrangement without rotation (numpy `.size(3)`); here the
  flags are independent;
* Assembly101's feeder accepts `random_rot` but never applies it (its configs set it True):
  to reproduce the reference, pass `random_rot=False` for Assembly101.
"""

from __future__ import annotations

import functools
import inspect
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# The reference's NTU RGB+D bone pairs, (joint, parent) in 1-based NTU joint numbers.
NTU_BONE_PAIRS = ((1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21),
                  (10, 9), (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1),
                  (18, 17), (19, 18), (20, 19), (22, 23), (21, 21), (23, 8), (24, 25), (25, 12))

# The reference's lower bound on a training crop, in frames.
MIN_CROP_LENGTH = 64

# The reference's default rotation range, in radians, per axis.
DEFAULT_THETA = 0.3

# The reference's test-time crop ratio (`p_interval: [0.95]` in every config).
EVAL_P_INTERVAL = (0.95,)


def _hashable(value):
  if isinstance(value, (list, tuple, np.ndarray)):
    return tuple(_hashable(v) for v in value)
  return value.item() if isinstance(value, np.generic) else value


def _jit(*static_argnames):
  """jax.jit with the named arguments static, lists among them made hashable (tuples)."""
  def wrap(fn):
    jitted = jax.jit(fn, static_argnames=static_argnames)
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
      bound = signature.bind(*args, **kwargs)
      for name in static_argnames:
        if name in bound.arguments:
          bound.arguments[name] = _hashable(bound.arguments[name])
      return jitted(*bound.args, **bound.kwargs)
    return call
  return wrap


# -- keys ---------------------------------------------------------------------------------------

@_jit()
def example_keys(seed, step, example_indices) -> jax.Array:
  """One typed key per example: fold_in(fold_in(key(seed), step), example_index).

  Keys depend only on (seed, step, index), not on batch composition or device count, so a
  resumed run, or the same example in another batch, gets the same augmentation.
  """
  step_key = jax.random.fold_in(jax.random.key(seed), step)
  indices = jnp.asarray(example_indices, dtype=jnp.uint32)
  return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(indices)


def _batch_keys(key, n: int) -> jax.Array:
  """`key` as n typed keys: a single key is split, a batch of n keys is taken as is."""
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  if key.ndim == 0:
    return jax.random.split(key, n)
  if key.shape != (n,):
    raise ValueError(f'expected one key or {n} keys, got key shape {key.shape}')
  return key


# Every random quantity of an example's training transform comes from one block of uint32 words
# drawn from its key: crop ratio, crop start, three rotation angles, then one word per entity
# (at least three, so the words do not depend on M for the datasets here). One threefry call
# for the batch: a key split per quantity made ~10, each a loop of small kernels (the NTU train
# step's augmentation compiled 140 modules in 1.5 CPU-s that way, 54 in 0.7 now; benchmarks/
# PERFORMANCE.md).
_P_WORD, _START_WORD, _ANGLE_WORDS, _ENTITY_WORD = 0, 1, slice(2, 5), 5


def _draw_words(keys: jax.Array, num_entities: int = 3) -> jax.Array:
  """(N,) keys -> (N, W) uint32 words, W = 5 + max(num_entities, 3) (see `_P_WORD` ...)."""
  num_words = _ENTITY_WORD + max(num_entities, 3)
  return jax.vmap(lambda k: jax.random.bits(k, (num_words,), jnp.uint32))(keys)


def _uniform(words: jax.Array, lo: float, hi: float) -> jax.Array:
  """Words -> float32 uniform in [lo, hi): the top 23 bits as the mantissa of [1, 2), as
  jax.random.uniform builds its floats."""
  unit = jax.lax.bitcast_convert_type((words >> 9) | np.uint32(0x3F800000), jnp.float32) - 1.0
  return jnp.maximum(lo, lo + (hi - lo) * unit)


def _below(words: jax.Array, n) -> jax.Array:
  """Words -> int32 uniform in [0, n) (n >= 1, < 2**23: exact in float32)."""
  n = jnp.asarray(n, jnp.int32)
  return jnp.minimum((_uniform(words, 0.0, 1.0) * n.astype(jnp.float32)).astype(jnp.int32), n - 1)


# -- crop + resize ------------------------------------------------------------------------------

@_jit()
def valid_frame_counts(x) -> jax.Array:
  """(N, T, V, M, C) -> (N,) int32 number of frames whose sum over (V, M, C) is non-zero."""
  x = jnp.asarray(x, jnp.float32)
  return jnp.sum(jnp.sum(x, axis=(2, 3, 4)) != 0, axis=1, dtype=jnp.int32)


def eval_crop_window(valid, p: float, num_frames: int):
  """The reference's test crop: (begin, length) for each valid count, length >= 1.

  The bias is looked up in a table built on the host in float64 with the reference's own
  expression, so its truncation matches exactly (a float32 evaluation would not).
  """
  counts = np.arange(num_frames + 1, dtype=np.int64)
  bias_table = np.trunc((1 - p) * counts / 2).astype(np.int32)
  valid = jnp.asarray(valid, jnp.int32)
  begin = jnp.asarray(bias_table)[valid]
  return begin, jnp.maximum(valid - 2 * begin, 1)


def train_crop_length(valid, p, min_length: int = MIN_CROP_LENGTH) -> jax.Array:
  """The reference's train crop length `min(max(floor(valid * p), min_length), valid)`."""
  valid = jnp.asarray(valid, jnp.int32)
  scaled = jnp.floor(valid.astype(jnp.float32) * jnp.asarray(p, jnp.float32)).astype(jnp.int32)
  return jnp.minimum(jnp.maximum(scaled, min_length), valid)


def _draw_crop(words, valid, p_interval, min_length, p=None):
  """Per example (`_draw_words`): p uniform in p_interval (unless given), start uniform in
  [0, valid - length]."""
  if p is None:
    p = _uniform(words[:, _P_WORD], float(p_interval[0]), float(p_interval[1]))
  p = jnp.broadcast_to(jnp.asarray(p, jnp.float32), valid.shape)
  length = train_crop_length(valid, p, min_length)
  return p, _below(words[:, _START_WORD], valid - length + 1)


# Windows up to this size have t + 0.5 representable in 12 significant bits, which the exact
# source-position arithmetic below relies on.
_EXACT_SOURCE_MAX_WINDOW = 2048


def _source_positions(length, window: int, num_frames: int):
  """PyTorch's source positions `max(scale * (t + 0.5) - 0.5, 0)`, scale = float32(L / W).

  `scale` comes from a host table over every possible length (<= num_frames): XLA lowers a
  float32 division to a reciprocal multiply that is not always correctly rounded.

  PyTorch evaluates `scale * (t + 0.5) - 0.5` with one rounding (a fused multiply-add); a
  plain float32 evaluation rounds twice and moves a position by an ulp, which a steep segment
  turns into ~1e-4 relative output differences. The exact value is formed from products that
  float32 holds exactly: scale is split into two 12-bit halves by masking its bits, and
  t + 0.5 has at most 12 significant bits, so both products, and the subtraction of 0.5 from
  the larger one, are exact, and the final addition is the single rounding.
  """
  scale_table = np.arange(num_frames + 1, dtype=np.float32) / np.float32(window)
  scale = jnp.asarray(scale_table)[jnp.clip(length, 0, num_frames)]
  a = jnp.arange(window, dtype=jnp.float32) + jnp.float32(0.5)
  if window > _EXACT_SOURCE_MAX_WINDOW:
    return jnp.maximum(scale * a - jnp.float32(0.5), 0)
  bits = jax.lax.bitcast_convert_type(scale, jnp.uint32)
  scale_hi = jax.lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), jnp.float32)
  scale_lo = scale - scale_hi
  src = (scale_hi * a - jnp.float32(0.5)) + scale_lo * a
  return jnp.maximum(src, 0)


def _resize_one(seq, begin, length, window: int):
  """Linear resize of frames [begin, begin + length) of one (T, ...) sequence to `window`.

  Gathers at computed indices so that `length` may be a traced value: the same program runs
  for every crop length.
  """
  length = jnp.maximum(length, 1)
  src = _source_positions(length, window, seq.shape[0])
  i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), length - 1)
  lam1 = jnp.clip(src - i0.astype(jnp.float32), 0, 1)
  lam0 = jnp.float32(1) - lam1
  i1 = i0 + (i0 < length - 1).astype(jnp.int32)
  shape = (window,) + (1,) * (seq.ndim - 1)
  return (lam0.reshape(shape) * jnp.take(seq, begin + i0, axis=0)
          + lam1.reshape(shape) * jnp.take(seq, begin + i1, axis=0))


def _as_float(x) -> jax.Array:
  """float32, except that float64 stays float64 (float64 parity checks of the train step; the
  reference's feeders themselves deliver float32)."""
  x = jnp.asarray(x)
  return x.astype(jnp.float64 if x.dtype == jnp.float64 else jnp.float32)


@_jit('window')
def crop_resize(x, begin, length, window: int) -> jax.Array:
  """Frames [begin, begin + length) of each sequence, linearly resized to `window` frames."""
  x = _as_float(x)
  begin = jnp.broadcast_to(jnp.asarray(begin, jnp.int32), x.shape[:1])
  length = jnp.broadcast_to(jnp.asarray(length, jnp.int32), x.shape[:1])
  return jax.vmap(lambda s, b, n: _resize_one(s, b, n, window))(x, begin, length)


@_jit('window', 'p_interval', 'min_length')
def valid_crop_resize(x, window: int, p_interval: Sequence[float], key=None, *, p=None,
                      start=None, min_length: int = MIN_CROP_LENGTH) -> jax.Array:
  """The reference's `valid_crop_resize` on a batch: (N, T, V, M, C) -> (N, window, V, M, C).

  Args:
    x: zero-padded batch; computed in float32 (float64 stays float64, for parity checks).
    window: output frames.
    p_interval: `[p]` for the deterministic test crop, `[lo, hi]` for the random train crop.
    key: train crop only, one key or one per example; unused where `p` and `start` are given.
    p: train crop only, (N,) crop ratios to use instead of drawing them.
    start: train crop only, (N,) first frames to use instead of drawing them.
    min_length: the train crop's lower bound (the reference's 64).
  """
  x = _as_float(x)
  n, num_frames = x.shape[:2]
  valid = valid_frame_counts(x)
  if len(p_interval) == 1:
    begin, length = eval_crop_window(valid, float(p_interval[0]), num_frames)
    return crop_resize(x, begin, length, window)
  if len(p_interval) != 2:
    raise ValueError(f'p_interval must have 1 or 2 values, got {p_interval!r}')
  if p is None or start is None:
    if key is None:
      raise ValueError('the train crop needs a key, or both p= and start=')
    p, drawn_start = _draw_crop(_draw_words(_batch_keys(key, n)), valid, p_interval, min_length,
                                p=p)
    start = drawn_start if start is None else start
  length = train_crop_length(valid, jnp.broadcast_to(jnp.asarray(p, jnp.float32), (n,)),
                             min_length)
  return crop_resize(x, start, length, window)


# -- rotation, entities, streams ----------------------------------------------------------------

@_jit()
def rotation_matrices(angles) -> jax.Array:
  """(..., 3) angles about x, y, z -> (..., 3, 3) float32 `Rz @ Ry @ Rx` as the reference builds."""
  angles = jnp.asarray(angles, jnp.float32)
  c, s = jnp.cos(angles), jnp.sin(angles)
  one, zero = jnp.ones_like(c[..., 0]), jnp.zeros_like(c[..., 0])

  def mat(rows):
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)

  rx = mat([(one, zero, zero), (zero, c[..., 0], s[..., 0]), (zero, -s[..., 0], c[..., 0])])
  ry = mat([(c[..., 1], zero, -s[..., 1]), (zero, one, zero), (s[..., 1], zero, c[..., 1])])
  rz = mat([(c[..., 2], s[..., 2], zero), (-s[..., 2], c[..., 2], zero), (zero, zero, one)])
  hi = jax.lax.Precision.HIGHEST  # GPUs would otherwise round the operands to TF32
  return jnp.matmul(jnp.matmul(rz, ry, precision=hi), rx, precision=hi)


@_jit()
def apply_rotation(x, matrices) -> jax.Array:
  """Rotates every point of each sequence: x[n, ..., :] <- matrices[n] @ x[n, ..., :]."""
  x = _as_float(x)
  r = jnp.asarray(matrices, jnp.float32).reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (3, 3))
  # Broadcast multiply-and-sum rather than a dot, so GPUs cannot lower it to TF32.
  return jnp.sum(r * x[..., None, :], axis=-1)


@_jit('theta')
def draw_angles(keys, theta: float = DEFAULT_THETA) -> jax.Array:
  """(N,) keys -> (N, 3) angles uniform in [-theta, theta] (`draw_train`'s)."""
  return _angles(_draw_words(keys), theta)


def _angles(words, theta: float) -> jax.Array:
  return _uniform(words[:, _ANGLE_WORDS], -theta, theta)


@_jit('theta')
def random_rot(x, key, theta: float = DEFAULT_THETA) -> jax.Array:
  """The reference's `random_rot`: one random rotation per sequence."""
  keys = _batch_keys(key, x.shape[0])
  return apply_rotation(x, rotation_matrices(draw_angles(keys, theta)))


@_jit('num_entities')
def draw_permutations(keys, num_entities: int) -> jax.Array:
  """(N,) keys -> (N, M) int32 uniform permutations of range(M) (`draw_train`'s)."""
  return _permutations(_draw_words(keys, num_entities), num_entities)


def _permutations(words, num_entities: int) -> jax.Array:
  """The order that sorts each example's M entity words (ties, p ~ M^2 / 2^33, keep order)."""
  entity_words = words[:, _ENTITY_WORD:_ENTITY_WORD + num_entities]
  return jnp.argsort(entity_words, axis=1, stable=True).astype(jnp.int32)


@_jit()
def permute_entities(x, perms) -> jax.Array:
  """x[n, :, :, m] <- x[n, :, :, perms[n, m]] (the reference's `data[:, :, :, randperm(M)]`)."""
  return jax.vmap(lambda s, p: jnp.take(s, p, axis=2))(jnp.asarray(x), jnp.asarray(perms))


@_jit()
def entity_rearrangement(x, key) -> jax.Array:
  """The reference's entity rearrangement: a random order of the M axis per sequence."""
  keys = _batch_keys(key, x.shape[0])
  return permute_entities(x, draw_permutations(keys, x.shape[3]))


@_jit('pairs')
def bone(x, pairs=NTU_BONE_PAIRS) -> jax.Array:
  """Bone stream: joint v1 minus joint v2 for 1-based (v1, v2) pairs; unlisted joints are zero."""
  x = jnp.asarray(x)
  pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
  num_joints = x.shape[2]
  if pairs.size and (pairs.min() < 1 or pairs.max() > num_joints):
    raise ValueError(f'bone pairs must be 1-based joint numbers in 1..{num_joints}')
  child, parent = pairs[:, 0] - 1, pairs[:, 1] - 1
  return jnp.zeros_like(x).at[:, :, child].set(x[:, :, child] - x[:, :, parent])


@_jit()
def velocity(x) -> jax.Array:
  """Motion stream: x[t+1] - x[t] along time, last frame zero."""
  x = jnp.asarray(x)
  return jnp.concatenate([x[:, 1:] - x[:, :-1], jnp.zeros_like(x[:, :1])], axis=1)


# -- composed pipelines -------------------------------------------------------------------------

class TrainDraws(NamedTuple):
  """Everything random in one training transform, per example."""
  p: jax.Array       # (N,) float32 crop ratio
  start: jax.Array   # (N,) int32 first cropped frame
  angles: jax.Array  # (N, 3) float32 rotation angles about x, y, z
  perm: jax.Array    # (N, M) int32 entity order


@_jit('p_interval', 'num_entities', 'theta', 'min_length')
def draw_train(keys, valid, *, p_interval, num_entities: int, theta: float = DEFAULT_THETA,
               min_length: int = MIN_CROP_LENGTH) -> TrainDraws:
  """Draws every random quantity of `augment_train` from per-example keys.

  All come from one block of words per key (`_draw_words`), drawn whatever the flags, so
  switching one augmentation off leaves the others' draws unchanged.
  """
  words = _draw_words(_batch_keys(keys, valid.shape[0]), num_entities)
  if len(p_interval) == 2:
    p, start = _draw_crop(words, valid, p_interval, min_length)
  else:
    p = jnp.full(valid.shape, float(p_interval[0]), jnp.float32)
    start = jnp.zeros(valid.shape, jnp.int32)
  return TrainDraws(p, start, _angles(words, theta), _permutations(words, num_entities))


def _streams(x, bone_pairs, vel):
  if bone_pairs is not None:
    x = bone(x, bone_pairs)
  if vel:
    x = velocity(x)
  return x


@_jit('window', 'p_interval', 'random_rot', 'entity_rearrangement', 'bone_pairs', 'vel',
      'min_length')
def apply_train(x, draws: TrainDraws, *, window: int, p_interval, random_rot: bool = True,
                entity_rearrangement: bool = False, bone_pairs=None, vel: bool = False,
                min_length: int = MIN_CROP_LENGTH) -> jax.Array:
  """The reference training transform with given draws, in the reference feeder's order."""
  x = valid_crop_resize(x, window, p_interval, p=draws.p, start=draws.start,
                        min_length=min_length)
  if random_rot:
    x = apply_rotation(x, rotation_matrices(draws.angles))
  if entity_rearrangement:
    x = permute_entities(x, draws.perm)
  return _streams(x, bone_pairs, vel)


@_jit('window', 'p_interval', 'random_rot', 'entity_rearrangement', 'theta', 'bone_pairs',
      'vel', 'min_length')
def augment_train(x, key, *, window: int, p_interval=(0.5, 1.0), random_rot: bool = True,
                  entity_rearrangement: bool = False, theta: float = DEFAULT_THETA,
                  bone_pairs=None, vel: bool = False,
                  min_length: int = MIN_CROP_LENGTH) -> jax.Array:
  """Training transform of the reference feeders: crop, rotation, rearrangement, bone, vel.

  Args:
    x: (N, T, V, M, C) zero-padded batch.
    key: one key per example (`example_keys(seed, step, indices)`), or one key to split.
    window: output frames.
    p_interval: the train crop's `[lo, hi]` (a single `[p]` gives the deterministic crop).
    random_rot, entity_rearrangement: the reference feeder flags.
    theta: rotation range in radians.
    bone_pairs: 1-based (joint, parent) pairs for the bone stream (`NTU_BONE_PAIRS` for NTU;
      the reference applies bone / vel only in its NTU feeder), None for joints.
    vel: motion stream.
    min_length: the train crop's lower bound.
  Returns:
    float32 (N, window, V, M, C).
  """
  x = jnp.asarray(x, jnp.float32)
  draws = draw_train(key, valid_frame_counts(x),
                     p_interval=p_interval, num_entities=x.shape[3], theta=theta,
                     min_length=min_length)
  return apply_train(x, draws, window=window, p_interval=p_interval, random_rot=random_rot,
                     entity_rearrangement=entity_rearrangement, bone_pairs=bone_pairs, vel=vel,
                     min_length=min_length)


def clip_crop_window(valid, p: float, num_frames: int, num_clips: int, clip):
  """Multi-clip testing (pyskl's `num_clips`): (begin, length) of clip `clip` of `num_clips`.

  Every clip has the test crop's length (`eval_crop_window`); the clips' first frames are
  spread uniformly (rounded half up) from frame 0 to `valid - length`, so the first clip
  starts at frame 0, the last ends at the last valid frame, and an odd count has the
  reference's centre crop in the middle. One clip is the reference's centre crop itself.
  `clip` may be traced.
  """
  begin, length = eval_crop_window(valid, p, num_frames)
  if num_clips == 1:
    return begin, length
  slack = jnp.maximum(jnp.asarray(valid, jnp.int32) - length, 0)
  clip = jnp.asarray(clip, jnp.int32)
  return (2 * clip * slack + num_clips - 1) // (2 * (num_clips - 1)), length


@_jit('window', 'p_interval', 'bone_pairs', 'vel', 'num_clips')
def augment_eval(x, *, window: int, p_interval=EVAL_P_INTERVAL, bone_pairs=None,
                 vel: bool = False, num_clips: int = 1, clip=0) -> jax.Array:
  """Test transform of the reference feeders: deterministic centre crop + resize, bone, vel.

  With `num_clips` > 1 the crop is clip `clip` (traced: one program for every clip) of
  `clip_crop_window`'s uniformly placed crops instead of the centre one.
  """
  if num_clips == 1:
    x = valid_crop_resize(x, window, p_interval)
  else:
    if len(p_interval) != 1:
      raise ValueError(f'multi-clip testing needs the test crop ([p]), got p_interval {p_interval!r}')
    x = _as_float(x)
    begin, length = clip_crop_window(valid_frame_counts(x), float(p_interval[0]), x.shape[1],
                                     num_clips, clip)
    x = crop_resize(x, begin, length, window)
  return _streams(x, bone_pairs, vel)
