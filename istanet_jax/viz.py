r"""Figures: skeleton sequences, attention maps, training curves and confusion matrices.

  python -m istanet_jax.viz skeleton --layout ntu --input seq.npy --out seq.gif
  python -m istanet_jax.viz attention --config configs/demo.py --checkpoint ckpt \
      --input seq.npy --out attention.png
  python -m istanet_jax.viz curves --workdir /tmp/run --out curves.png
  python -m istanet_jax.viz confusion --workdir /tmp/run [--class-names names.txt] --out cm.png

This module owns the drawing and the dataset joint graphs used for it (bone lists as in the
reference's `tools/dataset_viz/graph/*.py`, 0-based). Every figure is a `matplotlib.figure.Figure`
drawn on the Agg canvas (no pyplot, no display), with an explicit size in inches and dpi, so an
output's pixel size is `figsize * dpi` exactly. Functions raise ValueError naming the file and
the reason; `main` turns that into a one-line SystemExit message.

Attention maps are recomputed outside the model, without changing it: `to_qkvs`'s output (q and
k of every head) is captured with Flax's `capture_intermediates`, and each block's
tanh(q k^T / (d Tw JE)) * alpha + M is formed from it and the block's `alpha` and `M`, as
`model.TSABlock` does (eval mode: attention dropout is off).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import os
import sys
from typing import Optional, Sequence

import numpy as np

# --------------------------------------------------------------------------- joint graphs


def _one_based(pairs):
  return tuple((i - 1, j - 1) for i, j in pairs)


NTU_BONES = _one_based((
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
    (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
    (20, 19), (22, 23), (23, 8), (24, 25), (25, 12)))
SBU_BONES = _one_based((
    (1, 2), (4, 2), (5, 4), (6, 5), (7, 2), (8, 7), (9, 8), (3, 2), (10, 3), (11, 10),
    (12, 11), (15, 14), (14, 13), (13, 3)))
H2O_HAND_BONES = (
    (1, 2), (2, 3), (3, 4), (5, 6), (6, 7), (7, 8), (9, 10), (10, 11), (11, 12), (13, 14),
    (14, 15), (15, 16), (17, 18), (18, 19), (19, 20), (0, 1), (0, 5), (0, 9), (0, 13), (0, 17))
# The object's 21 points start with its centre and the 8 corners of its box: the box's edges.
H2O_OBJECT_BONES = (
    (1, 2), (2, 3), (3, 4), (4, 1), (1, 5), (2, 6), (3, 7), (4, 8), (5, 6), (6, 7), (7, 8),
    (8, 5))
ASSEMBLY101_BONES = (
    (5, 17), (17, 18), (18, 19), (19, 4), (5, 14), (14, 15), (15, 16), (16, 3), (5, 11),
    (11, 12), (12, 13), (13, 2), (5, 8), (8, 9), (9, 10), (10, 1), (5, 6), (6, 7), (7, 0),
    (6, 8), (8, 11), (11, 14), (14, 17))


@dataclasses.dataclass(frozen=True)
class Layout:
  """A dataset's skeleton: joints per entity, and each entity's name and bones."""
  num_joints: int
  entities: tuple  # ((name, bones), ...), in the dataset's entity order

  @property
  def num_entities(self) -> int:
    return len(self.entities)


LAYOUTS = {
    'ntu': Layout(25, (('person 1', NTU_BONES), ('person 2', NTU_BONES))),
    'sbu': Layout(15, (('person A', SBU_BONES), ('person B', SBU_BONES))),
    'h2o': Layout(21, (('left hand', H2O_HAND_BONES), ('right hand', H2O_HAND_BONES),
                       ('object', H2O_OBJECT_BONES))),
    'assembly101': Layout(21, (('hand 0', ASSEMBLY101_BONES), ('hand 1', ASSEMBLY101_BONES))),
}
_COLOURS = ('tab:blue', 'tab:red', 'tab:green', 'tab:orange')


def get_layout(name: str) -> Layout:
  if name not in LAYOUTS:
    raise ValueError(f'unknown layout {name!r}, expected one of {", ".join(LAYOUTS)}')
  return LAYOUTS[name]


# --------------------------------------------------------------------------- figures


def _figure(figsize, dpi):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=figsize, dpi=dpi)
  FigureCanvasAgg(fig)
  return fig


def _rgba(fig) -> np.ndarray:
  fig.canvas.draw()
  return np.asarray(fig.canvas.buffer_rgba()).copy()


def _save_png(fig, path: str) -> None:
  _ensure_parent(path)
  # No bbox_inches='tight': the pixel size stays figsize * dpi.
  fig.savefig(path, format='png', dpi=fig.dpi)


def _ensure_parent(path: str) -> None:
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    raise ValueError(f'{path}: output directory {parent} does not exist')


def _check_exists(path: str, what: str) -> None:
  if not os.path.isfile(path):
    raise ValueError(f'{path}: no such {what} file')


# --------------------------------------------------------------------------- skeleton


def load_sequence(path: str, layout: str) -> np.ndarray:
  """A (T, V, M, 3) `.npy` sequence, checked against `layout`; ValueError names `path`."""
  _check_exists(path, 'sequence')
  try:
    seq = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f'{path}: not a .npy array ({e})') from None
  check_sequence(seq, layout, source=path)
  return seq


def check_sequence(seq: np.ndarray, layout: str, source: str = '<array>') -> Layout:
  lay = get_layout(layout)
  seq = np.asarray(seq)
  if seq.ndim != 4 or seq.shape[-1] < 2 or seq.shape[0] < 1:
    raise ValueError(f'{source}: expected a (T, V, M, 3) array, got shape {seq.shape}')
  if seq.shape[1] != lay.num_joints:
    raise ValueError(f'{source}: {seq.shape[1]} joints, layout {layout} has {lay.num_joints}')
  if seq.shape[2] > lay.num_entities:
    raise ValueError(f'{source}: {seq.shape[2]} entities, layout {layout} has at most '
                     f'{lay.num_entities}')
  if not np.all(np.isfinite(seq)):
    raise ValueError(f'{source}: non-finite coordinates')
  return lay


def _present(seq: np.ndarray) -> np.ndarray:
  """(T, M): whether entity m has any non-zero coordinate in frame t (zeros mean missing)."""
  return np.any(seq != 0, axis=(1, 3))


def _limits(seq: np.ndarray, present: np.ndarray):
  """Fixed (x, y) limits over the whole sequence, from the present entities only, 5% margin."""
  pts = seq.transpose(0, 2, 1, 3)[present][..., :2].reshape(-1, 2)
  if pts.size == 0:
    return (-1.0, 1.0), (-1.0, 1.0)
  lo, hi = pts.min(0), pts.max(0)
  pad = np.maximum((hi - lo) * 0.05, 1e-3)
  return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def _draw_frame(ax, seq, t, lay: Layout, present, limits, title):
  ax.clear()
  for m in range(seq.shape[2]):
    if not present[t, m]:
      continue
    name, bones = lay.entities[m]
    colour = _COLOURS[m % len(_COLOURS)]
    joints = seq[t, :, m, :2]
    for i, j in bones:
      ax.plot(joints[[i, j], 0], joints[[i, j], 1], color=colour, linewidth=1.5)
    ax.scatter(joints[:, 0], joints[:, 1], s=6, color=colour, label=name)
  ax.set_xlim(*limits[0])
  ax.set_ylim(*limits[1])
  ax.set_aspect('equal', adjustable='box')
  ax.set_title(f'{title}frame {t}', fontsize=9)
  if present[t].any():
    ax.legend(loc='upper right', fontsize=7)


def render_skeleton(seq: np.ndarray, layout: str, out: str, *, frame: int = 0, stride: int = 1,
                    figsize=(4.0, 4.0), dpi: int = 100, fps: float = 10.0,
                    title: str = '', source: str = '<array>') -> int:
  """Draws a (T, V, M, 3) sequence's (x, y) projection: `.png` one frame, `.gif` every `stride`.

  Entities that are all zero in a frame are skipped. Returns the number of frames written.
  """
  lay = check_sequence(seq, layout, source)
  seq = np.asarray(seq, np.float64)
  ext = os.path.splitext(out)[1].lower()
  if ext not in ('.png', '.gif'):
    raise ValueError(f'{out}: output must be .png (one frame) or .gif (animation)')
  if stride < 1:
    raise ValueError(f'stride must be >= 1, got {stride}')
  if not fps > 0:
    raise ValueError(f'fps must be > 0, got {fps}')
  present = _present(seq)
  limits = _limits(seq, present)
  fig = _figure(figsize, dpi)
  ax = fig.add_subplot(1, 1, 1)
  title = f'{title} ' if title else ''
  _ensure_parent(out)
  if ext == '.png':
    if not 0 <= frame < seq.shape[0]:
      raise ValueError(f'{source}: frame {frame} outside 0..{seq.shape[0] - 1}')
    _draw_frame(ax, seq, frame, lay, present, limits, title)
    _save_png(fig, out)
    return 1
  from PIL import Image  # pylint: disable=g-import-not-at-top
  frames = []
  for t in range(0, seq.shape[0], stride):
    _draw_frame(ax, seq, t, lay, present, limits, title)
    frames.append(Image.fromarray(_rgba(fig)).convert('RGB'))
  # Pillow merges consecutive identical frames into one longer one; a still sequence then has
  # fewer frames than it has time steps, which is what a viewer shows anyway.
  frames[0].save(out, format='GIF', save_all=True, append_images=frames[1:],
                 duration=int(round(1000 / fps)), loop=0)
  return len(frames)


# --------------------------------------------------------------------------- attention


def attention_maps(model, variables, x) -> np.ndarray:
  """Every block's tanh(q k^T / (d Tw JE)) * alpha + M for input x (N, T, J, E, C), eval mode.

  Returns float32 (blocks, N, heads, U, U): row p is how token p mixes the tokens.
  """
  return np.asarray(_jitted_attention_maps()(model, variables, x))


@functools.cache
def _jitted_attention_maps():
  """`_attention_maps` jitted once per process (the model static: a call with an equal model
  and the same shapes reuses the compilation). Jitted: run op by op, one sample of the NTU
  model took 11.4-12.7 s (3.2 s jitted). jax is imported here, not with this module."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.jit(_attention_maps, static_argnums=0)


