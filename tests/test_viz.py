"""`istanet_jax.viz`: every figure written with its pixel size and frame count, attention maps equal
to an independent recomputation, bad input rejected with a one-line message naming the file."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.axes
import numpy as np
import pytest
from PIL import Image

from configs import demo
from istanet_jax import export, steps, viz
from istanet_jax.model import ISTANet, TSABlock, positional_encoding_table

LAYOUT_SHAPES = {'ntu': (25, 2), 'sbu': (15, 2), 'h2o': (21, 3), 'assembly101': (21, 2)}


def moving_sequence(layout, frames=5, seed=0):
  joints, entities = LAYOUT_SHAPES[layout]
  rng = np.random.default_rng(seed)
  seq = rng.normal(size=(1, joints, entities, 3)).astype(np.float32)
  seq = seq + np.arange(frames, dtype=np.float32)[:, None, None, None] * 0.3
  return seq


def image_size(path):
  assert path.stat().st_size > 0
  with Image.open(path) as im:
    return im.size, getattr(im, 'n_frames', 1)


@pytest.mark.parametrize('layout', sorted(LAYOUT_SHAPES))
def test_skeleton_png_and_gif(tmp_path, layout, monkeypatch):
  seq = moving_sequence(layout)
  seq[2, :, 1] = 0  # a missing entity in one frame is skipped, not drawn at the origin
  png, gif = tmp_path / 'f.png', tmp_path / 'a.gif'
  drawn, scatter = [], matplotlib.axes.Axes.scatter
  monkeypatch.setattr(matplotlib.axes.Axes, 'scatter', lambda self, *a, **k: (
      drawn.append(k.get('label')) or scatter(self, *a, **k)))
  assert viz.render_skeleton(seq, layout, str(png), frame=2, figsize=(3, 2), dpi=50) == 1
  names = [name for name, _ in viz.get_layout(layout).entities]
  assert drawn == [n for m, n in enumerate(names) if m != 1]  # entity 1 left out of frame 2
  assert image_size(png) == ((150, 100), 1)
  assert viz.render_skeleton(seq, layout, str(gif), figsize=(2, 2), dpi=40) == 5
  assert image_size(gif) == ((80, 80), 5)


def test_skeleton_limits_fixed_and_ignore_missing():
  seq = moving_sequence('sbu', frames=3)
  seq[1, :, 0] = 0
  (x0, x1), (y0, y1) = viz._limits(seq.astype(np.float64), viz._present(seq))
  pts = np.concatenate([seq[0].reshape(-1, 3), seq[1, :, 1], seq[2].reshape(-1, 3)])
  assert x0 < pts[:, 0].min() and x1 > pts[:, 0].max()
  assert y0 < pts[:, 1].min() and y1 > pts[:, 1].max()
  assert viz._present(seq).tolist() == [[True, True], [False, True], [True, True]]


def test_layout_bones_within_joints():
  for name, lay in viz.LAYOUTS.items():
    for _, bones in lay.entities:
      assert all(0 <= i < lay.num_joints and 0 <= j < lay.num_joints for i, j in bones), name
  assert len(viz.NTU_BONES) == 24 and len(viz.SBU_BONES) == 14


def test_skeleton_cli_and_bad_input(tmp_path):
  good = tmp_path / 'seq.npy'
  np.save(good, moving_sequence('ntu', frames=3))
  out = tmp_path / 'seq.gif'
  viz.main(['skeleton', '--layout', 'ntu', '--input', str(good), '--out', str(out),
            '--size', '2', '--dpi', '30'])
  assert image_size(out) == ((60, 60), 3)

  wrong = tmp_path / 'wrong.npy'
  np.save(wrong, moving_sequence('sbu', frames=2))
  cases = [
      (['--layout', 'ntu', '--input', str(wrong)], r'wrong\.npy: 15 joints, layout ntu has 25'),
      (['--layout', 'ntu', '--input', str(tmp_path / 'nope.npy')], r'nope\.npy: no such'),
      (['--layout', 'kinetics', '--input', str(good)], r"unknown layout 'kinetics'"),
      (['--layout', 'ntu', '--input', str(good), '--fps', '0'], r'fps must be > 0, got 0'),
  ]
  for args, pattern in cases:
    with pytest.raises(SystemExit, match=pattern) as info:
      viz.main(['skeleton', *args, '--out', str(tmp_path / 'x.png')])
    assert '\n' not in str(info.value.code)
  with pytest.raises(ValueError, match=r'<array>: 15 joints, layout h2o has 21'):
    viz.render_skeleton(moving_sequence('sbu'), 'h2o', str(tmp_path / 'x.png'))
  with pytest.raises(ValueError, match='unknown layout'):
    viz.render_skeleton(moving_sequence('sbu'), 'kinetics', str(tmp_path / 'x.png'))


# --------------------------------------------------------------------------- attention


def tiny_model():
  return ISTANet(window_size=(2, 3, 2), num_classes=3, num_joints=6, num_frames=4,
                 num_persons=2, num_heads=2, num_channels=3, kernel_size=(3, 3),
                 config=((8, 8, 4), (8, 16, 4)))


def block_inputs(model, variables, x):
  """Each TSABlock's input, captured by intercepting its call (not by the code under test)."""
  seen = []

  def grab(next_fun, args, kwargs, context):
    if isinstance(context.module, TSABlock) and context.method_name == '__call__':
      seen.append(np.asarray(args[0], np.float64))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(grab):
    model.apply(variables, x, train=False)
  return seen


