"""Properties of the Flax model that the parity fixtures do not pin on their own."""

import collections
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from istanet_jax import model as model_lib
from istanet_jax import steps, torch_compat
from istanet_jax.model import (BatchNorm, ISTANet, apply_model, positional_encoding_table,
                               window_partition)
from parity_cases import Case

TINY = dict(window_size=[4, 5, 2], num_frames=12, num_joints=10, num_persons=2, num_channels=3,
            num_classes=6, num_heads=2, kernel_size=[3, 3], use_pes=True,
            config=[[8, 8, 4], [8, 12, 4]])


def _reference_partition(x, window):
  """The reference's window_partition (replicate pad, view, permute) in numpy, (N, C, T, J, E)."""
  n, c, t, j, e = x.shape
  tw, jw, ew = window
  x = np.pad(x, [(0, 0), (0, 0), (0, -t % tw), (0, -j % jw), (0, -e % ew)], mode='edge')
  _, _, t, j, e = x.shape
  x = x.reshape(n, c, tw, t // tw, jw, j // jw, ew, e // ew).transpose(0, 1, 2, 4, 6, 3, 5, 7)
  return x.reshape(n, c, tw, jw * ew, -1)


@pytest.mark.parametrize('shape,window', [((2, 3, 12, 10, 2), (4, 5, 2)),
                                          ((1, 2, 13, 7, 3), (4, 3, 2)),
                                          ((1, 3, 40, 25, 3), (16, 4, 2))])
def test_window_partition_is_the_reference_permutation(shape, window):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  ours = window_partition(jnp.asarray(np.moveaxis(x, 1, -1)), window)
  np.testing.assert_array_equal(np.moveaxis(np.asarray(ours), -1, 1), _reference_partition(x, window))


def test_initialisation_follows_the_reference():
  args = dict(TINY, config=[[64, 64, 16], [64, 128, 16]], num_classes=40)
  model = torch_compat.model_from_reference_args(args)
  # As training initialises it: the draws from steps.INIT_PRNG.
  state = steps.create_state(model, optax.sgd(0.1), jax.random.key(1))
  v = steps.variables_of(state)
  p = v['params']
  # PyTorch's default conv init: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  w = np.asarray(p['blocks.1']['proj']['0']['weight'])  # (1, 1, 3, 128, 128): fan_in 384
  bound = 1 / np.sqrt(3 * 128)
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
  assert np.std(w) == pytest.approx(bound / np.sqrt(3), rel=0.02)
  b = np.asarray(p['blocks.1']['TA']['0']['bias'])
  assert np.abs(b).max() <= 1 / np.sqrt(3 * 128)
  # Head: xavier-normal (untruncated) weight, zero bias.
  fc = np.asarray(p['fc']['weight'])
  assert np.std(fc) == pytest.approx(np.sqrt(2 / (128 + 40)), rel=0.05)
  assert np.abs(fc).max() > 2.5 * np.sqrt(2 / (128 + 40))  # a truncated normal stops at 2 std
  np.testing.assert_array_equal(p['fc']['bias'], 0)
  np.testing.assert_array_equal(p['blocks.0']['alpha'], np.ones((1, 2, 1, 1)))
  np.testing.assert_allclose(p['blocks.0']['M'], np.full((1, 2, 6, 6), 1 / 6))
  np.testing.assert_array_equal(p['embed']['1']['weight'], 1)
  np.testing.assert_array_equal(v['batch_stats']['embed']['1']['running_var'], 1)
  pe = np.asarray(v['buffers']['blocks.0']['pes']['pe'])
  np.testing.assert_array_equal(pe, positional_encoding_table(64, (4, 5, 2), 6))
  assert pe.dtype == np.float32 and v['params']['blocks.0']['M'].dtype == jnp.float32


def test_batchnorm_running_variance_is_unbiased():
  x = jnp.asarray(np.random.default_rng(0).normal(2.0, 3.0, size=(4, 5, 3)), jnp.float32)
  bn = BatchNorm()
  v = bn.init(jax.random.key(0), x, train=False)
  y, upd = bn.apply(v, x, train=True, mutable=['batch_stats'])
  flat = np.asarray(x).reshape(-1, 3)
  stats = upd['batch_stats']
  np.testing.assert_allclose(stats['running_mean'], 0.1 * flat.mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats['running_var'], 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)
  assert int(stats['num_batches_tracked']) == 1
  # Normalisation itself uses the biased variance.
  np.testing.assert_allclose(np.asarray(y).reshape(-1, 3),
                             (flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5), atol=1e-5)


def test_batchnorm_statistics_are_one_pass_moments_about_the_running_mean():
  """Far from zero (mean 1000, std 1), E[x^2] - E[x]^2 in float32 about zero would lose the
  variance (ulp(1e6) = 0.06); about a running mean near the batch's it is exact to ~1e-6."""
  x64 = np.random.default_rng(2).normal(1000.0, 1.0, size=(64, 8, 3))
  x = jnp.asarray(x64, jnp.float32)
  flat = np.asarray(x, np.float64).reshape(-1, 3)
  bn = BatchNorm(momentum=1.0)  # the running statistics become the batch's
  v = bn.init(jax.random.key(0), x, train=False)
  v = {**v, 'batch_stats': {**v['batch_stats'], 'running_mean': jnp.full((3,), 999.5)}}
  y, upd = bn.apply(v, x, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(upd['batch_stats']['running_mean'], flat.mean(0), rtol=1e-6)
  np.testing.assert_allclose(upd['batch_stats']['running_var'], flat.var(0, ddof=1), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(y).reshape(-1, 3),
                             (flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5), atol=2e-3)


@pytest.mark.parametrize('group_size', [None, 2])
def test_batchnorm_backward_is_autodiffs(group_size):
  """The hand-written backward (two sums per group) against autodiff of the plain formula."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(0.5, 2.0, size=(4, 6, 5, 3)), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  bn = BatchNorm(group_size=group_size)
  v = bn.init(jax.random.key(0), x, train=False)
  params = {'weight': jnp.asarray([0.5, -1.5, 2.0]), 'bias': jnp.asarray([0.1, 0.2, -0.3])}

  def ours(params, x):
    y, _ = bn.apply({**v, 'params': params}, x, train=True, mutable=['batch_stats'])
    return jnp.vdot(y, cotangent)

  def plain(params, x):
    xs = x.reshape(-1, group_size or 4, *x.shape[1:])
    axes = tuple(range(1, xs.ndim - 1))
    mean, var = xs.mean(axes, keepdims=True), xs.var(axes, keepdims=True)
    y = (xs - mean) / jnp.sqrt(var + 1e-5) * params['weight'] + params['bias']
    return jnp.vdot(y.reshape(x.shape), cotangent)

  got, want = jax.grad(ours, (0, 1))(params, x), jax.grad(plain, (0, 1))(params, x)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_leaky_relu_backward_from_its_output_is_autodiffs(dtype):
  x = jnp.asarray([-2.0, -0.5, -0.0, 0.0, 0.25, 3.0], dtype)
  g = jnp.asarray([1.0, -2.0, 3.0, 4.0, -5.0, 6.0], dtype)
  ours = jax.vjp(model_lib.leaky_relu, x)[1](g)[0]
  plain = jax.vjp(lambda x: jax.nn.leaky_relu(x, model_lib.LEAKY_SLOPE), x)[1](g)[0]
  assert ours.dtype == dtype
  np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(plain, np.float32))


def test_ghost_batch_norm_equals_separate_sub_batches():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 12, 10, 2, 3)), jnp.float32)
  plain = torch_compat.model_from_reference_args(TINY)
  ghost = torch_compat.model_from_reference_args(TINY, bn_group_size=2)
  v = plain.init(jax.random.key(0), x, train=False)
  logits, upd = ghost.apply(v, x, train=True, mutable=['batch_stats'])
  halves = [plain.apply(v, x[i:i + 2], train=True, mutable=['batch_stats']) for i in (0, 2)]
  np.testing.assert_allclose(logits, np.concatenate([h[0] for h in halves]), rtol=1e-5, atol=1e-6)
  mean = lambda u: np.asarray(u['batch_stats']['blocks.1']['TA']['1']['running_var'])
  np.testing.assert_allclose(mean(upd), (mean(halves[0][1]) + mean(halves[1][1])) / 2, rtol=1e-5)
  with pytest.raises(ValueError, match='not a multiple of bn_group_size 2'):
    ghost.apply(v, x[:3], train=True, mutable=['batch_stats'])


@pytest.mark.parametrize('train,tolerance', [(True, 1e-2), (False, 5e-2)])
def test_bfloat16_compute_stays_close_to_float32(train, tolerance):
  """bf16 compute, float32 parameters: within 1e-2 of max |logit| in train mode on the parity
  inputs and 5e-2 in eval mode (the ntu26 case's perturbed running statistics amplify input
  differences ~1e4-fold); top-1 unchanged. Both kinds of products (`matmul_outputs`: float32
  as on the CPU, bf16 as on a GPU). Against the reference's logits (the parity tests pin ours in
  float32 to them within 2e-4, the cases have no dropout)."""
  for name in ('pad_odd', 'ntu26'):
    case = Case(name)
    state = {k: v.astype(np.float32) if v.dtype == np.float64 else v
             for k, v in case.state_dict().items()}
    v = torch_compat.variables_from_state_dict(state, case.model_args)
    x = jnp.asarray(case.x, jnp.float32)
    a = jnp.asarray(case.arrays['logits_train' if train else 'logits_eval'], jnp.float32)
    for outputs in ('float32', 'compute'):
      m16 = torch_compat.model_from_reference_args(case.model_args, dtype=jnp.bfloat16,
                                                   matmul_outputs=outputs)
      b, new = apply_model(m16, v, x, train=train)
      assert b.dtype == jnp.float32
      assert float(jnp.abs(a - b).max() / jnp.abs(a).max()) < tolerance, (name, outputs)
      np.testing.assert_array_equal(a.argmax(-1), b.argmax(-1))
      if train:
        assert new['batch_stats']['embed']['1']['running_var'].dtype == jnp.float32


@pytest.mark.parametrize('k', [1, 3, 5])
def test_shifted_matmuls_are_the_zero_padded_convolution(k):
  """The 16-bit CPU forward: one matmul, then the k output blocks summed shifted."""
  from istanet_jax.model import _shifted_matmuls
  rng = np.random.default_rng(k)
  x = jnp.asarray(rng.normal(size=(3, 7, 4, 6)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, 6, 5)), jnp.float32)
  want = jax.lax.conv_general_dilated(x, w[:, None], (1, 1), [((k - 1) // 2,) * 2, (0, 0)],
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      precision='highest')
  np.testing.assert_allclose(_shifted_matmuls(x, w, 'highest', None), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_conv_algorithms_give_the_same_gradients(dtype):
  """Winograd, the shifted-copy matmuls and autodiff of the convolution (for GPUs) compute the
  same logits and gradients of the whole model (bf16 takes 'matmul' for 'winograd')."""
  model = lambda algorithm: torch_compat.model_from_reference_args(
      dict(TINY, kernel_size=[3, 5]), dtype=None if dtype == jnp.float32 else dtype,
      conv_algorithm=algorithm)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 12, 10, 2)), jnp.float32)
  variables = model('matmul').init(jax.random.key(0), jnp.moveaxis(x, 1, -1), train=False)

  def grads(algorithm):
    def loss(params):
      logits, _ = apply_model(model(algorithm), {**variables, 'params': params}, x, train=True)
      return (logits ** 2).sum(), logits
    return jax.grad(loss, has_aux=True)(variables['params'])
  ours = grads('matmul')
  tolerance = 1e-5 if dtype == jnp.float32 else 2e-2
  # One scale for all: conv biases before a train-mode BatchNorm have rounding-noise gradients.
  scale = max(float(jnp.abs(a).max()) for a in jax.tree_util.tree_leaves(ours[0]))
  for algorithm in ('xla', 'winograd'):
    other = grads(algorithm)
    assert float(jnp.abs(other[1] - ours[1]).max() / jnp.abs(ours[1]).max()) < tolerance
    leaves = zip(jax.tree_util.tree_leaves_with_path(ours[0]), jax.tree_util.tree_leaves(other[0]))
    for (path, a), b in leaves:
      assert float(jnp.abs(a - b).max()) / scale < tolerance, (algorithm, jax.tree_util.keystr(path))
  with pytest.raises(ValueError, match='conv_algorithm must be one of'):
    model('cudnn')


@pytest.mark.parametrize('m,k', [(4, 3), (3, 5), (2, 3), (2, 5), (2, 7)])
def test_winograd_matrices_compute_the_correlation(m, k):
  from istanet_jax.model import winograd_matrices
  points = (0, 1, -1, 2, -2, 0.5, -0.5, 3)[:m + k - 2]
  at, g, bt = winograd_matrices(m, k, points)
  assert at.shape == (m, m + k - 1) and g.shape == (m + k - 1, k) and bt.shape == (m + k - 1,) * 2
  rng = np.random.default_rng(m * 10 + k)
  for _ in range(3):
    x, w = rng.normal(size=m + k - 1), rng.normal(size=k)
    want = [x[i:i + k] @ w for i in range(m)]
    np.testing.assert_allclose(at @ ((g @ w) * (bt @ x)), want, rtol=1e-12, atol=1e-12)
  with pytest.raises(ValueError, match='distinct finite points'):
    winograd_matrices(m, k, (0,) * (m + k - 2))


def test_combine_is_the_matrix_product_in_fewer_operations():
  """Rows equal up to signs (0 and 2), a repeated magnitude, zeros, a negative leading term, a
  row of one term; and the Winograd input transform of F(4, 5) in 46 jaxpr equations, where
  adding its 44 nonzero terms one by one took 79."""
  from istanet_jax.model import _combine, _winograd_plan
  matrix = np.array([[1, 0, -0.5, 0.5, 2], [0, 0, 3, 0, 0], [1, 0, 0.5, -0.5, -2],
                     [-1, 4, 4, 0, -0.25]])
  arrays = [jnp.asarray(v) for v in np.random.default_rng(0).normal(size=(5, 3, 2))]
  with jax.enable_x64(True):
    got = _combine(matrix, [a.astype(jnp.float64) for a in arrays], axis=1)
  np.testing.assert_allclose(got, np.einsum('ji,iab->ajb', matrix, np.stack(arrays)),
                             rtol=1e-12, atol=1e-12)
  _, _, _, bt = _winograd_plan(5)
  jaxpr = jax.make_jaxpr(lambda *a: _combine(bt, a))(*[jnp.ones((2, 3))] * 8)
  assert len(jaxpr.eqns) <= 50


def _direct_conv(x4, w):
  k = w.shape[0]
  return jax.lax.conv_general_dilated(x4, w[:, None], (1, 1), [((k - 1) // 2,) * 2, (0, 0)],
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      precision='highest')


@pytest.mark.parametrize('k', [3, 5])
@pytest.mark.parametrize('length', [1, 7, 12, 13])
def test_winograd_conv_equals_the_convolution_in_float64(k, length):
  """Forward and both gradients, any length (tiles past the end are zero-padded), to float64
  rounding: Winograd is exact arithmetic rearranged."""
  from istanet_jax.model import _winograd_conv4
  with jax.enable_x64(True):
    rng = np.random.default_rng(length)
    x = jnp.asarray(rng.normal(size=(2, length, 3, 4)))
    w = jnp.asarray(rng.normal(size=(k, 4, 5)))
    dy = jnp.asarray(rng.normal(size=(2, length, 3, 5)))
    y, vjp = jax.vjp(lambda x, w: _winograd_conv4(x, w, 'highest'), x, w)
    want, want_vjp = jax.vjp(_direct_conv, x, w)
    np.testing.assert_allclose(y, want, rtol=1e-11, atol=1e-11)
    for got, expected in zip(vjp(dy), want_vjp(dy)):
      np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize('k,length', [(3, 20), (5, 150)])
def test_winograd_conv_float32_error(k, length):
  """float32 Winograd stays within 2e-5 of the largest output and gradient (the direct
  convolution's own rounding is ~1e-6) on the model's lengths: 20 frames, 150 tokens."""
  from istanet_jax.model import _winograd_conv4
  rng = np.random.default_rng(k)
  x = rng.normal(size=(2, length, 4, 64))
  w = rng.normal(size=(k, 64, 16)) / np.sqrt(k * 64)
  dy = rng.normal(size=(2, length, 4, 16))
  f32 = lambda *a: [jnp.asarray(v, jnp.float32) for v in a]
  y, vjp = jax.vjp(lambda x, w: _winograd_conv4(x, w, None), *f32(x, w))
  got = [y, *vjp(*f32(dy))]
  with jax.enable_x64(True):
    y64, vjp64 = jax.vjp(_direct_conv, jnp.asarray(x), jnp.asarray(w))
    want = [np.asarray(v) for v in (y64, *vjp64(jnp.asarray(dy)))]
  for a, b in zip(got, want):
    assert np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max() < 2e-5


def _tiny_gradients():
  """(TINY in float32, its variables, grads(model) -> the jitted gradient, at those variables'
  params, of `model`'s train-mode loss on one fixed batch)."""
  from istanet_jax import losses
  model32 = torch_compat.model_from_reference_args(TINY)
  x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 3, 12, 10, 2)), jnp.float32)
  y = jnp.arange(4) % 6
  v = model32.init(jax.random.key(0), jnp.moveaxis(x, 1, -1), train=False)

  def grads(model):
    def loss(params):
      logits, _ = apply_model(model, {**v, 'params': params}, x, train=True)
      return losses.label_smoothing_cross_entropy(logits, y).mean()
    return jax.jit(jax.grad(loss))
  return model32, v, grads