def _attention_maps(model, variables, x):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def is_qk(module, method_name):
    return method_name == '__call__' and module.name == 'to_qkvs'

  _, state = model.apply(variables, x, train=False, capture_intermediates=is_qk,
                         mutable=['intermediates'])
  inter = state['intermediates']
  maps = []
  for i in range(len(model.config)):
    block = f'blocks.{i}'
    qk = inter[block]['to_qkvs']['__call__'][0]
    h = len(qk) // 2
    n, u, tw, je, d = qk[0].shape
    q = jnp.stack([a.reshape(n, u, -1) for a in qk[:h]], 1).astype(jnp.float32)
    k = jnp.stack([a.reshape(n, u, -1) for a in qk[h:]], 1).astype(jnp.float32)
    logits = jnp.einsum('nhpk,nhqk->nhpq', q, k, precision=jax.lax.Precision.HIGHEST)
    params = variables['params'][block]
    alpha = jnp.asarray(params['alpha'], jnp.float32)
    m = jnp.asarray(params['M'], jnp.float32)
    maps.append(jnp.tanh(logits / (d * tw * je)) * alpha + m)
  return jnp.stack(maps)


def plot_attention(maps: np.ndarray, out: str, *, sample: int = 0, cell: float = 2.5,
                   dpi: int = 100, title: str = '') -> tuple:
  """A blocks x heads grid of one sample's (U, U) maps; figure size (heads*cell, blocks*cell).

  Returns the figure size in inches.
  """
  maps = np.asarray(maps)
  if maps.ndim != 5 or maps.shape[-1] != maps.shape[-2]:
    raise ValueError(f'attention maps must be (blocks, N, heads, U, U), got {maps.shape}')
  if not 0 <= sample < maps.shape[1]:
    raise ValueError(f'sample {sample} outside 0..{maps.shape[1] - 1}')
  blocks, _, heads = maps.shape[:3]
  figsize = (heads * cell, blocks * cell)
  fig = _figure(figsize, dpi)
  for b in range(blocks):
    for h in range(heads):
      ax = fig.add_subplot(blocks, heads, b * heads + h + 1)
      im = ax.imshow(maps[b, sample, h], cmap='viridis', interpolation='nearest')
      ax.set_title(f'block {b} head {h}', fontsize=8)
      ax.tick_params(labelsize=6)
      fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  _save_png(fig, out)
  return figsize