def direct_attention(params, x, model):
  """The block's attention from its definition, in float64 numpy: q, k as the (q/k, head, d)
  channel groups of a 1x1x1 conv of x + pe, logits over flattened (Tw, JE, d)."""
  n, u, tw, je, c = x.shape
  h = model.num_heads
  d = params['to_qkvs']['weight'].shape[-1] // (2 * h)
  pe = positional_encoding_table(c, model.window_size, u)  # (1, Tw, JE, U, C)
  xa = x + np.moveaxis(pe, 3, 1)
  w = np.asarray(params['to_qkvs']['weight'], np.float64)[0, 0, 0]
  b = np.asarray(params['to_qkvs']['bias'], np.float64)
  qk = (xa @ w + b).reshape(n, u, tw, je, 2, h, d)
  q = np.moveaxis(qk[..., 0, :, :], 4, 1).reshape(n, h, u, -1)
  k = np.moveaxis(qk[..., 1, :, :], 4, 1).reshape(n, h, u, -1)
  logits = np.einsum('nhpk,nhqk->nhpq', q, k)
  alpha = np.asarray(params['alpha'], np.float64)
  m = np.asarray(params['M'], np.float64)
  return np.tanh(logits / (d * tw * je)) * alpha + m


def params_scaled(params):
  return jax.tree_util.tree_map(lambda a: np.asarray(a) * 1.5, params)


def test_attention_maps_equal_direct_recomputation(tmp_path):
  model = tiny_model()
  x = jax.random.normal(jax.random.key(0), (2, 4, 6, 2, 3))
  variables = model.init(jax.random.key(1), x, train=False)
  params = jax.tree_util.tree_map(np.asarray, variables['params'])
  # alpha and M away from their init (1 and 1/U), so a swapped or ignored one would show.
  for i in range(2):
    params[f'blocks.{i}']['alpha'] = np.array([0.5, -2.0], np.float32).reshape(1, 2, 1, 1)
    params[f'blocks.{i}']['M'] = np.asarray(
        jax.random.normal(jax.random.key(10 + i), params[f'blocks.{i}']['M'].shape))
  variables = {**variables, 'params': params}

  maps = viz.attention_maps(model, variables, x)
  assert maps.shape == (2, 2, 2, 4, 4)
  for i, xin in enumerate(block_inputs(model, variables, x)):
    want = direct_attention(params[f'blocks.{i}'], xin, model)
    np.testing.assert_allclose(maps[i], want, rtol=1e-4, atol=1e-5)
  # The heads differ (alpha -2 vs 0.5), so the maps are not one head repeated.
  assert not np.allclose(maps[:, :, 0], maps[:, :, 1])
  # Another call (an equal model, other weights) reuses the compilation.
  compiled = viz._jitted_attention_maps()._cache_size()
  again = viz.attention_maps(tiny_model(), {**variables, 'params': params_scaled(params)}, x)
  assert viz._jitted_attention_maps()._cache_size() == compiled
  assert not np.allclose(again, maps)

  out = tmp_path / 'att.png'
  assert viz.plot_attention(maps, str(out), sample=1, cell=1.5, dpi=40) == (3.0, 3.0)
  assert image_size(out) == ((120, 120), 1)