def test_bfloat16_matmuls_take_bf16_and_give_float32_on_cpu():
  """XLA:CPU multiplies bf16 on the matrix units only with float32 products: the bf16 train
  step must have no bf16-output matmul and no convolution left, and its gradients follow
  float32's."""
  model32, v, grads = _tiny_gradients()
  model16 = torch_compat.model_from_reference_args(TINY, dtype=jnp.bfloat16)

  hlo = grads(model16).lower(v['params']).compile().as_text()
  assert ' convolution(' not in hlo
  assert not [l for l in hlo.splitlines() if ' dot(' in l and '= bf16[' in l]
  # The value mixing's backward multiplies in bf16 too (autodiff's would take float32).
  dtypes = dict(re.findall(r'%([\w.\-]+) = (\w+)\[', hlo))
  mixing = [l for l in hlo.splitlines() if ' dot(' in l and 'nhap' in l]
  assert len(mixing) >= 3 * len(TINY['config'])  # forward and two gradients per block
  for line in mixing:
    operands = re.findall(r'%([\w.\-]+)', line.split(' dot(')[1].split(')')[0])
    assert [dtypes[o] for o in operands] == ['bf16', 'bf16'], line
  g32, g16 = (jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads(m)(v['params']))])
              for m in (model32, model16))
  cosine = float(g32 @ g16 / jnp.linalg.norm(g32) / jnp.linalg.norm(g16))
  assert cosine > 0.99, cosine


