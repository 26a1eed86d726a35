"""ISTA-Net (Interactive Spatiotemporal Token Attention Network) as Flax Linen modules.

Computes what the official PyTorch model (`model/ISTANet.py`, `model/TSABlock.py`,
`model/PositionalEncoding.py` of github.com/Necolizer/ISTA-Net) computes, in one layout:
channels-last. Notation as in the paper and the reference:

  N batch, C channels, T frames, J joints (V in feeders), E entities (M in feeders),
  window (Tw, Jw, Ew), U tokens = ceil(T/Tw) * ceil(J/Jw) * ceil(E/Ew), JE = Jw * Ew.

Inside the model activations are token-major, (N, U, Tw, JE, C): both attention products are
then plain batched matmuls (see `TSABlock`). The reference's (N, C, Tw, JE, U) only appears at
the checkpoint boundary (`torch_compat`). Every convolution is a matmul or a 1-D convolution
with a hand-made backward (in float32 by Winograd's minimal filtering, `_winograd_conv4`:
about half the matmul work of the direct form), and BatchNorm's backward is written out
(XLA:CPU's automatic ones spend most of a train step in layout transposes and memory traffic).
In bf16 every matmul takes bf16 operands; on the CPU it gives float32 products
(`_accumulation`), which XLA:CPU runs on AMX, elsewhere bf16 ones as torch.autocast does
(`matmul_outputs`, `resolve_matmul_outputs`).

Variable paths joined with '.' are the reference's state-dict keys (`blocks.3.proj.0.weight`);
leaves keep PyTorch's names (`weight`, `running_var`, ...) with channels-last layouts:

  conv weight   (kt, kj, ku, in, out)     reference (out, in, kt, kj, ku)
  fc weight     (in, out)                 reference (out, in)
  pes.pe        (1, Tw, JE, U, C)         reference (1, C, Tw, JE, U)

Collections: `params` (trained), `batch_stats` (BatchNorm running statistics, updated in
train mode), `buffers` (the positional-encoding tables: constants that PyTorch stores in
checkpoints, carried so that a loaded model uses the stored values bit for bit).
"""

from __future__ import annotations

import fractions
import functools
import math
from typing import Any, Optional, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
LEAKY_SLOPE = 0.1  # nn.LeakyReLU(0.1) everywhere in the reference.


def num_tokens(num_frames: int, num_joints: int, num_persons: int,
               window_size: Sequence[int]) -> int:
  """U: windows per axis after replicate padding, multiplied."""
  tw, jw, ew = window_size
  return math.ceil(num_frames / tw) * math.ceil(num_joints / jw) * math.ceil(num_persons / ew)


def window_partition(x: jax.Array, window_size: Sequence[int]) -> jax.Array:
  """(N, T, J, E, C) -> (N, Tw, Jw*Ew, U, C), padding T, J, E to multiples by replication.

  As in the reference, a window holds frames that lie T/Tw apart (the within-window index is
  the outer factor of T), and tokens are ordered (T/Tw, J/Jw, E/Ew).
  """
  _, t, j, e, _ = x.shape
  tw, jw, ew = window_size
  pads = [(0, 0), (0, -t % tw), (0, -j % jw), (0, -e % ew), (0, 0)]
  if any(p[1] for p in pads):
    x = jnp.pad(x, pads, mode='edge')
  return einops.rearrange(
      x, 'n (tw tu) (jw ju) (ew eu) c -> n tw (jw ew) (tu ju eu) c', tw=tw, jw=jw, ew=ew)


