r"""Classifying skeleton sequences from files: `python -m istanet_jax.predict`.

  python -m istanet_jax.predict --config configs/ntu26.py:xsub --checkpoint runs/ntu26/best \
      S018C001P008R001A061.skeleton [more inputs] [--top_k 5] [--output_json out.json]

Inputs (the format is taken from the name, or `--format`):
  ntu          a `.skeleton` file, read as `data_pipelines.ntu.process_skeleton_file` (denoised,
               two actors, origin at actor 1's spine mid)
  sbu          a `skeleton_pos.txt`, `data_pipelines.sbu.load_sequence` (46 frames, the
               reference's padding quirk)
  h2o          a take directory (`subject1/h1/0`, holding `cam4/hand_pose/`), frames
               `--start`..`--end` (default: all), `data_pipelines.h2o.load_clip`
  assembly101  a `poses_60fps/<video>.json`, 60 fps frames `--start`..`--end` (default: all)
               plus the reader's 25 frames of context each side, both hands
  npy          a (T, V, M, C) array; C = 3 (x, y, z) or 2 (x, y; z set to 0)
  pyskl        a pickle: {'annotations': [...]} or a bare list of dicts with 'keypoint'
               (M, T, V, C), 'frame_dir' (the name) and optionally 'label'; one result each.
               Pickles can run code when loaded: only read files you trust.

Each sequence then goes through what evaluation does to a sample (zero-padded or cut at the
end to `config.max_frames`, then `steps.make_eval_step`: the test crop + resize, bone/velocity
streams, the model in eval mode), so the default gives the logits `train.evaluate` gives for
that sample. `--window W [--stride S]` instead reads the whole sequence (no reader cap) and
classifies every W-frame window (the last one ends at the last frame), each window zero-padded
to W frames, and reports each window's top-k and the mean of the windows' softmax.

`--adapter` maps other pose layouts into the config's (see `istanet_jax.adapters`);
a single person is duplicated for NTU RGB+D 120 models (as their reader does; NTU 60's leaves
the second slot zero), other missing entities are zero. One jitted step runs every batch of
`--batch_size` windows (default the config's `test_batch_size`; fewer windows than that: the
next power of two), the last batch padded and masked, so the number of windows causes no
recompilation. Class names come from
`istanet_jax.labels`.

`python -m istanet_jax.predict validate|fuse ...` and any `--submission*` flag are handed to
`istanet_jax.submissions`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sys
from typing import Optional, Sequence

import numpy as np

from data_pipelines import assembly101, h2o, ntu, sbu
from data_pipelines.common import DataError
from istanet_jax import adapters, host

FORMATS = ('ntu', 'sbu', 'h2o', 'assembly101', 'npy', 'pyskl')
_SUFFIXES = (('.skeleton', 'ntu'), ('.txt', 'sbu'), ('.json', 'assembly101'), ('.npy', 'npy'),
             ('.pkl', 'pyskl'), ('.pickle', 'pyskl'))
# NTU builder -> (class subset of `ntu.class_label`, the labels shown for `.skeleton` inputs;
# the release whose preparation a file gets, `ntu.denoise_skeleton`).
_NTU_SUBSETS = {'ntu_mutual26': ('mutual26', 'ntu120'), 'ntu120': ('all120', 'ntu120'),
                'ntu_mutual11': ('mutual11', 'ntu60')}


def _ntu_subset(config) -> tuple[Optional[str], str]:
  return _NTU_SUBSETS.get(config.dataset.split('/')[0] if config is not None else None,
                          (None, 'ntu120'))


@dataclasses.dataclass
class Clip:
  """One sequence read from an input.

  skeleton: float32 (T, V, M, C), as read (C = 2 or 3; V, M not yet fitted to the model).
  label: the config's class where the input says (file name, folder, label file, pickle).
  """

  name: str
  source: str
  skeleton: np.ndarray
  label: Optional[int] = None


# --------------------------------------------------------------------------- reading


def _h2o_take(path: str) -> Optional[str]:
  """The take directory for `path` (a take, or its cam4/), or None."""
  if os.path.isdir(os.path.join(path, 'cam4', 'hand_pose')):
    return path
  if os.path.basename(os.path.normpath(path)) == 'cam4' and os.path.isdir(
      os.path.join(path, 'hand_pose')):
    return os.path.dirname(os.path.normpath(path))
  return None


def detect_format(path: str) -> str:
  """The input format of `path` from its name (a directory: an H2O take); DataError if none."""
  if os.path.isdir(path):
    if _h2o_take(path) is None:
      raise DataError(path, 'a directory but not an H2O take (no cam4/hand_pose/ inside)')
    return 'h2o'
  lower = path.lower()
  for suffix, fmt in _SUFFIXES:
    if lower.endswith(suffix):
      return fmt
  raise DataError(path, f'unknown input format (name ends {os.path.splitext(path)[1]!r}); '
                  f'pass --format, one of {", ".join(FORMATS)}')


def _ntu_label(name: str, config, label: Optional[int] = None) -> Optional[int]:
  """An NTU subset config's class of sample `name` (a name as in the dataset says its action),
  else of `label` (0-based over every action, as pyskl's NTU files number them); None where
  neither says or the subset has no such class."""
  subset, _ = _ntu_subset(config)
  if subset is None:
    return None
  try:
    label = ntu.parse_ntu_name(name).label
  except DataError:
    if label is None:
      return None
  mapped = ntu.class_label(int(label), subset)
  return mapped if mapped >= 0 else None


def _sbu_label(path: str) -> Optional[int]:
  label_dir = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(path))))
  return sbu.LABEL_DIRS.index(label_dir) if label_dir in sbu.LABEL_DIRS else None


def _frame_range(path: str, start: Optional[int], end: Optional[int], last: int):
  start = 0 if start is None else start
  end = last if end is None else end
  if start < 0 or end < start:
    raise DataError(path, f'bad frame range --start {start} --end {end}')
  return start, end


def read_h2o(path: str, start: Optional[int], end: Optional[int], capped: bool) -> Clip:
  """Frames start..end (default: all) of an H2O take (or its cam4/), labelled as the reader
  labels validation clips (the first frame's `action_label`), where that file exists."""
  take = _h2o_take(path)
  pose_dir = os.path.join(take, 'cam4', 'hand_pose')
  frames = sorted(int(f[:-4]) for f in os.listdir(pose_dir) if f[:-4].isdigit() and
                  f.endswith('.txt'))
  if not frames:
    raise DataError(pose_dir, 'no <frame>.txt hand pose files')
  start, end = _frame_range(path, start if start is not None else frames[0], end, frames[-1])
  skeleton, _ = h2o.load_clip(take, '', start, end,
                              max_frames=h2o.MAX_FRAMES if capped else None)
  label = None
  label_file = os.path.join(take, 'cam4', 'action_label', f'{start:06d}.txt')
  if os.path.isfile(label_file):  # the reader's validation rule: the first frame's action
    with open(label_file) as f:
      value = f.readline().strip()
    if value.isdigit() and 1 <= int(value) <= h2o.NUM_CLASSES:
      label = int(value) - 1
  return Clip(f'{os.path.normpath(take)}:{start}:{end}', path, skeleton, label)


def read_assembly101(path: str, start: Optional[int], end: Optional[int], capped: bool) -> Clip:
  """60 fps frames start..end (default: all) of a pose json plus the reader's context, both
  hands, as the reader builds a segment's sequence."""
  frames = assembly101.load_pose_json(path)
  if not frames:
    raise DataError(path, 'no pose frames')
  start, end = _frame_range(path, start, end, len(frames) - 1)
  lo, hi = assembly101.context_window(start, end, len(frames))
  if hi <= lo:
    raise DataError(path, f'no pose frames for --start {start} --end {end} ({len(frames)} '
                    f'frames)')
  skeleton = assembly101.pose_array(path, frames, lo, hi).transpose(0, 2, 1, 3)
  if capped:  # the reader keeps a segment's first 200 frames
    skeleton = skeleton[:assembly101.MAX_FRAMES]
  name = os.path.splitext(os.path.basename(path))[0]
  return Clip(f'{name}:{start}:{end}', path, np.ascontiguousarray(skeleton))


def read_npy(path: str) -> Clip:
  try:
    skeleton = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise DataError(path, f'not a .npy array ({e})') from None
  return Clip(os.path.splitext(os.path.basename(path))[0], path, skeleton)


def read_pyskl(path: str, config=None) -> list[Clip]:
  """One clip per annotation of a pyskl-style pickle; 'keypoint' (M, T, V, C) -> (T, V, M, C)."""
  try:
    with open(path, 'rb') as f:
      data = pickle.load(f)
  except OSError:
    raise
  except Exception as e:  # unpickling raises many types for a file that is not a pickle
    raise DataError(path, f'not a readable pickle ({type(e).__name__}: {e})') from None
  annotations = data.get('annotations') if isinstance(data, dict) else data
  if not isinstance(annotations, list) or not annotations:
    raise DataError(path, "expected a non-empty list of annotations, or a dict with "
                    "'annotations'")
  clips = []
  for i, ann in enumerate(annotations):
    where = f'annotation {i}'
    if not isinstance(ann, dict) or 'keypoint' not in ann:
      raise DataError(path, f"{where}: expected a dict with 'keypoint'")
    keypoint = np.asarray(ann['keypoint'])
    if keypoint.ndim != 4 or keypoint.dtype.kind not in 'fiu':
      raise DataError(path, f"{where}: 'keypoint' must be a numeric (M, T, V, C) array, got "
                      f'{keypoint.dtype} {keypoint.shape}')
    name = str(ann.get('frame_dir', f'{os.path.basename(path)}[{i}]'))
    clips.append(Clip(name, path, keypoint.transpose(1, 2, 0, 3),
                      _pyskl_label(name, ann.get('label'), config)))
  return clips


def _pyskl_label(name: str, label, config) -> Optional[int]:
  """A pyskl annotation's label: as given, or for an NTU subset config its class there."""
  if _ntu_subset(config)[0] is None:
    return None if label is None else int(label)
  return _ntu_label(name, config, label)


def read_input(path: str, fmt: Optional[str] = None, *, start: Optional[int] = None,
               end: Optional[int] = None, capped: bool = True, config=None) -> list[Clip]:
  """The sequences of one input. `capped`: the reader's own frame cap (SBU 46, H2O 120, Assembly101
  200), as the prepared datasets hold them; False reads every frame (sliding windows).
  `config` (optional) gives NTU file names their class in the config's subset."""
  if not os.path.exists(path):
    raise DataError(path, 'no such file or directory')
  fmt = fmt or detect_format(path)
  if fmt not in FORMATS:
    raise DataError(path, f'--format {fmt!r}: unknown format; choose one of {", ".join(FORMATS)}')
  if (start is not None or end is not None) and fmt not in ('h2o', 'assembly101'):
    raise DataError(path, f'--start/--end apply to h2o and assembly101 inputs, not {fmt}')
  if fmt == 'h2o':
    if _h2o_take(path) is None:
      raise DataError(path, 'not an H2O take directory (no cam4/hand_pose/ inside)')
    return [read_h2o(path, start, end, capped)]
  if os.path.isdir(path):
    raise DataError(path, f'a directory, expected a {fmt} file')
  if fmt == 'ntu':
    name = os.path.basename(path).split('.')[0]
    skeleton = ntu.process_skeleton_file(path, _ntu_subset(config)[1])
    return [Clip(name, path, skeleton, _ntu_label(name, config))]
  if fmt == 'sbu':
    skeleton, _ = sbu.load_sequence(path, max_frames=sbu.MAX_FRAMES if capped else None)
    # The reader's sample name, `pair/label/seq`.
    name = '/'.join(os.path.abspath(path).split(os.sep)[-4:-1])
    return [Clip(name, path, skeleton, _sbu_label(path))]
  if fmt == 'assembly101':
    return [read_assembly101(path, start, end, capped)]
  if fmt == 'npy':
    return [read_npy(path)]
  return read_pyskl(path, config)


# --------------------------------------------------------------------------- model input


def fit_clip(clip: Clip, config, adapter: Optional[adapters.Adapter] = None,
             scale: float = 1.0, flip_y: bool = False) -> np.ndarray:
  """float32 (T, V, M, 3) in the config's joints and entities; ValueError naming the input.
  `flip_y` negates y: image keypoints' y grows downward, the datasets' camera y points up."""
  where = clip.source if clip.name in clip.source else f'{clip.source} ({clip.name})'
  x = np.asarray(clip.skeleton)
  if x.ndim != 4 or x.dtype.kind not in 'fiu':
    raise ValueError(f'{where}: expected a numeric (T, V, M, C) array, got {x.dtype} {x.shape}')
  if x.shape[0] == 0:
    raise ValueError(f'{where}: no frames')
  if x.shape[-1] not in (2, 3):
    raise ValueError(f'{where}: {x.shape[-1]} values per joint, expected 3 (x, y, z) or 2 (x, y)')
  if adapter is not None:
    x = adapter(x, where)
  x = x.astype(np.float32) * np.float32(scale)
  if flip_y:
    x[..., 1] = -x[..., 1]
  if x.shape[-1] == 2:
    x = np.concatenate([x, np.zeros(x.shape[:-1] + (1,), np.float32)], axis=-1)
  model = config.model
  if x.shape[1] != model.num_joints:
    hint = ''
    layout = adapters.layout_of(config.dataset)
    fitting = [n for n, a in adapters.ADAPTERS.items()
               if layout in a and a[layout].num_source_joints == x.shape[1]]
    if adapter is None and fitting:
      hint = f' (try --adapter {fitting[0]})'
    raise ValueError(f'{where}: {x.shape[1]} joints per entity, the config\'s model takes '
                     f'{model.num_joints}{hint}')
  if x.shape[2] > model.num_persons:
    raise ValueError(f'{where}: {x.shape[2]} entities, the config\'s model takes at most '
                     f'{model.num_persons}')
  if x.shape[2] < model.num_persons:
    if (x.shape[2] == 1 and adapters.layout_of(config.dataset) == 'ntu'
        and _ntu_subset(config)[1] == 'ntu120'):
      fill = np.repeat(x, model.num_persons - 1, axis=2)  # as the NTU 120 reader does
    else:
      fill = np.zeros(x.shape[:2] + (model.num_persons - x.shape[2], 3), np.float32)
    x = np.concatenate([x, fill], axis=2)
  if not np.all(np.isfinite(x)):
    raise ValueError(f'{where}: non-finite coordinates')
  return x


def window_bounds(num_frames: int, window: int, stride: int) -> list[tuple[int, int]]:
  """[start, end) of each window: every `stride` frames, the last one ending at the last frame."""
  for name, value in (('--window', window), ('--stride', stride)):
    if value < 1:
      raise ValueError(f'{name} {value} must be at least 1')
  if num_frames <= window:
    return [(0, num_frames)]
  starts = list(range(0, num_frames - window + 1, stride))
  if starts[-1] + window < num_frames:
    starts.append(num_frames - window)
  return [(s, s + window) for s in starts]


def _pad_frames(x: np.ndarray, length: int) -> np.ndarray:
  out = np.zeros((length,) + x.shape[1:], np.float32)
  out[:min(len(x), length)] = x[:length]
  return out


# --------------------------------------------------------------------------- the forward pass

_EVAL_STEPS: dict = {}


def _eval_step(config):
  """`steps.make_eval_step`, jitted once per config in this process."""
  import jax  # pylint: disable=g-import-not-at-top
  from istanet_jax import steps  # pylint: disable=g-import-not-at-top

  key = config.to_json_best_effort(sort_keys=True)
  if key not in _EVAL_STEPS:
    _EVAL_STEPS[key] = jax.jit(steps.make_eval_step(config, steps.model_from_config(config)))
  return _EVAL_STEPS[key]


def window_logits(config, variables: dict, x: np.ndarray, batch_size: int) -> np.ndarray:
  """float32 (N, num_classes) logits of the eval step for raw windows x (N, L, V, M, 3).

  Every batch has `batch_size` windows (the last padded with masked zeros), so one program
  serves any N.
  """
  from istanet_jax import train  # pylint: disable=g-import-not-at-top

  step = _eval_step(config)
  state = train.variables_as_state(variables)
  out = []
  for i in range(0, len(x), batch_size):
    chunk = x[i:i + batch_size]
    n = len(chunk)
    batch = {'skeleton': np.concatenate([chunk, np.zeros((batch_size - n,) + x.shape[1:],
                                                         np.float32)]),
             'label': np.zeros(batch_size, np.int32),
             'mask': np.arange(batch_size) < n}
    _, logits = step(state, batch)
    out.append(np.asarray(logits, np.float32)[:n])
  return np.concatenate(out)


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _top(probs: np.ndarray, k: int, names: Optional[Sequence[str]]) -> list[dict]:
  order = np.argsort(-probs, kind='stable')[:k]
  return [{'class': int(c), 'name': names[c] if names else None, 'prob': float(probs[c])}
          for c in order]


def predict(config, variables: dict, clips: Sequence[Clip], *, window: Optional[int] = None,
            stride: Optional[int] = None, batch_size: Optional[int] = None, top_k: int = 5,
            adapter: Optional[adapters.Adapter] = None, scale: float = 1.0,
            flip_y: bool = False, names: Optional[Sequence[str]] = None,
            notes: Optional[list] = None) -> dict:
  """Classifies `clips` (read with `capped=window is None`); returns the JSON-ready result.

  window: None, the evaluation view (the first `config.max_frames` frames, padded); else
    windows of `window` frames every `stride` (default `window`) frames.
  notes: if given, gets a line for each clip whose frames the evaluation view drops.
  """
  if top_k < 1:
    raise ValueError(f'--top_k {top_k}: must be at least 1')
  if stride is not None and window is None:
    raise ValueError('--stride needs --window')
  length = config.max_frames if window is None else window
  stride = length if stride is None else stride
  arrays, bounds = [], []
  for clip in clips:
    x = fit_clip(clip, config, adapter, scale, flip_y)
    if window is None:
      spans = [(0, min(len(x), length))]
      if len(x) > length and notes is not None:
        notes.append(f'{clip.source} ({clip.name}): {len(x)} frames; like evaluation, only the '
                     f'first {length} are used (--window covers them all)')
    else:
      spans = window_bounds(len(x), window, stride)
    bounds.append(spans)
    arrays += [_pad_frames(x[s:e], length) for s, e in spans]
  x = np.stack(arrays)
  if batch_size is not None and batch_size < 1:
    raise ValueError(f'--batch_size {batch_size}: must be at least 1')
  batch = batch_size or config.test_batch_size
  if len(x) < batch:
    # Fewer windows than a batch: the next power of two, so a few short inputs do not pay for
    # a whole batch and at most log2(batch) + 1 batch shapes are ever compiled.
    batch = min(batch, 1 << (len(x) - 1).bit_length())
  logits = window_logits(config, variables, x, batch)
  num_classes = logits.shape[-1]
  k = min(top_k, num_classes)
  samples, i = [], 0
  for clip, spans in zip(clips, bounds):
    these = logits[i:i + len(spans)]
    i += len(spans)
    probs = _softmax(these)
    label = clip.label
    samples.append({
        'name': clip.name, 'source': clip.source, 'num_frames': int(len(clip.skeleton)),
        'label': label,
        'label_name': names[label] if names and label is not None and 0 <= label < len(names)
                      else None,
        'top_k': _top(probs.mean(0), k, names),
        'windows': [{'start': s, 'end': e, 'top_k': _top(p, k, names),
                     'logits': [float(v) for v in l]}
                    for (s, e), p, l in zip(spans, probs, these)]})
  return {'dataset': config.dataset, 'num_classes': num_classes, 'frames_per_window': length,
          'window': window, 'stride': stride if window is not None else None,
          'samples': samples}


# --------------------------------------------------------------------------- output


def _class_text(entry: dict) -> str:
  return f'{entry["class"]} {entry["name"]}' if entry['name'] else f'class {entry["class"]}'


def format_table(result: dict) -> str:
  """The result as readable text: per sample, each window's top-k (if several), then the
  top-k of the mean of the windows' softmax."""
  lines = []
  for s in result['samples']:
    label = ''
    if s['label'] is not None:
      label = f', label {s["label"]}' + (f' {s["label_name"]}' if s['label_name'] else '')
    lines.append(f'{s["name"]} ({s["source"]}, {s["num_frames"]} frames{label})')
    windows = s['windows']
    if len(windows) > 1:
      lines.append('  frames        top-k (class prob)')
      for w in windows:
        span = f'{w["start"]}-{w["end"]}'
        top = ', '.join(f'{e["class"]} {e["prob"]:.3f}' for e in w['top_k'])
        lines.append(f'  {span:<12}  {top}  ({_class_text(w["top_k"][0])})')
      lines.append(f'  mean of {len(windows)} windows:')
    lines.append('  rank  class    prob  name')
    for rank, entry in enumerate(s['top_k'], start=1):
      lines.append(f'  {rank:>4}  {entry["class"]:>5}  {entry["prob"]:.4f}  {entry["name"] or ""}'
                   .rstrip())
  return '\n'.join(lines)


# --------------------------------------------------------------------------- command line


def _define_flags(argv: list):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  fv = flags.FlagValues()
  # sys_argv: config_flags finds the `--config.key=value` overrides to define in it.
  config_flags.DEFINE_config_file('config', None, 'experiment config file '
                                  '(configs/<name>.py[:arg]); --config.<key>=value overrides',
                                  flag_values=fv, lock_config=True, sys_argv=argv)
  flags.DEFINE_string('checkpoint', None, 'an Orbax checkpoint dir (or one step of it) or a '
                      'reference .pt file', flag_values=fv)
  flags.DEFINE_string('format', None, f'input format, one of {", ".join(FORMATS)} (default: '
                      'from each input\'s name)', flag_values=fv)
  flags.DEFINE_integer('start', None, 'h2o, assembly101: first frame', flag_values=fv)
  flags.DEFINE_integer('end', None, 'h2o, assembly101: last frame (inclusive)', flag_values=fv)
  flags.DEFINE_integer('window', None, 'classify windows of this many frames (default: the '
                       'evaluation view, the first config.max_frames frames)', flag_values=fv)
  flags.DEFINE_integer('stride', None, 'frames between window starts (default: --window)',
                       flag_values=fv)
  flags.DEFINE_integer('top_k', 5, 'classes to report per window and sample', flag_values=fv)
  flags.DEFINE_integer('batch_size', None, 'windows per forward pass (default: the config\'s '
                       'test_batch_size)', flag_values=fv)
  flags.DEFINE_string('adapter', None, 'map another pose layout into the config\'s: '
                      f'{", ".join(sorted(adapters.ADAPTERS))}', flag_values=fv)
  flags.DEFINE_float('scale', 1.0, 'multiply coordinates by this (after --adapter)',
                     flag_values=fv)
  flags.DEFINE_bool('flip_y', False, 'negate y (after --scale): image keypoints\' y grows '
                    'downward, the datasets\' points up', flag_values=fv)
  flags.DEFINE_string('output_json', None, 'also write the result (with every window\'s '
                      'logits) here', flag_values=fv)
  flags.DEFINE_bool('help', False, 'show this help', flag_values=fv, short_name='h')
  return fv


def _usage(fv) -> str:
  return (f'{__doc__}\nusage: python -m istanet_jax.predict --config CONFIG --checkpoint CKPT '
          f'[flags] INPUT [INPUT ...]\n\n{fv.get_help()}\n')


def _run(fv, inputs: list) -> int:
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  from istanet_jax import export, labels  # pylint: disable=g-import-not-at-top

  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs each file it reads at INFO.
  if fv.config is None or not fv.checkpoint:
    raise ValueError('--config and --checkpoint are required (see --help)')
  if not inputs:
    raise ValueError('no input files given (see --help)')
  config = fv.config
  config.get('dataset')  # a config that failed to load raises its error on first use
  adapter = (adapters.get_adapter(fv.adapter, adapters.layout_of(config.dataset))
             if fv.adapter else None)
  clips = []
  for path in inputs:
    clips += read_input(path, fv.format, start=fv.start, end=fv.end,
                        capped=fv.window is None, config=config)
  try:
    names = labels.class_names(config)
  except ValueError as e:
    names = None
    print(f'note: {e}; classes are shown by number', file=sys.stderr)
  variables = export.load_variables(config, fv.checkpoint)
  notes = []
  result = predict(config, variables, clips, window=fv.window, stride=fv.stride,
                   batch_size=fv.batch_size, top_k=fv.top_k, adapter=adapter, scale=fv.scale,
                   flip_y=fv.flip_y, names=names, notes=notes)
  for note in notes:
    print(f'note: {note}', file=sys.stderr)
  result.update(checkpoint=fv.checkpoint, adapter=fv.adapter)
  print(format_table(result), flush=True)
  if fv.output_json:
    with open(fv.output_json, 'w') as f:
      json.dump(result, f)
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line; `argv` without the program name. Returns the exit code."""
  host.configure()
  argv = list(sys.argv[1:] if argv is None else argv)
  if (argv and argv[0] in ('validate', 'fuse')) or any(a.startswith('--submission')
                                                       for a in argv):
    from istanet_jax import submissions  # pylint: disable=g-import-not-at-top
    return submissions.main(argv)
  from absl import flags  # pylint: disable=g-import-not-at-top
  full = ['istanet_jax.predict'] + argv
  try:
    fv = _define_flags(full)
    try:
      inputs = fv(full)[1:]
    except AttributeError as e:  # config_flags' answer to an override of a key that is not there
      raise ValueError(host.config_override_error(e)) from None
    if fv.help:
      print(_usage(fv))
      return 0
    return _run(fv, inputs)
  except (OSError, ValueError, KeyError, flags.Error) as e:
    # One line: a checkpoint mismatch lists its keys on further lines, readable joined.
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    if any(l.startswith('Traceback (most recent call last)') for l in lines):
      lines = [lines[0], lines[-1]]  # a config file that raised: where, and the exception
    message = '; '.join(lines)
    if isinstance(e, OSError) and getattr(e, 'filename', None) and e.filename not in message:
      message = f'{e.filename}: {message}'
    print(f'error: {message or type(e).__name__}', file=sys.stderr, flush=True)
    return 2


if __name__ == '__main__':
  sys.exit(main())