def test_attention_cli_from_pt_checkpoint(tmp_path):
  config = demo.get_config()
  model = steps.model_from_config(config)
  variables = model.init(jax.random.key(0), jnp.zeros(model.input_shape()), train=False)
  pt = tmp_path / 'tiny.pt'
  export.export_pt(config.model.to_dict(), variables, str(pt))
  seq = tmp_path / 'seq.npy'
  np.save(seq, moving_sequence('sbu', frames=46))
  out = tmp_path / 'att.png'
  args = ['attention', '--config', 'configs/demo.py', '--checkpoint', str(pt),
          '--input', str(seq), '--cell', '1', '--dpi', '50']
  viz.main([*args, '--out', str(out)])
  blocks, heads = len(model.config), model.num_heads
  assert image_size(out) == ((heads * 50, blocks * 50), 1)

  np.save(seq, moving_sequence('ntu', frames=46))
  with pytest.raises(SystemExit, match=r'seq\.npy: expected \(T, 15, 2, 3\)'):
    viz.main([*args, '--out', str(out)])
  np.save(seq, moving_sequence('sbu', frames=46))
  with pytest.raises(SystemExit, match=r'missing\.pt: no such file'):
    viz.main(['attention', '--config', 'configs/demo.py', '--checkpoint',
              str(tmp_path / 'missing.pt'), '--input', str(tmp_path / 'seq.npy'),
              '--out', str(out)])


# --------------------------------------------------------------------------- curves, confusion


def write_metrics(workdir, epochs=4):
  lines = []
  for e in range(1, epochs + 1):
    lines.append({'step': 10 * e, 'epoch': e, 'train/loss': 2.0 / e, 'train/top1': 0.2 * e,
                  'lr': 0.1 * 0.5 ** e, 'train/samples_per_second': 100.0})
    lines.append({'step': 10 * e, 'epoch': e, 'eval/loss': 2.5 / e, 'eval/top1': 0.15 * e})
  (workdir / 'metrics.jsonl').write_text(''.join(json.dumps(l) + '\n' for l in lines))


def test_curves(tmp_path):
  write_metrics(tmp_path)
  out = tmp_path / 'curves.png'
  viz.main(['curves', '--workdir', str(tmp_path), '--out', str(out), '--dpi', '40'])
  assert image_size(out) == ((480, 140), 1)
  series = viz.plot_curves(str(tmp_path / 'metrics.jsonl'), str(out), figsize=(4, 2), dpi=30)
  assert image_size(out) == ((120, 60), 1)
  assert set(series) == {'train/loss', 'eval/loss', 'train/top1', 'eval/top1', 'lr'}
  np.testing.assert_allclose(series['eval/top1'][1], [0.15, 0.3, 0.45, 0.6])
  assert series['lr'][0].tolist() == [1, 2, 3, 4]

  with pytest.raises(SystemExit, match=r'nowhere: no such metrics file'):
    viz.main(['curves', '--workdir', str(tmp_path / 'nowhere'), '--out', str(out)])
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"epoch": 5, oops\n')
  with pytest.raises(SystemExit, match=r'metrics\.jsonl:9: not JSON'):
    viz.main(['curves', '--workdir', str(tmp_path), '--out', str(out)])


def write_scores(workdir, scores, labels):
  np.save(workdir / 'best_scores.npy', np.asarray(scores, np.float32))
  (workdir / 'best_scores.json').write_text(json.dumps(
      {'sample_names': [f's{i}' for i in range(len(labels))], 'labels': list(labels),
       'per_class_top1': [None] * np.shape(scores)[1]}))


def test_confusion(tmp_path):
  # Class 0: 2 of 3 right; class 1: 1 right; class 2: no samples; one unlabelled sample.
  scores = [[5, 0, 0], [4, 1, 0], [0, 0, 3], [0, 2, 1], [0, 0, 9]]
  write_scores(tmp_path, scores, [0, 0, 0, 1, -1])
  names = tmp_path / 'names.txt'
  names.write_text('wave\npunch\nhug\n')
  out = tmp_path / 'cm.png'
  viz.main(['confusion', '--workdir', str(tmp_path), '--class-names', str(names),
            '--out', str(out), '--size', '3', '--dpi', '50'])
  assert image_size(out) == ((150, 150), 1)
  cm = viz.plot_confusion(str(tmp_path / 'best_scores.npy'), str(out), figsize=(2, 3), dpi=40)
  assert image_size(out) == ((80, 120), 1)
  np.testing.assert_allclose(cm, [[2 / 3, 0, 1 / 3], [0, 1, 0], [0, 0, 0]])

  names.write_text('wave\npunch\n')
  with pytest.raises(SystemExit, match=r'names\.txt: 2 class names for 3 classes'):
    viz.main(['confusion', '--workdir', str(tmp_path), '--class-names', str(names),
              '--out', str(out)])
  write_scores(tmp_path, scores, [0, 0, 1])
  with pytest.raises(SystemExit, match=r'best_scores\.json: 3 labels for 5 score rows'):
    viz.main(['confusion', '--workdir', str(tmp_path), '--out', str(out)])
  with pytest.raises(SystemExit, match=r'empty\.npy: no such scores file'):
    viz.main(['confusion', '--workdir', str(tmp_path / 'empty.npy'), '--out', str(out)])