def positional_encoding_table(channels: int, window_size: Sequence[int],
                              tokens: int) -> np.ndarray:
  """The reference's sinusoidal token encoding, (1, Tw, Jw*Ew, U, C), float32 as it computes it.

  It depends on the token index only; the reference repeats it over the window's positions
  and stores the whole table, so we do too.
  """
  position = np.arange(tokens, dtype=np.float32)[:, None]
  div_term = np.exp(np.arange(0, channels, 2, dtype=np.float32)
                    * np.float32(-(math.log(10000.0) / channels)))
  table = np.zeros((tokens, channels), np.float32)
  table[:, 0::2] = np.sin(position * div_term)
  table[:, 1::2] = np.cos(position * div_term)[:, :channels // 2]
  tw, jw, ew = window_size
  return np.broadcast_to(table, (1, tw, jw * ew, tokens, channels)).copy()


def torch_uniform_init(fan_in: int):
  """PyTorch's default conv/linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weight and bias."""
  bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


@jax.custom_vjp
def leaky_relu(x):
  """jax.nn.leaky_relu(x, LEAKY_SLOPE), whose backward reads its output instead of its input.

  Both have the same sign, and the output is kept anyway (the next layer's input), while the
  input, a BatchNorm plus a residual fused into the activation, is not: autodiff's backward
  recomputed it from the two (one more full read per activation; 1.7% of the bf16 GPU train
  step's memory traffic).
  """
  return jax.nn.leaky_relu(x, LEAKY_SLOPE)


def _leaky_relu_fwd(x):
  y = jax.nn.leaky_relu(x, LEAKY_SLOPE)
  return y, y


def _leaky_relu_bwd(y, g):
  return (jnp.where(y >= 0, g, LEAKY_SLOPE * g),)


leaky_relu.defvjp(_leaky_relu_fwd, _leaky_relu_bwd)


def _matmul(x, w, precision):
  """x (..., I) @ w (I, O) as one 2-D matmul.

  Flattened so that the weight gradient is one (M, I)^T (M, O) matmul: on a multi-dimensional
  dot_general, XLA:CPU lays the output gradient out transposed first, a slow copy.
  """
  y = jnp.dot(x.reshape(-1, x.shape[-1]), w, precision=precision)
  return y.reshape(*x.shape[:-1], w.shape[-1])


def _is_16bit(dtype) -> bool:
  dtype = jnp.dtype(dtype)
  return bool(jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4)


# What a 16-bit matmul or convolution gives (`ISTANet.matmul_outputs`): 'float32' products, or
# the 'compute' dtype (bf16, as torch.autocast gives; both accumulate in float32 inside), or
# 'auto': float32 on the CPU, the compute dtype elsewhere (`resolve_matmul_outputs`).
MATMUL_OUTPUTS = ('auto', 'float32', 'compute')


def resolve_matmul_outputs(value: str, platform: Optional[str] = None) -> str:
  """'auto' -> 'float32' on platform 'cpu', 'compute' on any other (default: JAX's backend).

  XLA:CPU multiplies bf16 on the matrix units (AMX) only with float32 products: 2-3x the
  float32 matmul speed, where a bf16 product runs slower than float32. XLA:GPU runs a bf16
  convolution with float32 output as a float32 one (operands upcast, off the bf16 tensor-core
  rate), and float32 products double the memory traffic of every matmul's output, which most of
  a bf16 train step on a GPU waits for (`benchmarks/gpu_compile.py`).
  """
  if value not in MATMUL_OUTPUTS:
    raise ValueError(f'matmul_outputs must be one of {MATMUL_OUTPUTS}, got {value!r}')
  if value != 'auto':
    return value
  return 'float32' if (platform or jax.default_backend()) == 'cpu' else 'compute'


def _accumulation(dtype, outputs: str):
  """The product dtype of matmuls on `dtype` inputs: float32 for 16-bit floats where
  `outputs` is 'float32' (resolved), else None (the inputs' dtype). Results differ only in
  the products' rounding: bf16 products accumulate in float32 either way."""
  return jnp.float32 if _is_16bit(dtype) and outputs == 'float32' else None


def _shifted_matmuls(x4, w, precision, acc):
  """The 1-D convolution of x4 (P, L, R, I) along L as ONE matmul of the zero-padded input by
  [w_0 .. w_k-1], whose k output blocks are then summed, block j shifted by j (one fused pass of
  slices; padding the narrower input, not the k-times wider product, keeps the copies small)."""
  p, length, r, i = x4.shape
  k, _, o = w.shape
  pad = (k - 1) // 2
  x4 = jnp.pad(x4, [(0, 0), (pad, pad), (0, 0), (0, 0)])
  z = jnp.dot(x4.reshape(-1, i), w.transpose(1, 0, 2).reshape(i, k * o), precision=precision,
              preferred_element_type=acc).reshape(p, length + 2 * pad, r, k, o)
  return sum(z[:, j:j + length, :, j] for j in range(k))


def _conv_impl(x, w, axis, precision, acc):
  """Zero-padded 'same' cross-correlation of x (N, A, B, C, I) along axis 1 or 2, w (k, I, O).

  Runs as a 2-D NHWC convolution: XLA:CPU's forward convolutions are fast, its backward ones
  are not (see `_conv_along`). With float32 products of 16-bit inputs (`acc`) on the CPU as
  `_shifted_matmuls`, which runs on the matrix units where XLA:CPU's bf16 convolution does
  not. Returns `acc` or x's dtype.
  """
  n, a, b, c, i = x.shape
  x4 = x.reshape(n, a, b * c, i) if axis == 1 else x.reshape(n * a, b, c, i)
  k = w.shape[0]
  conv = lambda x4, w: jax.lax.conv_general_dilated(
      x4, w[:, None], window_strides=(1, 1), padding=[((k - 1) // 2,) * 2, (0, 0)],
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=precision,
      preferred_element_type=acc)
  if acc is None:
    y = conv(x4, w)
  else:
    y = jax.lax.platform_dependent(
        x4, w, cpu=lambda x4, w: _shifted_matmuls(x4, w, precision, acc), default=conv)
  return y.reshape(n, a, b, c, w.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3, 4, 5))
def _einsum_16bit(spec, a, b, precision, acc, gradient_acc):
  """einsum('A,B->C') of 16-bit a, b with `acc` products (float32, or None: a's dtype), whose
  backward also multiplies in 16 bits (products `gradient_acc`): autodiff would multiply a
  float32 cotangent by upcast operands, float32 matmuls (off the CPU's matrix units; on a GPU,
  off the bf16 tensor-core rate). As in `_conv_along`, the cotangent is rounded to a's dtype
  first (autocast's gradients are bf16)."""
  return jnp.einsum(spec, a, b, precision=precision, preferred_element_type=acc)


def _einsum_16bit_fwd(spec, a, b, precision, acc, gradient_acc):
  return _einsum_16bit(spec, a, b, precision, acc, gradient_acc), (a, b)


def _einsum_16bit_bwd(spec, precision, acc, gradient_acc, residuals, g):
  del acc
  a, b = residuals
  (sa, sb), sc = spec.split('->')[0].split(','), spec.split('->')[1]
  g = g.astype(a.dtype)
  da = jnp.einsum(f'{sc},{sb}->{sa}', g, b, precision=precision,
                  preferred_element_type=gradient_acc)
  db = jnp.einsum(f'{sa},{sc}->{sb}', a, g, precision=precision,
                  preferred_element_type=gradient_acc)
  return da.astype(a.dtype), db.astype(b.dtype)


_einsum_16bit.defvjp(_einsum_16bit_fwd, _einsum_16bit_bwd)


def _einsum(spec, a, b, precision, outputs, gradient_outputs=None):
  """jnp.einsum, or `_einsum_16bit` for 16-bit operands, products as `outputs` says (resolved
  `matmul_outputs`; the gradients' as `gradient_outputs`, default the same). Every index of
  each operand must be in the other or the result (so the backward is two einsums of the same
  form)."""
  if not _is_16bit(a.dtype):
    return jnp.einsum(spec, a, b, precision=precision)
  return _einsum_16bit(spec, a, b, precision, _accumulation(a.dtype, outputs),
                       _accumulation(a.dtype, gradient_outputs or outputs))


# How the 1-D convolutions (`proj`'s (1,1,k_u) and `TA`'s (k_t,1,1)) run; see `_conv_along`
# and `_winograd_conv`. 16-bit compute takes 'matmul' where 'winograd' is asked for.
CONV_ALGORITHMS = ('winograd', 'matmul', 'xla')


def conv_algorithm_run(conv_algorithm: str, dtype) -> str:
  """The algorithm `conv_algorithm` runs as in compute `dtype` (None: float32)."""
  if conv_algorithm == 'winograd' and dtype is not None and _is_16bit(dtype):
    return 'matmul'
  return conv_algorithm


# Winograd minimal filtering F(m, k) for kernel size k: m outputs per tile and the interpolation
# points (with infinity). F(4,5) does the token conv's work in 8 matmuls per 4 outputs instead of
# 20, F(4,3) the temporal conv's in 6 per 4 instead of 12. Points 0, +-1, +-2, +-1/2 keep the
# float32 error within ~5e-6 of the largest output and gradient (the direct convolution's is
# ~1e-6; tests/test_model.py bounds it); other choices measured: F(3,5) as accurate but
# slower, F(4,5) with 1/4 for -2 and F(5,5) lose a digit, F(5,3) no faster than F(4,3).
_HALF = fractions.Fraction(1, 2)
WINOGRAD_TILES = {3: (4, (0, 1, -1, 2, -2)), 5: (4, (0, 1, -1, 2, -2, _HALF, -_HALF))}


@functools.cache
def winograd_matrices(m: int, k: int, points: Sequence[Any]):
  """(AT (m, a), G (a, k), BT (a, a)), a = m + k - 1, float64: the correlation of a tile of a
  inputs x with a kernel w, y[i] = sum_j x[i + j] w[j] for i < m, is AT @ ((G @ w) * (BT @ x)).

  Toom-Cook: the polynomial product of w and an m-term polynomial is evaluated at the points
  (E w, D d), multiplied pointwise and interpolated (V^-1); correlation is its transpose,
  so AT = D^T, G = E, BT = V^-T. Computed in exact fractions, rounded once.
  """
  a = m + k - 1
  points = [fractions.Fraction(p) for p in points]
  if len(points) != a - 1 or len(set(points)) != a - 1:
    raise ValueError(f'F({m},{k}) needs {a - 1} distinct finite points, got {points}')

  def evaluation(n):  # rows: the n coefficients' weights at each point, last: infinity
    return [[p ** i for i in range(n)] for p in points] + [[0] * (n - 1) + [1]]

  # Gauss-Jordan inverse of the a x a evaluation matrix, in fractions.
  rows = [r + [int(i == j) for j in range(a)] for i, r in enumerate(evaluation(a))]
  for c in range(a):
    pivot = next(i for i in range(c, a) if rows[i][c] != 0)
    rows[c], rows[pivot] = rows[pivot], rows[c]
    rows[c] = [v / rows[c][c] for v in rows[c]]
    for i in range(a):
      if i != c and rows[i][c] != 0:
        rows[i] = [vi - rows[i][c] * vc for vi, vc in zip(rows[i], rows[c])]
  v_inv = np.array([r[a:] for r in rows], np.float64)
  at = np.array(evaluation(m), np.float64).T
  g = np.array(evaluation(k), np.float64)
  return at, g, v_inv.T


def _winograd_plan(k: int):
  """(m, AT, G, BT) of `WINOGRAD_TILES`' F(m, k) for kernel size k."""
  m, points = WINOGRAD_TILES[k]
  return (m, *winograd_matrices(m, k, points))


def _combine(matrix, arrays, axis=0):
  """Stacks sum_i matrix[j, i] * arrays[i] over j along a new `axis` (one fused elementwise pass
  in XLA) in few operations: two rows equal up to signs share their two partial sums (row =
  A + B, partner = A - B), terms of one magnitude are summed before their one multiply, and a
  sum that recurs in other rows is built once. Winograd's transforms have that structure (their
  points come in +-pairs); written term by term they were 8.9k of the NTU train step's 17.9k
  StableHLO operations, factored 6.4k of 15.4k, and XLA's serial passes scale with the count.
  In `lax` operations, which trace faster than jnp's operators and indexing."""
  matrix = np.asarray(matrix, np.float64)
  sums = {}

  def signed_sum(terms):  # ((index, +-1), ...) with a positive first sign: built once
    if terms not in sums:
      total = arrays[terms[0][0]]
      for index, sign in terms[1:]:
        total = (jax.lax.add if sign > 0 else jax.lax.sub)(total, arrays[index])
      sums[terms] = total
    return sums[terms]

  def linear(coefficients):  # {index: c} -> (sign, sum_i c_i arrays[i]) or None
    parts = []
    for magnitude in sorted({abs(c) for c in coefficients.values()}):
      terms = [(i, 1 if c > 0 else -1) for i, c in sorted(coefficients.items())
               if abs(c) == magnitude]
      sign = terms[0][1]
      part = signed_sum(tuple((i, s * sign) for i, s in terms))
      if magnitude != 1:
        part = jax.lax.mul(part, jax.lax.full((), float(magnitude), part.dtype))
      parts.append((sign, part))
    if not parts:
      return None
    sign, total = parts[0]
    for s, part in parts[1:]:
      total = (jax.lax.add if s == sign else jax.lax.sub)(total, part)
    return sign, total

  def join(a, b, subtract=False):  # a +- b of two `linear` results, sign folded in
    if b is None:
      return a
    if a is None:
      return (-b[0] if subtract else b[0]), b[1]
    same = (a[0] == b[0]) != subtract
    return a[0], (jax.lax.add if same else jax.lax.sub)(a[1], b[1])

  partner = {}  # rows equal up to signs, in pairs
  for j, row in enumerate(matrix):
    partner[j] = next((i for i in range(j) if partner[i] is None
                       and np.array_equal(np.abs(matrix[i]), np.abs(row))), None)
    if partner[j] is not None:
      partner[partner[j]] = j
  rows = [None] * len(matrix)
  for j, row in enumerate(matrix):
    if partner[j] is None:
      rows[j] = linear({c: row[c] for c in np.flatnonzero(row)})
    elif partner[j] > j:
      other = matrix[partner[j]]
      a = linear({c: row[c] for c in np.flatnonzero((row == other) & (row != 0))})
      b = linear({c: row[c] for c in np.flatnonzero((row == -other) & (row != 0))})
      rows[j], rows[partner[j]] = join(a, b), join(a, b, subtract=True)
  out = [total if sign > 0 else jax.lax.neg(total) for sign, total in rows]
  return jnp.stack(out, axis=axis)


def _part(x, axis: int, index: int):
  """x's `index`-th entry along `axis`, that axis dropped (cheaper to trace than indexing)."""
  return jax.lax.index_in_dim(x, index, axis, keepdims=False)


def _winograd_input(x4, k, tiles):
  """BT applied to every tile: (P, L, R, I) -> (a, P * tiles * R, I). Tile t covers inputs
  t*m - (k-1)/2 .. t*m - (k-1)/2 + a - 1, zero outside: the padded input cut in blocks of m,
  input i of a tile being block t + i // m, row i % m (no strided gathers)."""
  p, length, r, i = x4.shape
  m, _, _, bt = _winograd_plan(k)
  left = (k - 1) // 2
  blocks = tiles + -(-(k - 1) // m)
  x4 = jnp.pad(x4, [(0, 0), (left, blocks * m - length - left), (0, 0), (0, 0)])
  xb = x4.reshape(p, blocks, m, r, i)
  windows = [_part(jax.lax.slice_in_dim(xb, j // m, j // m + tiles, axis=1), 2, j % m)
             for j in range(m + k - 1)]
  return _combine(bt, windows).reshape(m + k - 1, -1, i)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _winograd_conv4(x4, w, precision):
  """The 'same' cross-correlation of x4 (P, L, R, I) along L with w (k, I, O) by Winograd's
  F(m, k) (`WINOGRAD_TILES`): a batched matmul of the transformed tiles by the transformed
  kernel, a = m + k - 1 matmuls of (P*ceil(L/m)*R, I) by (I, O).

  The backward is Winograd too: the input gradient is the same correlation of the output
  gradient with the kernel flipped and transposed, the weight gradient a matmul per point of
  the transformed input and output gradient. Only x4 is kept: the transformed input (a/m times
  its size) is recomputed.
  """
  return _winograd_correlate(x4, w, precision)


def _winograd_weights(w, precision):
  """G applied to the kernel w (k, I, O): (a, I, O)."""
  _, _, g, _ = _winograd_plan(w.shape[0])
  return jnp.einsum('aj,jio->aio', jnp.asarray(g, w.dtype), w, precision=precision)


def _winograd_correlate(x4, w, precision):
  p, length, r, _ = x4.shape
  k, _, o = w.shape
  m, at, _, _ = _winograd_plan(k)
  tiles = -(-length // m)
  xt = _winograd_input(x4, k, tiles)
  yt = jnp.einsum('ari,aio->aro', xt, _winograd_weights(w, precision), precision=precision)
  yt = yt.reshape(m + k - 1, p, tiles, r, o)
  y = _combine(at, [_part(yt, 0, j) for j in range(m + k - 1)], axis=2)
  y = y.reshape(p, tiles * m, r, o)
  return y[:, :length]


def _winograd_conv4_fwd(x4, w, precision):
  return _winograd_correlate(x4, w, precision), (x4, w)


def _winograd_conv4_bwd(precision, residuals, dy):
  x4, w = residuals
  p, length, r, _ = x4.shape
  k, _, o = w.shape
  m, at, g, _ = _winograd_plan(k)
  tiles = -(-length // m)
  dx = _winograd_correlate(dy, w[::-1].swapaxes(1, 2), precision)
  # dw[j] = sum over tiles of the transformed input and output gradient, per point, then G^T.
  # The barrier orders this after dx (the two gradients' transformed arrays are not alive at
  # once) and makes xt a recomputation that XLA's CSE cannot merge with the forward's (which
  # would keep every block's transformed input, a/m times its input, alive until here).
  x4, dx = jax.lax.optimization_barrier((x4, dx))
  xt = _winograd_input(x4, k, tiles)
  dy = jnp.pad(dy, [(0, 0), (0, tiles * m - length), (0, 0), (0, 0)]).reshape(p, tiles, m, r, o)
  dyt = _combine(at.T, [_part(dy, 2, j) for j in range(m)]).reshape(m + k - 1, -1, o)
  # dwt^T = dyt^T xt, then the small transposes (XLA:CPU's faster orientation, as in
  # `_conv_along`).
  dwt = jnp.einsum('aro,ari->aoi', dyt, xt, precision=precision)
  dw = jnp.einsum('aj,aoi->jio', jnp.asarray(g, w.dtype), dwt, precision=precision)
  return dx, dw


_winograd_conv4.defvjp(_winograd_conv4_fwd, _winograd_conv4_bwd)


def _winograd_conv(x, w, axis, precision):
  """`_conv_along`'s convolution (x (N, A, B, C, I) along axis 1 or 2) by `_winograd_conv4`."""
  n, a, b, c, _ = x.shape
  x4 = x.reshape(n, a, b * c, -1) if axis == 1 else x.reshape(n * a, b, c, -1)
  return _winograd_conv4(x4, w, precision).reshape(n, a, b, c, w.shape[-1])




@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_along(x, w, axis, precision, backward, acc):
  """A 1-D convolution along axis 1 or 2 of a 5-D channels-last array, hand-made backward.

  XLA:CPU differentiates a convolution into layout transposes and a slow weight-gradient
  convolution. Here the k shifted copies of the output gradient, stacked along channels (dz),
  give both gradients as one matmul each: the input's dz @ w^T, the weight's dz^T @ x. In
  16-bit the gradients' matmuls take 16-bit operands; with float32 products (`acc`, as
  `_accumulation` gives on the CPU) all three run on the CPU's matrix units.

  `backward='xla'` differentiates the forward instead (on a GPU: cuDNN's backward convolutions),
  for measuring which is faster where the matmul form was not designed (the GPU).
  """
  return _conv_impl(x, w, axis, precision, acc)


def _conv_along_fwd(x, w, axis, precision, backward, acc):
  return _conv_impl(x, w, axis, precision, acc), (x, w)


def _conv_along_bwd(axis, precision, backward, acc, residuals, dy):
  x, w = residuals
  if backward == 'xla':
    _, vjp = jax.vjp(lambda x, w: _conv_impl(x, w, axis, precision, acc), x, w)
    dx, dw = vjp(dy)
    return dx.astype(x.dtype), dw.astype(w.dtype)
  k, i, o = w.shape
  dy = dy.astype(x.dtype)
  # dz[..., q, ..., j, :] = dy[..., q - j + (k - 1) // 2, ..., :], zero outside: y = sum_j of
  # x @ w[j] shifted by j, so both gradients are single matmuls with dz.
  length = x.shape[axis]
  pads = [(0, 0)] * 5
  pads[axis] = ((k - 1) // 2,) * 2
  dyp = jnp.pad(dy, pads)
  dz = jnp.concatenate([jax.lax.slice_in_dim(dyp, k - 1 - j, k - 1 - j + length, axis=axis)
                        for j in range(k)], axis=-1).reshape(-1, k * o)
  w_t = w.swapaxes(1, 2).reshape(k * o, i)
  dx = jnp.dot(dz, w_t, precision=precision, preferred_element_type=acc).reshape(x.shape)
  if not _is_16bit(x.dtype):
    # dz^T x, then the small transpose: XLA:CPU runs this orientation faster than x^T dz.
    dw = jnp.dot(dz.T, x.reshape(-1, i), precision=precision)
  else:
    # The same contraction over rows split in two axes: XLA:CPU runs that one on the matrix
    # units (~550 GFLOP/s in bf16) and the 2-D transposed one on Eigen (~230). The weight
    # gradient is float32 whatever `acc`: it is small, and a sum over the whole batch.
    lead = x.shape[0] * x.shape[1]
    dw = jnp.einsum('crm,cri->mi', dz.reshape(lead, -1, k * o), x.reshape(lead, -1, i),
                    precision=precision, preferred_element_type=jnp.float32)
  dw = dw.reshape(k, o, i).swapaxes(1, 2)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_conv_along.defvjp(_conv_along_fwd, _conv_along_bwd)


class Conv3d(nn.Module):
  """nn.Conv3d(in, out, kernel, padding=(k-1)//2) on (N, U, Tw, JE, C) with kernel (kt, kj, ku).

  `splits` > 1 returns the output cut into that many equal channel groups, each its own matmul
  (the attention's q and k per head), so no slice of the output is copied (in 16-bit one
  matmul, cut after its cast to bf16: fewer, wider matmuls on the matrix units).

  The reference only uses 1x1x1 (a matmul, `_matmul`), (1,1,ku) over tokens and (kt,1,1) over
  the window's frames (`_conv_along`); anything else runs as a general 3-D conv. In 16-bit the
  1x1x1 ones take `_conv_along` too (k = 1), whose backward keeps bf16 operands.
  """
  features: int
  kernel_size: Sequence[int] = (1, 1, 1)
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  precision: Any = None
  splits: int = 1
  conv_algorithm: str = 'winograd'  # see CONV_ALGORITHMS
  matmul_outputs: str = 'auto'  # see MATMUL_OUTPUTS

  @nn.compact
  def __call__(self, x):
    in_features = x.shape[-1]
    kt, kj, ku = self.kernel_size
    fan_in = in_features * kt * kj * ku
    weight = self.param('weight', torch_uniform_init(fan_in),
                        (kt, kj, ku, in_features, self.features), self.param_dtype)
    bias = self.param('bias', torch_uniform_init(fan_in), (self.features,), self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, weight)
    x = x.astype(dtype)
    weight, bias = weight.astype(dtype), bias.astype(dtype)
    low_precision = _is_16bit(dtype)
    if (kt, kj, ku) == (1, 1, 1) and not low_precision:
      w = weight[0, 0, 0]
    elif kj == 1 and min(kt, ku) == 1:
      # 16-bit 1x1 convs come here too (k = 1): with float32 products, autodiff's matmuls
      # would take the float32 output gradient and miss the matrix units.
      w = weight.reshape(max(kt, ku), in_features, self.features)
      axis = 2 if kt > 1 else 1
      algorithm = conv_algorithm_run(self.conv_algorithm, dtype)
      if algorithm == 'winograd' and w.shape[0] in WINOGRAD_TILES:
        y = _winograd_conv(x, w, axis, self.precision)
      else:
        backward = 'matmul' if algorithm == 'winograd' else algorithm
        acc = _accumulation(dtype, resolve_matmul_outputs(self.matmul_outputs))
        y = _conv_along(x, w, axis, self.precision, backward, acc)
      # bf16 products too take the bias in float32: its gradient then sums in float32.
      y = (y.astype(jnp.promote_types(y.dtype, jnp.float32)) + bias).astype(dtype)
      return jnp.split(y, self.splits, axis=-1) if self.splits > 1 else y
    else:
      y = jax.lax.conv_general_dilated(
          x, weight.transpose(2, 0, 1, 3, 4), window_strides=(1, 1, 1),
          padding=[((k - 1) // 2,) * 2 for k in (ku, kt, kj)],
          dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'), precision=self.precision)
      y = y + bias
      return jnp.split(y, self.splits, axis=-1) if self.splits > 1 else y
    if self.splits == 1:
      return _matmul(x, w, self.precision) + bias
    width = self.features // self.splits
    return [_matmul(x, w[:, i * width:(i + 1) * width], self.precision)
            + bias[i * width:(i + 1) * width] for i in range(self.splits)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _batch_norm_train(xs, weight, bias, shift, epsilon):
  """Train-mode batch norm of xs (groups, ..., C) per group: (y, mean, var), stats keepdims.

  mean and var come from one pass over xs (two passes read it twice: ~3% of the bf16 GPU
  step's memory traffic), as moments about `shift` (C,) rather than zero: E[d^2] - E[d]^2 of
  d = xs - shift cancels only as far as |mean - shift| >> std, and the running mean, which
  callers give, is near the batch mean once training is under way. The backward is the
  textbook one, keeping only xs and the statistics for it, where autodiff keeps several
  full-size intermediates (the train step's memory traffic is most of its time on CPU). mean
  and var are taken as constants by the backward: they only feed the running statistics.
  """
  return _batch_norm_train_fwd(xs, weight, bias, shift, epsilon)[0]


def _batch_norm_train_fwd(xs, weight, bias, shift, epsilon):
  axes = tuple(range(1, xs.ndim - 1))
  d = xs - shift
  d_mean = d.mean(axes, keepdims=True)
  var = jnp.maximum(jnp.square(d).mean(axes, keepdims=True) - jnp.square(d_mean), 0)
  mean = d_mean + shift
  inv = jax.lax.rsqrt(var + epsilon)
  y = (xs - mean) * (inv * weight) + bias
  return (y, mean, var), (xs, mean, inv, weight, shift)


def _batch_norm_train_bwd(epsilon, residuals, cotangents):
  del epsilon
  xs, mean, inv, weight, shift = residuals
  dy = cotangents[0].astype(xs.dtype)
  axes = tuple(range(1, xs.ndim - 1))
  xhat = (xs - mean) * inv
  # Two sums per group, from which both parameter gradients and dx's means follow (four
  # written out: XLA fuses them into separate passes over dy and xs).
  dy_sum = dy.sum(axes, keepdims=True)
  dy_xhat_sum = (dy * xhat).sum(axes, keepdims=True)
  count = math.prod(xs.shape[1:-1])
  dx = (inv * weight) * (dy - (dy_sum + xhat * dy_xhat_sum) / count)
  all_but_channels = tuple(range(xs.ndim - 1))
  return (dx, dy_xhat_sum.sum(all_but_channels), dy_sum.sum(all_but_channels),
          jnp.zeros_like(shift))


_batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nn.Module):
  """nn.BatchNorm3d as PyTorch trains it, over all axes but the last.

  Train mode normalises with the biased batch variance and moves the running variance towards
  the *unbiased* one (Flax's BatchNorm uses the biased one); momentum 0.1, eps 1e-5. Statistics
  are computed in at least float32, whatever the compute dtype.

  `group_size` gives ghost batch norm: statistics per consecutive group of that many samples,
  as `DataParallel` computes them per GPU. The running statistics then follow the mean of the
  groups' statistics (`DataParallel` keeps only the first GPU's update; the mean is the
  better estimate and equal in expectation).
  """
  momentum: float = 0.1
  epsilon: float = 1e-5
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  group_size: Optional[int] = None

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    weight = self.param('weight', nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (c,), self.param_dtype)
    running_mean = self.variable('batch_stats', 'running_mean',
                                 lambda: jnp.zeros((c,), self.param_dtype))
    running_var = self.variable('batch_stats', 'running_var',
                                lambda: jnp.ones((c,), self.param_dtype))
    num_batches_tracked = self.variable('batch_stats', 'num_batches_tracked',
                                        lambda: jnp.zeros((), jnp.int32))
    stats_dtype = jnp.promote_types(x.dtype, jnp.float32)
    dtype = self.dtype or jnp.result_type(x, weight)
    if train:
      n = x.shape[0]
      g = self.group_size or n
      if n % g:
        raise ValueError(f'batch of {n} is not a multiple of bn_group_size {g}')
      xs = x.astype(stats_dtype).reshape(n // g, g, *x.shape[1:])
      y, mean, var = _batch_norm_train(xs, weight.astype(stats_dtype), bias.astype(stats_dtype),
                                       running_mean.value.astype(stats_dtype), self.epsilon)
      count = xs.size // (xs.shape[0] * c)
      if not self.is_initializing():
        unbiased = var * (count / max(count - 1, 1))
        m = self.momentum
        # Statistics keep the dtype they were loaded in (float64 for parity checks).
        running_mean.value = ((1 - m) * running_mean.value
                              + m * mean.mean(0).reshape(c).astype(running_mean.value.dtype))
        running_var.value = ((1 - m) * running_var.value
                             + m * unbiased.mean(0).reshape(c).astype(running_var.value.dtype))
        num_batches_tracked.value = num_batches_tracked.value + 1
      return y.reshape(x.shape).astype(dtype)
    mean = running_mean.value.astype(stats_dtype)
    scale = jax.lax.rsqrt(running_var.value.astype(stats_dtype) + self.epsilon) * weight
    return ((x.astype(stats_dtype) - mean) * scale + bias).astype(dtype)


class ConvBN(nn.Module):
  """nn.Sequential(Conv3d, BatchNorm3d): children '0' and '1' as in the reference's keys."""
  features: int
  kernel_size: Sequence[int] = (1, 1, 1)
  dtype: Optional[Dtype] = None
  precision: Any = None
  bn_group_size: Optional[int] = None
  conv_algorithm: str = 'winograd'
  matmul_outputs: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool):
    x = Conv3d(self.features, tuple(self.kernel_size), dtype=self.dtype,
               precision=self.precision, conv_algorithm=self.conv_algorithm,
               matmul_outputs=self.matmul_outputs, name='0')(x)
    return BatchNorm(dtype=self.dtype, group_size=self.bn_group_size, name='1')(x, train)


class PositionalEncoding(nn.Module):
  """The reference's `pes` module: a constant table, kept in `buffers` like PyTorch's buffer."""
  window_size: Sequence[int]
  tokens: int

  @nn.compact
  def __call__(self, x):
    table = self.variable('buffers', 'pe', lambda: jnp.asarray(
        positional_encoding_table(x.shape[-1], self.window_size, self.tokens)))
    return table.value


class TSABlock(nn.Module):
  """Token self-attention over windows, then the token conv `proj`, FFN and temporal conv `TA`.

  (N, U, Tw, JE, C_in) -> (N, U, Tw, JE, C_out). Tokens lead so that both attention products
  are plain batched matmuls, per head (U, Tw*JE*d) by its transpose, and for all heads at
  once (H*U, U) by (U, Tw*JE*C), with no transpose of the activations either way.
  """
  in_channels: int
  out_channels: int
  qkv_dim: int
  window_size: Sequence[int]
  num_tokens: int
  num_heads: int
  kernel_size: Sequence[int]
  use_pes: bool = True
  att_drop: float = 0.0
  dtype: Optional[Dtype] = None
  precision: Any = None
  bn_group_size: Optional[int] = None
  conv_algorithm: str = 'winograd'
  matmul_outputs: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool):
    n, u, tw, je, c = x.shape
    outputs = resolve_matmul_outputs(self.matmul_outputs)
    h, d = self.num_heads, self.qkv_dim
    k_t, k_u = self.kernel_size
    conv_bn = lambda features, kernel, name: ConvBN(
        features, kernel, dtype=self.dtype, precision=self.precision,
        bn_group_size=self.bn_group_size, conv_algorithm=self.conv_algorithm,
        matmul_outputs=self.matmul_outputs, name=name)

    xa = x
    if self.use_pes:
      pe = PositionalEncoding(self.window_size, self.num_tokens, name='pes')(x)
      xa = x + jnp.moveaxis(pe, 3, 1).astype(x.dtype)
    # Output channels are (q/k, head, d) as the reference's view(N, 2, H, d, ...).
    qk = Conv3d(2 * h * d, dtype=self.dtype, precision=self.precision, splits=2 * h,
                conv_algorithm=self.conv_algorithm, matmul_outputs=self.matmul_outputs,
                name='to_qkvs')(xa)
    alpha = self.param('alpha', nn.initializers.ones, (1, h, 1, 1))
    m = self.param('M', nn.initializers.constant(1.0 / self.num_tokens), (1, h, u, u))
    # The attention map is small (N, H, U, U): float32 products whatever `matmul_outputs`
    # (not its gradients: those are q and k's size).
    logits = jnp.stack([
        _einsum('npk,nqk->npq', qk[i].reshape(n, u, -1), qk[h + i].reshape(n, u, -1),
                self.precision, 'float32', outputs) for i in range(h)], axis=1)
    atten = jnp.tanh(logits / (d * tw * je)) * alpha.astype(logits.dtype) + m.astype(logits.dtype)
    atten = nn.Dropout(self.att_drop, deterministic=not train)(atten).astype(x.dtype)
    # Value mixing: every head mixes the (un-encoded) tokens, all heads in one (H*U, U) by
    # (U, Tw*JE*C) matmul (larger products than one per head, forward and backward). In 16 bits
    # with float32 products (the CPU's) the rows stay split in (head, token): the gradient of x
    # then contracts over two axes, which XLA:CPU runs on the matrix units (one axis: as a
    # float32 matmul). Otherwise the rows are flat: float32 was tuned with them, and with 16-bit
    # products (a GPU's) both gradients then read the output gradient, which arrives from
    # `proj`'s channels, through one transposed copy instead of one each (2.3% of the H100
    # train step's projected memory traffic). Heads stack along channels, head major, as the
    # reference's view(N, H*C, ...), by one transposing copy: XLA:CPU fuses it into `proj`'s
    # zero padding, and its gradient into the Winograd output transform (a concatenation of the
    # heads, whose gradients were then summed into place, took two passes of their own: the NTU
    # train step runs 1-2% faster, the eval forward ~5%; the H100 projections are unchanged).
    values = x.reshape(n, u, tw * je * c)
    if _is_16bit(x.dtype) and outputs == 'float32':
      mixed = _einsum('nhap,npk->nhak', jnp.swapaxes(atten, 2, 3), values, self.precision,
                      outputs)
    else:
      mixed = _einsum('nap,npk->nak', jnp.swapaxes(atten, 2, 3).reshape(n, h * u, u), values,
                      self.precision, outputs)
    mixed = mixed.reshape(n, h, u, tw, je, c).astype(x.dtype)
    heads = einops.rearrange(mixed, 'n h u tw je c -> n u tw je (h c)')

    if self.in_channels != self.out_channels:
      xres = conv_bn(self.out_channels, (1, 1, 1), 'residual')(x, train)
    else:
      xres = x
    xa = leaky_relu(conv_bn(self.out_channels, (1, 1, k_u), 'proj')(heads, train) + xres)
    xa = leaky_relu(conv_bn(self.out_channels, (1, 1, 1), 'FFN')(xa, train) + xres)
    if self.in_channels != self.out_channels:
      xres_ta = conv_bn(self.out_channels, (1, 1, 1), 'residual_TA')(xa, train)
    else:
      xres_ta = xa
    return leaky_relu(conv_bn(self.out_channels, (k_t, 1, 1), 'TA')(xa, train) + xres_ta)


class ISTANet(nn.Module):
  """ISTA-Net with the reference's `model_args`, channels-last input (N, T, J, E, C) -> logits.

  Logits are float32 whatever `dtype` (the compute dtype; None follows the inputs and
  parameters, e.g. float64 for parity checks). Parameters are created in float32.
  `bn_group_size` switches on ghost batch norm (see `BatchNorm`).
  """
  window_size: Sequence[int]
  num_classes: int
  num_joints: int
  num_frames: int
  num_persons: int
  num_heads: int
  num_channels: int
  kernel_size: Sequence[int]
  use_pes: bool = True
  config: Sequence[Sequence[int]] = ()
  att_drop: float = 0.0
  dropout: float = 0.0
  dtype: Optional[Dtype] = None
  precision: Any = None
  bn_group_size: Optional[int] = None
  # How the 1-D convolutions run: 'winograd' (float32/64; `_winograd_conv`), 'matmul' (direct,
  # `_conv_along`'s shifted-copy backward) or 'xla' (direct, autodiff of the convolution).
  conv_algorithm: str = 'winograd'
  # 16-bit compute: matmul and convolution results in 'float32' or the 'compute' dtype, 'auto'
  # by platform (`resolve_matmul_outputs`).
  matmul_outputs: str = 'auto'

  def __post_init__(self):
    if self.conv_algorithm not in CONV_ALGORITHMS:
      raise ValueError(f'conv_algorithm must be one of {CONV_ALGORITHMS}, '
                       f'got {self.conv_algorithm!r}')
    resolve_matmul_outputs(self.matmul_outputs, 'cpu')  # checks the value
    if len(self.window_size) != 3 or min(self.window_size) < 1:
      raise ValueError(f'window_size must be three positive ints (Tw, Jw, Ew), got {self.window_size}')
    if len(self.kernel_size) != 2 or any(k < 1 or k % 2 == 0 for k in self.kernel_size):
      # An even kernel shortens the sequence by one and the reference's residual add fails.
      raise ValueError(f'kernel_size must be two odd ints (k_t, k_u), got {self.kernel_size}')
    if not self.config:
      raise ValueError('config must list at least one block as (in_channels, out_channels, qkv_dim)')
    for i, (cin, _, _) in enumerate(self.config[1:], 1):
      if cin != self.config[i - 1][1]:
        raise ValueError(f'config[{i}] takes {cin} channels but config[{i - 1}] gives '
                         f'{self.config[i - 1][1]}')
    super().__post_init__()

  @property
  def num_tokens(self) -> int:
    return num_tokens(self.num_frames, self.num_joints, self.num_persons, self.window_size)

  def input_shape(self, batch: int = 1) -> tuple:
    """(N, T, J, E, C): the channels-last input the model takes."""
    return (batch, self.num_frames, self.num_joints, self.num_persons, self.num_channels)

  def variable_shapes(self) -> dict:
    """{collection: tree of jax.ShapeDtypeStruct}: the variables `init` makes, none computed."""
    x = jax.ShapeDtypeStruct(self.input_shape(), jnp.float32)
    return jax.eval_shape(lambda x: self.init(jax.random.key(0), x, train=False), x)

  @nn.compact
  def __call__(self, x, *, train: bool):
    """x: (N, T, J, E, C) channels-last. Returns float32 logits (N, num_classes)."""
    _, t, j, e, c = x.shape
    expected = (self.num_joints, self.num_persons, self.num_channels)
    if (j, e, c) != expected or num_tokens(t, j, e, self.window_size) != self.num_tokens:
      raise ValueError(
          f'input (N, T, J, E, C) = {x.shape} does not fit the model: expected T={self.num_frames}, '
          f'J, E, C = {expected}')
    if self.dtype is not None:
      x = x.astype(self.dtype)
    # Token-major (N, U, Tw, JE, C) inside the network (see TSABlock).
    x = jnp.moveaxis(window_partition(x, self.window_size), 3, 1)
    x = ConvBN(self.config[0][0], dtype=self.dtype, precision=self.precision,
               bn_group_size=self.bn_group_size, conv_algorithm=self.conv_algorithm,
               matmul_outputs=self.matmul_outputs, name='embed')(x, train)
    x = leaky_relu(x)
    for i, (cin, cout, qkv_dim) in enumerate(self.config):
      x = TSABlock(cin, cout, qkv_dim, window_size=tuple(self.window_size),
                   num_tokens=self.num_tokens, num_heads=self.num_heads,
                   kernel_size=tuple(self.kernel_size), use_pes=self.use_pes,
                   att_drop=self.att_drop, dtype=self.dtype, precision=self.precision,
                   bn_group_size=self.bn_group_size, conv_algorithm=self.conv_algorithm,
                   matmul_outputs=self.matmul_outputs, name=f'blocks.{i}')(x, train)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32)).mean(axis=(1, 2, 3))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return Linear(self.num_classes, precision=self.precision, name='fc')(x)


class Linear(nn.Module):
  """nn.Linear with the reference's head init: xavier-normal weight (in, out), zero bias."""
  features: int
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    # torch's xavier_normal_ draws from an untruncated normal (jax's glorot_normal truncates).
    weight = self.param('weight', nn.initializers.variance_scaling(1.0, 'fan_avg', 'normal'),
                        (x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    dtype = jnp.result_type(x, weight)
    return jnp.dot(x.astype(dtype), weight.astype(dtype), precision=self.precision) + bias.astype(dtype)


def apply_model(model: ISTANet, variables, x, *, train: bool, rng=None):
  """Runs `model` on x in the reference layout (N, C, T, V, M).

  Returns (logits, new_variables): in train mode BatchNorm runs on batch statistics and
  `new_variables` holds the updated `batch_stats`; in eval mode it is `variables`. `rng` drives
  dropout (train mode only); a model with non-zero dropout needs it in train mode.
  """
  x = einops.rearrange(x, 'n c t v m -> n t v m c')
  if not train:
    return model.apply(variables, x, train=False), variables
  if rng is None and (model.dropout or model.att_drop):
    raise ValueError('train mode with dropout needs an rng')
  rngs = {'dropout': rng} if rng is not None else {}
  logits, updates = model.apply(variables, x, train=True, rngs=rngs, mutable=['batch_stats'])
  return logits, {**variables, **updates}