def load_config(spec: str):
  """`path/to/config.py[:arg]` -> get_config(arg), as ml_collections' config flags read it."""
  path, _, arg = spec.partition(':')
  _check_exists(path, 'config')
  # Configs import their siblings as `configs.<name>`: the folder above them must be importable.
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  if root not in sys.path:
    sys.path.insert(0, root)
  module_spec = importlib.util.spec_from_file_location('_viz_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ValueError(f'{path}: no get_config()')
  return module.get_config(arg) if arg else module.get_config()


def attention_from_checkpoint(config, checkpoint: str, seq_path: str, out: str, **kwargs):
  """Loads `checkpoint`, runs the config's test transform on the (T, V, M, C) `.npy` at
  `seq_path` and plots the maps. Returns the maps (blocks, 1, heads, U, U)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from istanet_jax import export, steps  # pylint: disable=g-import-not-at-top

  _check_exists(seq_path, 'sequence')
  seq = np.load(seq_path, allow_pickle=False)
  m = config.model
  if seq.ndim != 4 or seq.shape[1:3] != (m.num_joints, m.num_persons) or seq.shape[-1] != 3:
    raise ValueError(f'{seq_path}: expected (T, {m.num_joints}, {m.num_persons}, 3) for this '
                     f'config, got {seq.shape}')
  model = steps.model_from_config(config)
  variables = export.load_variables(config, checkpoint)
  x = steps.eval_transform(config)(jnp.asarray(seq[None], jnp.float32))
  maps = attention_maps(model, variables, x)
  plot_attention(maps, out, title=os.path.basename(seq_path), **kwargs)
  return maps


# --------------------------------------------------------------------------- curves

CURVE_PANELS = (('loss', ('train/loss', 'eval/loss')), ('top-1', ('train/top1', 'eval/top1')),
                ('learning rate', ('lr',)))


def read_metrics(path: str) -> list:
  """The records of a `metrics.jsonl`; ValueError names the file (and line) when it is bad."""
  _check_exists(path, 'metrics')
  records = []
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{lineno}: not JSON ({e.msg})') from None
      if not isinstance(record, dict) or 'epoch' not in record:
        raise ValueError(f'{path}:{lineno}: a record needs an epoch')
      records.append(record)
  if not records:
    raise ValueError(f'{path}: no records')
  return records


def curve_series(records: Sequence[dict]) -> dict:
  """key -> (epochs, values) for each curve key present; a resumed run's repeat keeps the last."""
  series = {}
  for _, keys in CURVE_PANELS:
    for key in keys:
      by_epoch = {r['epoch']: float(r[key]) for r in records if key in r}
      if by_epoch:
        epochs = sorted(by_epoch)
        series[key] = (np.asarray(epochs), np.asarray([by_epoch[e] for e in epochs]))
  return series


def plot_curves(metrics_path: str, out: str, *, figsize=(12.0, 3.5), dpi: int = 100) -> dict:
  """Loss, top-1 and learning rate against epoch, one panel each. Returns the series drawn."""
  path = metrics_path
  if os.path.isdir(path):
    path = os.path.join(path, 'metrics.jsonl')
  series = curve_series(read_metrics(path))
  if not series:
    raise ValueError(f'{path}: none of {", ".join(k for _, ks in CURVE_PANELS for k in ks)}')
  fig = _figure(figsize, dpi)
  for i, (name, keys) in enumerate(CURVE_PANELS):
    ax = fig.add_subplot(1, len(CURVE_PANELS), i + 1)
    for key in keys:
      if key in series:
        ax.plot(*series[key], marker='.', label=key)
    ax.set_xlabel('epoch')
    ax.set_title(name, fontsize=10)
    if name == 'learning rate' and 'lr' in series and np.all(series['lr'][1] > 0):
      ax.set_yscale('log')
    if any(k in series for k in keys):
      ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  _save_png(fig, out)
  return series


# --------------------------------------------------------------------------- confusion


def load_scores(scores_path: str, json_path: Optional[str] = None):
  """(scores (N, K), labels (N,)) of `best_scores.npy` and its `.json`, checked."""
  json_path = json_path or os.path.splitext(scores_path)[0] + '.json'
  _check_exists(scores_path, 'scores')
  _check_exists(json_path, 'scores json')
  try:
    scores = np.load(scores_path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f'{scores_path}: not a .npy array ({e})') from None
  try:
    with open(json_path) as f:
      labels = json.load(f)['labels']
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise ValueError(f'{json_path}: no labels list ({type(e).__name__}: {e})') from None
  labels = np.asarray(labels)
  if scores.ndim != 2:
    raise ValueError(f'{scores_path}: expected (N, num_classes) scores, got shape {scores.shape}')
  if labels.shape != (scores.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'{json_path}: {labels.shape[0] if labels.ndim else 0} labels for '
                     f'{scores.shape[0]} score rows (or not integers)')
  if np.any(labels >= scores.shape[1]):
    raise ValueError(f'{json_path}: label {labels.max()} outside 0..{scores.shape[1] - 1}')
  return scores, labels


def confusion_matrix(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Row-normalised (K, K): row = true class, column = predicted. Unlabelled (-1) samples are
  left out; a class with no samples is a row of zeros."""
  k = scores.shape[1]
  keep = labels >= 0
  counts = np.zeros((k, k), np.int64)
  np.add.at(counts, (labels[keep], scores[keep].argmax(1)), 1)
  totals = counts.sum(1, keepdims=True)
  return np.divide(counts, totals, out=np.zeros((k, k)), where=totals > 0)


def read_class_names(class_names, num_classes: int) -> list:
  """Names for `num_classes` classes: from a text file (one a line), as given (a list), or the
  class ids where None."""
  if class_names is None:
    return [str(i) for i in range(num_classes)]
  if isinstance(class_names, str):
    _check_exists(class_names, 'class names')
    with open(class_names) as f:
      names = [l.strip() for l in f if l.strip()]
  else:
    names = list(class_names)
  if len(names) != num_classes:
    raise ValueError(f'{class_names if isinstance(class_names, str) else "class_names"}: '
                     f'{len(names)} class names for {num_classes} classes')
  return names


def plot_confusion(scores_path: str, out: str, *, class_names=None,
                   json_path: Optional[str] = None, figsize=(6.0, 6.0),
                   dpi: int = 100) -> np.ndarray:
  """The confusion matrix of saved scores as a PNG. Returns the matrix drawn."""
  if os.path.isdir(scores_path):
    scores_path = os.path.join(scores_path, 'best_scores.npy')
  scores, labels = load_scores(scores_path, json_path)
  if not np.any(labels >= 0):
    raise ValueError(f'{scores_path}: no labelled samples (all labels are -1)')
  k = scores.shape[1]
  names = read_class_names(class_names, k)
  cm = confusion_matrix(scores, labels)
  fig = _figure(figsize, dpi)
  ax = fig.add_subplot(1, 1, 1)
  im = ax.imshow(cm, cmap='Blues', vmin=0.0, vmax=1.0, interpolation='nearest')
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  if k <= 12:
    for (i, j), v in np.ndenumerate(cm):
      if v > 0:
        ax.text(j, i, f'{v:.2f}', ha='center', va='center', fontsize=6,
                color='white' if v > 0.5 else 'black')
  if k <= 40:
    # Past ~40 classes tick labels overlap; the colours still show the structure.
    ax.set_xticks(range(k), names, rotation=90, fontsize=6)
    ax.set_yticks(range(k), names, fontsize=6)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  top1 = float(np.mean(scores[labels >= 0].argmax(1) == labels[labels >= 0]))
  ax.set_title(f'{os.path.basename(scores_path)}: top-1 {top1:.4f}', fontsize=9)
  fig.tight_layout()
  _save_png(fig, out)
  return cm


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m istanet_jax.viz', description=__doc__.split('\n')[0])
  sub = p.add_subparsers(dest='command', required=True)
  s = sub.add_parser('skeleton', help='one frame (.png) or the sequence (.gif) of a .npy')
  s.add_argument('--layout', required=True, help=f'one of {", ".join(LAYOUTS)}')
  s.add_argument('--input', required=True, help='(T, V, M, 3) .npy')
  s.add_argument('--out', required=True, help='.png or .gif')
  s.add_argument('--frame', type=int, default=0, help='.png: the frame to draw')
  s.add_argument('--stride', type=int, default=1, help='.gif: draw every stride-th frame')
  s.add_argument('--fps', type=float, default=10.0)
  s.add_argument('--size', type=float, default=4.0, help='inches (square)')
  s.add_argument('--dpi', type=int, default=100)
  a = sub.add_parser('attention', help='attention maps of every block and head for one input')
  a.add_argument('--config', required=True, help='configs/<name>.py[:arg]')
  a.add_argument('--checkpoint', required=True, help='Orbax dir (or step) or reference .pt')
  a.add_argument('--input', required=True, help='(T, V, M, 3) .npy, before the test transform')
  a.add_argument('--out', required=True, help='.png')
  a.add_argument('--cell', type=float, default=2.5, help='inches per map')
  a.add_argument('--dpi', type=int, default=100)
  c = sub.add_parser('curves', help='loss, top-1 and lr against epoch from metrics.jsonl')
  c.add_argument('--workdir', required=True, help='a workdir or its metrics.jsonl')
  c.add_argument('--out', required=True, help='.png')
  c.add_argument('--dpi', type=int, default=100)
  m = sub.add_parser('confusion', help='row-normalised confusion matrix of saved scores')
  m.add_argument('--workdir', required=True, help='a workdir or its best_scores.npy')
  m.add_argument('--class-names', default=None, help='text file, one class name per line')
  m.add_argument('--out', required=True, help='.png')
  m.add_argument('--size', type=float, default=6.0, help='inches (square)')
  m.add_argument('--dpi', type=int, default=100)
  return p


def main(argv=None) -> None:
  args = _parser().parse_args(argv)
  try:
    if args.command == 'skeleton':
      get_layout(args.layout)
      seq = load_sequence(args.input, args.layout)
      n = render_skeleton(seq, args.layout, args.out, frame=args.frame, stride=args.stride,
                          figsize=(args.size, args.size), dpi=args.dpi, fps=args.fps,
                          title=os.path.basename(args.input), source=args.input)
      print(f'{args.out}: {n} frame(s)')
    elif args.command == 'attention':
      maps = attention_from_checkpoint(load_config(args.config), args.checkpoint, args.input,
                                       args.out, cell=args.cell, dpi=args.dpi)
      print(f'{args.out}: {maps.shape[0]} blocks x {maps.shape[2]} heads, '
            f'{maps.shape[-1]} tokens')
    elif args.command == 'curves':
      series = plot_curves(args.workdir, args.out, dpi=args.dpi)
      print(f'{args.out}: {", ".join(series)}')
    else:
      cm = plot_confusion(args.workdir, args.out, class_names=args.class_names,
                          figsize=(args.size, args.size), dpi=args.dpi)
      print(f'{args.out}: {cm.shape[0]} classes')
  except (OSError, ValueError) as e:
    message = '; '.join(l.strip() for l in str(e).splitlines() if l.strip())
    raise SystemExit(f'error: {message}') from None


if __name__ == '__main__':
  main()