def test_matmul_outputs_pick_the_products_dtype():
  """'float32' (the CPU's choice): every bf16 matmul gives float32; 'compute' (elsewhere): every
  activation-sized product is bf16, as under torch.autocast, and only small ones (the attention
  logits, weight gradients) stay float32; the gradients follow float32's either way."""
  assert model_lib.resolve_matmul_outputs('auto', 'cpu') == 'float32'
  assert model_lib.resolve_matmul_outputs('auto', 'cuda') == 'compute'
  assert model_lib.resolve_matmul_outputs('compute', 'cpu') == 'compute'
  assert model_lib.resolve_matmul_outputs('auto') == 'float32'  # this machine
  with pytest.raises(ValueError, match="matmul_outputs must be one of"):
    torch_compat.model_from_reference_args(TINY, matmul_outputs='bf16')
  model32, v, grads = _tiny_gradients()

  activation = 4 * 6 * 4 * 10 * 8  # N * U * Tw * JE * C of the first block
  g32 = jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads(model32)(v['params']))])
  for outputs in ('float32', 'compute'):
    model16 = torch_compat.model_from_reference_args(TINY, dtype=jnp.bfloat16,
                                                     matmul_outputs=outputs)
    products = collections.Counter()
    for line in grads(model16).lower(v['params']).as_text().splitlines():
      m = re.search(r'stablehlo\.(?:dot_general|convolution) .*: \(tensor<[\dx]*(\w+)>, '
                    r'tensor<[\dx]*(\w+)>\) -> tensor<([\dx]*)(\w+)>', line)
      if m and m.group(1) == 'bf16':
        size = math.prod(int(d) for d in m.group(3).split('x') if d)
        products[(m.group(4), size >= activation)] += 1
    if outputs == 'float32':
      assert set(products) == {('f32', True), ('f32', False)}, products
    else:
      assert products[('bf16', True)] >= 4 * len(TINY['config']) and not products[('f32', True)]
      assert products[('f32', False)] >= TINY['num_heads'] * len(TINY['config']), products
    g16 = jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads(model16)(v['params']))])
    cosine = float(g32 @ g16 / jnp.linalg.norm(g32) / jnp.linalg.norm(g16))
    assert cosine > 0.99, (outputs, cosine)


def test_dropout_needs_and_follows_the_rng():
  model = torch_compat.model_from_reference_args(dict(TINY, att_drop=0.3, dropout=0.5))
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 12, 10, 2)), jnp.float32)
  v = model.init(jax.random.key(0), jnp.moveaxis(x, 1, -1), train=False)
  with pytest.raises(ValueError, match='needs an rng'):
    apply_model(model, v, x, train=True)
  a, _ = apply_model(model, v, x, train=True, rng=jax.random.key(1))
  b, _ = apply_model(model, v, x, train=True, rng=jax.random.key(1))
  c, _ = apply_model(model, v, x, train=True, rng=jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  e1, _ = apply_model(model, v, x, train=False)
  e2, _ = apply_model(model, v, x, train=False)
  np.testing.assert_array_equal(e1, e2)


def test_without_positional_encoding_and_with_one_token_window():
  args = dict(TINY, use_pes=False, window_size=[12, 10, 2], kernel_size=[1, 1])
  model = torch_compat.model_from_reference_args(args)
  v = model.init(jax.random.key(0), jnp.zeros((1, 12, 10, 2, 3)), train=False)
  assert 'buffers' not in v and model.num_tokens == 1
  assert 'blocks.0.pes.pe' not in list(torch_compat.reference_keys(args))
  logits, _ = apply_model(model, v, jnp.ones((2, 3, 12, 10, 2)), train=True)
  assert logits.shape == (2, 6) and np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize('override,message', [
    (dict(kernel_size=[3, 4]), 'kernel_size must be two odd ints'),
    (dict(window_size=[4, 5]), 'window_size must be three positive ints'),
    (dict(config=[[8, 8, 4], [12, 12, 4]]), r'config\[1\] takes 12 channels but config\[0\] gives 8'),
])
def test_bad_model_args_are_explained(override, message):
  with pytest.raises(ValueError, match=message):
    torch_compat.model_from_reference_args(dict(TINY, **override))


def test_input_that_does_not_fit_is_explained():
  model = ISTANet(**{**TINY, 'window_size': (4, 5, 2), 'kernel_size': (3, 3),
                     'config': ((8, 8, 4), (8, 12, 4))})
  with pytest.raises(ValueError, match=r'does not fit the model: expected T=12, J, E, C = \(10, 2, 3\)'):
    model.init(jax.random.key(0), jnp.zeros((1, 12, 25, 2, 3)), train=False)
