r"""Evaluation protocols of the paper, one command each: SBU folds, seeds, stream fusion.

  python -m istanet_jax.protocols folds --config configs/sbu.py:clean --workdir runs/sbu_folds \
      --config.data_dir=DATA
  python -m istanet_jax.protocols seeds --config configs/ntu26.py:xsub --workdir runs/ntu26_seeds \
      --config.data_dir=DATA --seeds 3
  python -m istanet_jax.protocols fuse --scores runs/j/best_scores.npy runs/b/best_scores.npy \
      --preset 1:1 --workdir runs/fused

This module owns the protocols on top of `train.train_and_evaluate` and the saved scores:

* `folds`: SBU-Kinect-Interaction's five-fold cross-validation (test on fold k, train on the
  other four: `data_pipelines.builders.sbu_fold_split` / `sbu_train_split`, the reference's
  fold lists), one run per fold in `workdir/fold<k>`; per-fold and mean ± std top-1.
* `seeds`: the same run with several seeds in `workdir/seed<s>`; mean ± std of the best and
  of the last top-1, next to the paper's figure for the benchmark.
* `fuse`: a weighted sum of score files of several streams (joint, bone, joint motion, bone
  motion: `configs/ntu26.py:xsub,stream=bone` ...), joined by sample name, never by position.

Runs resume (rerunning a protocol continues its runs where they stopped; a finished run is
only read), one after another in one process. Several device groups: start one process per
group on its devices with a subset of the runs (`--folds 0,1`, `--first_seed`), then the full
command gathers them (threads are not an option: see `run_all`). Each protocol writes `<protocol>.json`,
`<protocol>.md` (per-run table, per-class accuracy) and `confusion.png` into its workdir, with
the pooled scores (`pooled_scores.*` / `fused_scores.*`, the `best_scores` format).

Evaluation options of the config apply to every run (`--config.eval_entity_permutation=True`,
`--config.eval_num_clips=5`; `eval/swap_consistency` is reported by default): see
`steps.make_eval_step`. Mean ± std: std is the sample standard deviation (ddof=1; 0 for one
run). Accuracies are fractions in the JSON and percentages in the Markdown.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from typing import NamedTuple, Optional, Sequence

import numpy as np

from istanet_jax import host

# The paper's top-1 (%) per benchmark, keyed by (dataset, label_key).
PAPER_TOP1 = {
    ('ntu_mutual26/xsub', 'label'): (90.6, 'NTU Mutual 26 x-sub'),
    ('ntu_mutual26/xset', 'label'): (91.7, 'NTU Mutual 26 x-set'),
    ('sbu_kinect_interaction/clean', 'label'): (98.5, 'SBU-Kinect-Interaction, mean of 5 folds'),
    ('sbu_kinect_interaction/noisy', 'label'): (98.5, 'SBU-Kinect-Interaction, mean of 5 folds'),
    ('h2o', 'label'): (89.09, 'H2O test split (CodaLab server); we evaluate on validation'),
    ('assembly101', 'label'): (28.07, 'Assembly101 action'),
    ('assembly101', 'verb'): (62.66, 'Assembly101 verb'),
    ('assembly101', 'noun'): (31.69, 'Assembly101 object'),
}
PAPER_NOTE = ('The paper\'s figure comes from the real dataset after the full schedule: accuracy '
              'on synthetic data, on a reduced model or after fewer epochs says nothing about it.')

# Fusion weights by name: joint + bone, and joint + bone + joint motion + bone motion.
PRESETS = {'1:1': (1.0, 1.0), '2:2:1:1': (2.0, 2.0, 1.0, 1.0)}
STD_DDOF = 1


# --------------------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> dict:
  """{'mean', 'std', 'values'}; std with ddof=1 (0.0 for a single value)."""
  v = np.asarray(values, np.float64)
  if not v.size:
    raise ValueError('no values to average')
  std = float(v.std(ddof=STD_DDOF)) if v.size > 1 else 0.0
  return {'mean': float(v.mean()), 'std': std, 'values': [float(x) for x in v]}


def paper_figure(config) -> Optional[dict]:
  """{'top1_percent', 'benchmark'} of the paper for `config`'s dataset and label, or None."""
  hit = PAPER_TOP1.get((config.dataset, config.get('label_key', 'label')))
  return None if hit is None else {'top1_percent': hit[0], 'benchmark': hit[1]}


def class_accuracy(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(per-class top-1 (K,), NaN for classes without samples; samples per class (K,)).

  Unlabelled samples (label -1) are left out.
  """
  k = scores.shape[1]
  keep = labels >= 0
  count = np.bincount(labels[keep], minlength=k)[:k]
  correct = np.bincount(labels[keep], weights=scores[keep].argmax(1) == labels[keep], minlength=k)[:k]
  return np.where(count > 0, correct / np.maximum(count, 1), np.nan), count


def topk(scores: np.ndarray, labels: np.ndarray, k: int) -> Optional[float]:
  """Top-k accuracy over the labelled samples (None if there are none)."""
  keep = labels >= 0
  if not keep.any():
    return None
  best = np.argsort(-scores[keep], axis=1, kind='stable')[:, :k]
  return float(np.mean(np.any(best == labels[keep, None], axis=1)))


# --------------------------------------------------------------------------- runs


def fold_configs(config) -> list:
  """The five SBU cross-validation configs: fold k tests on `fold<k>`, trains on the rest."""
  from data_pipelines import builders, sbu  # pylint: disable=g-import-not-at-top
  if not str(config.dataset).startswith('sbu_kinect_interaction/'):
    raise ValueError(f'folds is the SBU-Kinect-Interaction protocol; config.dataset is '
                     f'{config.dataset!r}')
  configs = []
  for k in range(sbu.NUM_FOLDS):
    c = _copy(config)
    c.train_split, c.eval_split = builders.sbu_train_split(k), builders.sbu_fold_split(k)
    configs.append(c)
  return configs


def fold_partitions() -> list:
  """[{'fold', 'test_pairs', 'train_pairs'}] of the reference's five folds."""
  from data_pipelines import sbu  # pylint: disable=g-import-not-at-top
  return [{'fold': k, 'test_pairs': list(sbu.fold_pairs(k)),
           'train_pairs': [p for i in sbu.split_folds(k, 'train') for p in sbu.fold_pairs(i)]}
          for k in range(sbu.NUM_FOLDS)]


def seed_configs(config, seeds: Sequence[int]) -> list:
  if len(set(seeds)) != len(seeds):
    raise ValueError(f'seeds must differ, got {list(seeds)}')
  configs = []
  for s in seeds:
    c = _copy(config)
    c.seed = int(s)
    configs.append(c)
  return configs


def _copy(config):
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(config.to_dict())


def run_all(configs: Sequence, workdirs: Sequence[str], *, devices: Optional[list] = None,
            progress: bool = False) -> list:
  """Trains each config in its workdir (resuming; a finished run is only read), one after
  another on `devices` (default: all); returns their run records in order.

  Not in threads: Orbax's async checkpointing keeps process-global state (operation ids and
  signals), and two CheckpointManagers saving at once in one process break each other's
  saves. To use several device groups, run one process per group on a subset of the runs.
  Several hosts: every process trains, process 0 (which holds the files) gets the records.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from istanet_jax import train  # pylint: disable=g-import-not-at-top
  records = []
  for config, workdir in zip(configs, workdirs):
    summary = train.train_and_evaluate(config, workdir, progress=progress, devices=devices)
    if jax.process_index() == 0:
      records.append(run_record(workdir, summary))
  return records


def run_record(workdir: str, summary: dict) -> dict:
  """What a protocol reports of one finished run, from its summary and its workdir's files.

  `last_*` is the last evaluation in metrics.jsonl (also for a run that was already complete
  and resumed with nothing left to do), `best_*` the best evaluation's (best_scores.json).
  """
  from istanet_jax import train  # pylint: disable=g-import-not-at-top
  record = {'workdir': workdir, 'best_top1': float(summary['best_top1']),
            'best_epoch': int(summary['best_epoch'])}
  evals = [m for m in train.read_metrics(workdir) if 'eval/top1' in m]
  if not evals:
    raise ValueError(f'{workdir}/metrics.jsonl: no evaluation recorded')
  last = evals[-1]
  record.update(last_epoch=int(last['epoch']), last_top1=float(last['eval/top1']),
                num_eval=int(last['eval/count']))
  if 'eval/swap_consistency' in last:
    record['last_swap_consistency'] = float(last['eval/swap_consistency'])
  best_json = os.path.join(workdir, 'best_scores.json')
  if os.path.exists(best_json):
    with open(best_json) as f:
      metrics = json.load(f).get('metrics', {})
    if 'eval/swap_consistency' in metrics:
      record['best_swap_consistency'] = float(metrics['eval/swap_consistency'])
      record['best_swap_changed'] = 1.0 - record['best_swap_consistency']
  return record


def _stat(records: Sequence[dict], key: str) -> Optional[dict]:
  values = [r[key] for r in records if key in r]
  return mean_std(values) if len(values) == len(records) else None


def run_folds(config, workdir: str, *, folds: Optional[Sequence[int]] = None,
              devices: Optional[list] = None, progress: bool = False,
              class_names: Optional[str] = None) -> Optional[dict]:
  """SBU five-fold cross-validation in `workdir/fold<k>`; writes folds.{json,md}, confusion.png.

  The mean ± std is over the folds' best top-1 (what the reference's training reports as
  `best_acc`), the last epoch's alongside; pooled scores are every fold's best-epoch scores
  of its own test fold, so each sample counts once. `folds` runs (and reports) a subset.
  """
  from istanet_jax import train  # pylint: disable=g-import-not-at-top
  all_configs = fold_configs(config)
  folds = list(range(len(all_configs))) if folds is None else [int(k) for k in folds]
  if not folds or len(set(folds)) != len(folds) or not set(folds) <= set(range(len(all_configs))):
    raise ValueError(f'folds must be distinct folds in 0..{len(all_configs) - 1}, got {folds}')
  os.makedirs(workdir, exist_ok=True)
  resolved = train.resolve_data(all_configs[0], workdir)  # prepared once for every fold
  configs = [_with_data(all_configs[k], resolved) for k in folds]
  workdirs = [os.path.join(workdir, f'fold{k}') for k in folds]
  records = run_all(configs, workdirs, devices=devices, progress=progress)
  if not records:
    return None  # not process 0
  partitions = fold_partitions()
  for k, r, c in zip(folds, records, configs):
    r.update(fold=k, train_split=c.train_split, eval_split=c.eval_split,
             test_pairs=partitions[k]['test_pairs'])
  report = {'protocol': 'folds', 'dataset': config.dataset, 'runs': records,
            'best_top1': _stat(records, 'best_top1'), 'last_top1': _stat(records, 'last_top1'),
            'best_swap_consistency': _stat(records, 'best_swap_consistency'),
            'std_ddof': STD_DDOF, 'paper': paper_figure(config), 'paper_note': PAPER_NOTE}
  return write_report(workdir, 'folds', report, workdirs,
                      class_names=_default_names(class_names, config))


def run_seeds(config, workdir: str, seeds: Sequence[int], *, devices: Optional[list] = None,
              progress: bool = False, class_names: Optional[str] = None) -> Optional[dict]:
  """`config` once per seed in `workdir/seed<s>`; writes seeds.{json,md}, confusion.png."""
  from istanet_jax import train  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  configs = seed_configs(config, seeds)
  resolved = train.resolve_data(configs[0], workdir)
  configs = [_with_data(c, resolved) for c in configs]
  workdirs = [os.path.join(workdir, f'seed{s}') for s in seeds]
  records = run_all(configs, workdirs, devices=devices, progress=progress)
  if not records:
    return None  # not process 0
  for r, s in zip(records, seeds):
    r['seed'] = int(s)
  report = {'protocol': 'seeds', 'dataset': config.dataset,
            'label_key': config.get('label_key', 'label'), 'eval_split': config.eval_split,
            'runs': records, 'best_top1': _stat(records, 'best_top1'),
            'last_top1': _stat(records, 'last_top1'),
            'best_swap_consistency': _stat(records, 'best_swap_consistency'),
            'std_ddof': STD_DDOF, 'paper': paper_figure(config), 'paper_note': PAPER_NOTE}
  return write_report(workdir, 'seeds', report, workdirs,
                      class_names=_default_names(class_names, config))


def _with_data(config, resolved):
  """`config` reading the data `train.resolve_data` prepared once (absolute data_dir; no
  manual_dir, so the runs, maybe in threads, do not prepare it again)."""
  c = _copy(config)
  c.data_dir, c.manual_dir = resolved.get('data_dir'), None
  return c


# --------------------------------------------------------------------------- score files


class ScoreFile(NamedTuple):
  """One stream's scores: `names` (N,), `scores` (N, K) float64, `labels` (N,) or None."""
  path: str
  names: list
  scores: np.ndarray
  labels: Optional[np.ndarray]


class LabelFile(NamedTuple):
  """Sample names (N,) and labels (N,) of a label file, in its order."""
  path: str
  names: list
  labels: np.ndarray


def load_labels(path: str, split: Optional[str] = None) -> LabelFile:
  """The sample names and labels of a label file, in its order.

  Formats: our scores `.json` (`sample_names`, `labels`); a pickle of `(names, labels)` (the
  reference's / CTR-GCN's label files); a pyskl annotation pickle (`{'annotations': [{'frame_dir',
  'label'}, ...], 'split': {name: [frame_dir, ...]}}`, restricted to `split` when given, which
  is the order of pyskl's test output).
  """
  if not os.path.isfile(path):
    raise ValueError(f'{path}: no such label file')
  if path.endswith('.json'):
    data = _read_json(path)
    if not isinstance(data, dict) or 'sample_names' not in data or 'labels' not in data:
      raise ValueError(f'{path}: expected a JSON object with sample_names and labels')
    names, labels = data['sample_names'], data['labels']
  else:
    data = _read_pickle(path)
    if isinstance(data, dict) and 'annotations' in data:
      annotations = data['annotations']
      if split is not None:
        if split not in data.get('split', {}):
          raise ValueError(f'{path}: no split {split!r} (has {sorted(data.get("split", {}))})')
        wanted = set(data['split'][split])
        annotations = [a for a in annotations if a['frame_dir'] in wanted]
      try:
        names = [a['frame_dir'] for a in annotations]
        labels = [a['label'] for a in annotations]
      except (KeyError, TypeError):
        raise ValueError(f'{path}: annotations need frame_dir and label') from None
    elif isinstance(data, (tuple, list)) and len(data) == 2:
      names, labels = data
    else:
      raise ValueError(f'{path}: expected (names, labels) or a pyskl annotation dict, got '
                       f'{type(data).__name__}')
  names = [_name(n) for n in names]
  labels = np.asarray(labels)
  if labels.shape != (len(names),) or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
    raise ValueError(f'{path}: {len(names)} sample names but labels of shape {labels.shape} '
                     f'({labels.dtype})')
  _check_unique(path, names)
  return LabelFile(path, names, labels.astype(np.int64))


def load_score_file(path: str, labels: Optional[LabelFile] = None) -> ScoreFile:
  """Scores keyed by sample name, from any of:

  * `<name>.npy` with `<name>.json` beside it (`train.save_scores`: `sample_names`, `labels`);
  * a pickle of a dict sample name -> (K,) scores (the reference's `score.pkl`);
  * a pickle of a list / array of (K,) scores in the order of `labels` (pyskl's test output),
    which must then be given (`load_labels`).
  """
  if not os.path.isfile(path):
    raise ValueError(f'{path}: no such score file')
  file_labels = None
  if path.endswith('.npy'):
    json_path = os.path.splitext(path)[0] + '.json'
    if not os.path.isfile(json_path):
      raise ValueError(f'{path}: no {os.path.basename(json_path)} beside it with the sample names')
    try:
      scores = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise ValueError(f'{path}: not a .npy array ({e})') from None
    _, names, file_labels = load_labels(json_path)
  else:
    data = _read_pickle(path)
    if isinstance(data, dict) and 'annotations' in data:
      raise ValueError(f'{path}: a pyskl annotation file (labels, not scores): pass it as '
                       '--labels')
    if isinstance(data, dict):
      names = [_name(n) for n in data]
      _check_unique(path, names)
      rows = list(data.values())
    elif isinstance(data, (list, tuple, np.ndarray)):
      if labels is None:
        raise ValueError(f'{path}: a list of scores has no sample names: pass a label file '
                         '(--labels) in the order of the list')
      names = list(labels.names)
      rows = list(data)
      if len(rows) != len(names):
        raise ValueError(f'{path}: {len(rows)} score rows for the {len(names)} samples of the '
                         'label file')
    else:
      raise ValueError(f'{path}: expected a dict name -> scores or a list of scores, got '
                       f'{type(data).__name__}')
    converted = []
    for name, row in zip(names, rows):
      try:
        converted.append(np.asarray(row, np.float64).reshape(-1))
      except (TypeError, ValueError):
        raise ValueError(f'{path}: the scores of {name!r} are not numbers '
                         f'({type(row).__name__})') from None
    rows = converted
    if len({len(r) for r in rows}) > 1:
      raise ValueError(f'{path}: score rows of different lengths '
                       f'({sorted({len(r) for r in rows})})')
    scores = np.stack(rows)
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 2 or scores.shape[0] != len(names):
    raise ValueError(f'{path}: expected ({len(names)}, num_classes) scores, got {scores.shape}')
  return ScoreFile(path, list(names), scores, file_labels)


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not JSON ({e})') from None


def _read_pickle(path: str):
  try:
    with open(path, 'rb') as f:
      return pickle.load(f)
  except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as e:
    raise ValueError(f'{path}: not a readable pickle ({type(e).__name__}: {e})') from None


def _name(n) -> str:
  return n.decode() if isinstance(n, bytes) else str(n)


def _check_unique(path: str, names: Sequence[str]) -> None:
  if len(set(names)) != len(names):
    seen, dup = set(), None
    for n in names:
      if n in seen:
        dup = n
        break
      seen.add(n)
    raise ValueError(f'{path}: sample name {dup!r} appears more than once')


def check_same_samples(a: ScoreFile, b: ScoreFile) -> None:
  """Raises ValueError naming both files unless they hold the same sample names and classes."""
  only_a = sorted(set(a.names) - set(b.names))
  only_b = sorted(set(b.names) - set(a.names))
  if only_a or only_b:
    parts = []
    if only_a:
      parts.append(f'{len(only_a)} only in {a.path} (e.g. {only_a[0]!r})')
    if only_b:
      parts.append(f'{len(only_b)} only in {b.path} (e.g. {only_b[0]!r})')
    raise ValueError(f'{a.path} and {b.path}: sample names disagree: {"; ".join(parts)}')
  if a.scores.shape[1] != b.scores.shape[1]:
    raise ValueError(f'{a.path} and {b.path}: {a.scores.shape[1]} vs {b.scores.shape[1]} classes')


def fuse_scores(files: Sequence[ScoreFile], weights: Sequence[float], *,
                labels: Optional[LabelFile] = None, normalize: str = 'none') -> dict:
  """sum_i weights[i] * scores_i, rows joined by sample name.

  Order: the label file's if given, else the first file's. Labels come from the label file
  and from every file that carries them; they must agree per sample (else ValueError naming
  both sources). `normalize='softmax'` fuses per-stream probabilities instead of raw scores.
  Returns {'names', 'labels' (-1 where unknown), 'scores' (N, K), 'stream_scores': [...]}.
  """
  if not files:
    raise ValueError('no score files to fuse')
  if len(weights) != len(files):
    raise ValueError(f'{len(weights)} weights for {len(files)} score files')
  if normalize not in ('none', 'softmax'):
    raise ValueError(f"normalize must be 'none' or 'softmax', got {normalize!r}")
  reference = files[0]
  for f in files[1:]:
    check_same_samples(reference, f)
  names = reference.names
  sources = [(f.path, f.names, f.labels) for f in files if f.labels is not None]
  if labels is not None:
    check_same_samples(ScoreFile(labels.path, labels.names, reference.scores[:0], None), reference)
    names = labels.names
    sources.insert(0, tuple(labels))
  known = {}  # name -> (label, source)
  for source, src_names, src_labels in sources:
    for n, l in zip(src_names, np.asarray(src_labels).tolist()):
      if n in known and known[n][0] != l:
        raise ValueError(f'{known[n][1]} and {source}: labels disagree for sample {n!r} '
                         f'({known[n][0]} vs {l})')
      known.setdefault(n, (l, source))
  streams = []
  for f in files:
    index = {n: i for i, n in enumerate(f.names)}
    s = f.scores[[index[n] for n in names]]
    if normalize == 'softmax':
      s = np.exp(s - s.max(1, keepdims=True))
      s = s / s.sum(1, keepdims=True)
    streams.append(s)
  fused = sum(float(w) * s for w, s in zip(weights, streams))
  return {'names': names, 'labels': np.asarray([known.get(n, (-1,))[0] for n in names], np.int64),
          'scores': fused, 'stream_scores': streams}


def parse_weights(weights: Optional[Sequence[str]], preset: Optional[str], n: int) -> tuple:
  """Weights from `--weights 2 2 1 1` (or `2:2:1:1`), `--preset`, or equal weights."""
  if weights and preset:
    raise ValueError('give --weights or --preset, not both')
  if preset:
    if preset not in PRESETS:
      raise ValueError(f'unknown preset {preset!r}; known: {sorted(PRESETS)}')
    values = PRESETS[preset]
  elif weights:
    tokens = [t for w in weights for t in str(w).split(':') if t]
    try:
      values = tuple(float(t) for t in tokens)
    except ValueError:
      raise ValueError(f'weights must be numbers, got {list(weights)}') from None
  else:
    values = (1.0,) * n
  if len(values) != n:
    raise ValueError(f'{len(values)} weights for {n} score files')
  return values


def run_fuse(score_paths: Sequence[str], workdir: str, *, weights: Sequence[float],
             labels_path: Optional[str] = None, labels_split: Optional[str] = None,
             normalize: str = 'none', class_names: Optional[str] = None) -> dict:
  """Fuses score files; writes fuse.{json,md}, fused_scores.{npy,json}, confusion.png."""
  labels = load_labels(labels_path, labels_split) if labels_path else None
  files = [load_score_file(p, labels) for p in score_paths]
  fused = fuse_scores(files, weights, labels=labels, normalize=normalize)
  if not np.any(fused['labels'] >= 0):
    raise ValueError(f'{score_paths[0]}: no labels for these samples: pass a label file (--labels)')
  streams = [{'scores': p, 'weight': float(w), 'top1': topk(s, fused['labels'], 1)}
             for p, w, s in zip(score_paths, weights, fused['stream_scores'])]
  report = {'protocol': 'fuse', 'normalize': normalize, 'streams': streams,
            'num_samples': len(fused['names']), 'num_labelled': int(np.sum(fused['labels'] >= 0)),
            'top1': topk(fused['scores'], fused['labels'], 1),
            'top5': topk(fused['scores'], fused['labels'], 5)}
  os.makedirs(workdir, exist_ok=True)
  _save_scores(workdir, 'fused_scores', fused['scores'], fused['names'], fused['labels'])
  return _finish_report(workdir, 'fuse', report, 'fused_scores', class_names)


# --------------------------------------------------------------------------- reports


def _default_names(class_names, config):
  """`--class_names`, else the config's built-in names (`istanet_jax.labels`), else ids."""
  if class_names is not None:
    return class_names
  from istanet_jax import labels  # pylint: disable=g-import-not-at-top
  try:
    return labels.class_names(config)
  except (KeyError, ValueError):  # a dataset without a label set, or a count that differs
    return None


def write_report(workdir: str, name: str, report: dict, run_dirs: Sequence[str], *,
                 class_names=None) -> dict:
  """Pools the runs' best scores, adds per-class accuracy, writes <name>.json / .md / PNG.
  `class_names`: a file (one name a line), a list, or None (class ids)."""
  scores, names, labels = [], [], []
  for d in run_dirs:
    path = os.path.join(d, 'best_scores.npy')
    if not os.path.exists(path):
      continue
    s = np.load(path)
    with open(os.path.join(d, 'best_scores.json')) as f:
      meta = json.load(f)
    if s.ndim != 2:  # several hosts keep no scores
      continue
    scores.append(s)
    names += [f'{os.path.basename(d)}/{n}' for n in meta['sample_names']]
    labels.append(np.asarray(meta['labels'], np.int64))
  if len(scores) == len(run_dirs) and scores:
    _save_scores(workdir, 'pooled_scores', np.concatenate(scores), names, np.concatenate(labels))
    return _finish_report(workdir, name, report, 'pooled_scores', class_names)
  return _finish_report(workdir, name, report, None, class_names)


def _save_scores(workdir, stem, scores, names, labels) -> None:
  np.save(os.path.join(workdir, f'{stem}.npy'), np.asarray(scores, np.float32))
  with open(os.path.join(workdir, f'{stem}.json'), 'w') as f:
    json.dump({'sample_names': list(names), 'labels': np.asarray(labels).tolist()}, f)


def _finish_report(workdir, name, report, scores_stem, class_names) -> dict:
  from istanet_jax import viz  # pylint: disable=g-import-not-at-top
  if scores_stem is not None:
    scores = np.load(os.path.join(workdir, f'{scores_stem}.npy'))
    with open(os.path.join(workdir, f'{scores_stem}.json')) as f:
      labels = np.asarray(json.load(f)['labels'], np.int64)
    per_class, count = class_accuracy(scores, labels)
    names = viz.read_class_names(class_names, scores.shape[1])
    report['per_class'] = [{'class': n, 'top1': None if np.isnan(a) else float(a),
                            'count': int(c)} for n, a, c in zip(names, per_class, count)]
    report['scores'] = os.path.join(workdir, f'{scores_stem}.npy')
    if np.any(labels >= 0):
      viz.plot_confusion(report['scores'], os.path.join(workdir, 'confusion.png'),
                         class_names=class_names)
      report['confusion_png'] = os.path.join(workdir, 'confusion.png')
  with open(os.path.join(workdir, f'{name}.json'), 'w') as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(workdir, f'{name}.md'), 'w') as f:
    f.write(markdown(report))
  return report


def _pct(v) -> str:
  return '' if v is None else f'{100 * v:.2f}'


def _pm(stat) -> str:
  return '' if stat is None else f'{100 * stat["mean"]:.2f} ± {100 * stat["std"]:.2f}'


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '| ' + ' | '.join('---' for _ in header) + ' |']
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


def markdown(report: dict) -> str:
  """The report as Markdown tables (accuracies in %)."""
  protocol = report['protocol']
  out = [f'# {protocol}\n\n']
  if protocol in ('folds', 'seeds'):
    key = 'fold' if protocol == 'folds' else 'seed'
    rows = [[r[key], _pct(r['best_top1']), r['best_epoch'], _pct(r['last_top1']), r['last_epoch'],
             _pct(r.get('best_swap_consistency')), _pct(r.get('best_swap_changed')),
             r['num_eval']] for r in report['runs']]
    rows.append([f'mean ± std (ddof={report["std_ddof"]})', _pm(report['best_top1']), '',
                 _pm(report['last_top1']), '', _pm(report['best_swap_consistency']), '', ''])
    out.append(_table([key, 'best top-1 (%)', 'best epoch', 'last top-1 (%)', 'last epoch',
                       'swap consistency (%)', 'top-1 changed by swap (%)', 'eval samples'],
                      rows))
    if protocol == 'folds':
      out.append('\n' + _table(['fold', 'test pairs', 'train split'],
                               [[r['fold'], ' '.join(r['test_pairs']), r['train_split']]
                                for r in report['runs']]))
    paper = report.get('paper')
    out.append(f'\nPaper: {paper["top1_percent"]}% ({paper["benchmark"]}). '
               if paper else '\nPaper: no published figure for this benchmark. ')
    out.append(report['paper_note'] + '\n')
  else:
    rows = [[s['scores'], f'{s["weight"]:g}', _pct(s['top1'])] for s in report['streams']]
    rows.append(['fused' + (' (softmax)' if report['normalize'] == 'softmax' else ''), '',
                 _pct(report['top1'])])
    out.append(_table(['scores', 'weight', 'top-1 (%)'], rows))
    out.append(f'\nFused top-5: {_pct(report["top5"])}%, {report["num_labelled"]} labelled of '
               f'{report["num_samples"]} samples.\n')
  out.append('\nSwap consistency (at the best epoch): fraction of eval samples whose top-1 is '
             'unchanged when the interchangeable entities are swapped (100% = independent of '
             'entity order); top-1 changed by swap = 100% minus it.\n'
             if protocol != 'fuse' else '')
  if 'per_class' in report:
    out.append('\n## Per-class top-1\n\n' + _table(
        ['class', 'top-1 (%)', 'samples'],
        [[c['class'], _pct(c['top1']), c['count']] for c in report['per_class']]))
  if 'confusion_png' in report:
    out.append(f'\n![confusion matrix]({os.path.basename(report["confusion_png"])})\n')
  return ''.join(out)


# --------------------------------------------------------------------------- main

USAGE = """usage: python -m istanet_jax.protocols {folds,seeds,fuse} [options]

  folds  --config configs/sbu.py:clean --workdir W [--config.<key>=v] [--folds 0,1,2,3,4]
         SBU five-fold cross-validation: per-fold and mean ± std top-1.
  seeds  --config CONFIG --workdir W --seeds 3 [--first_seed S] [--config.<key>=v]
         one run per seed: mean ± std of the best and last top-1 next to the paper's figure.
  fuse   --scores A.npy B.npy ... [--weights 2 2 1 1 | --preset 2:2:1:1] --workdir W
         weighted sum of score files joined by sample name.

`python -m istanet_jax.protocols <command> --help` lists a command's options."""


def _train_flags(command: str):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'experiment config (configs/<name>.py[:arg])',
                                  flag_values=fv, lock_config=True)
  flags.DEFINE_string('workdir', None, 'where the runs and the report go', flag_values=fv)
  flags.DEFINE_string('compilation_cache_dir', None,
                      'persistent XLA cache shared by the runs (default <workdir>/'
                      'compilation_cache; empty: none)', flag_values=fv)
  flags.DEFINE_string('class_names', None, 'text file, one class name a line', flag_values=fv)
  if command == 'folds':
    flags.DEFINE_list('folds', ['0', '1', '2', '3', '4'], 'folds to run and report (one '
                      'process per device group: give each a subset, then run all to gather)',
                      flag_values=fv)
  if command == 'seeds':
    flags.DEFINE_integer('seeds', 3, 'number of seeds', flag_values=fv)
    flags.DEFINE_integer('first_seed', None, 'first seed (default: the config\'s)', flag_values=fv)
  return fv


def _train_main(command: str, argv: Sequence[str]) -> int:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  fv = _train_flags(command)
  if any(a in ('-h', '--help', '-help', '--helpfull') for a in argv[1:]):
    print(f'usage: python -m istanet_jax.protocols {command} --config CONFIG --workdir W '
          f'[--config.<key>=value ...] [options]\n{fv.get_help()}')
    return 0
  try:
    rest = fv(list(argv))
  except flags.Error as e:
    raise SystemExit(f'error: {e}') from None
  except AttributeError as e:  # config_flags' answer to an override of a key that is not there
    raise SystemExit(f'error: {host.config_override_error(e)}') from None
  if len(rest) > 1:
    raise SystemExit(f'error: unexpected arguments {rest[1:]}')
  if fv['config'].value is None or not fv['workdir'].value:
    raise SystemExit(f'error: {command} needs --config and --workdir')
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every file it writes at INFO.
  config, workdir = fv['config'].value, fv['workdir'].value
  cache = fv['compilation_cache_dir'].value
  if cache is None:
    cache = os.path.join(workdir, 'compilation_cache')
  if cache:
    host.enable_compilation_cache(cache)
  kwargs = dict(progress=True, class_names=fv['class_names'].value)
  if command == 'folds':
    try:
      folds = [int(k) for k in fv['folds'].value]
    except ValueError:
      raise SystemExit(f'error: --folds must be fold numbers, got {fv["folds"].value}') from None
    report = run_folds(config, workdir, folds=folds, **kwargs)
  else:
    if fv['seeds'].value < 1:
      raise SystemExit(f'error: --seeds must be at least 1, got {fv["seeds"].value}')
    first = fv['first_seed'].value
    first = config.seed if first is None else first
    report = run_seeds(config, workdir, [first + i for i in range(fv['seeds'].value)], **kwargs)
  if report is None:
    return 0
  key = 'fold' if command == 'folds' else 'seed'
  lines = [f'{key} {r[key]}: best top-1 {r["best_top1"]:.4f} (epoch {r["best_epoch"]}), '
           f'last {r["last_top1"]:.4f}' for r in report['runs']]
  b, l = report['best_top1'], report['last_top1']
  lines.append(f'best top-1 {100 * b["mean"]:.2f} ± {100 * b["std"]:.2f} %, last '
               f'{100 * l["mean"]:.2f} ± {100 * l["std"]:.2f} % over {len(report["runs"])} runs')
  paper = report['paper']
  lines.append((f'paper: {paper["top1_percent"]} % ({paper["benchmark"]}). ' if paper else
                'paper: no published figure for this benchmark. ') + PAPER_NOTE)
  lines.append(f'report: {os.path.join(workdir, command + ".md")}')
  print('\n'.join(lines), flush=True)
  return 0


def _fuse_parser():
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(prog='python -m istanet_jax.protocols fuse',
                              description='Weighted sum of score files joined by sample name.')
  p.add_argument('--scores', nargs='+', required=True,
                 help='score files: <name>.npy (+ <name>.json), or pickles (dict name -> '
                      'scores; list of scores in the order of --labels)')
  p.add_argument('--weights', nargs='+', help='one weight per file: 2 2 1 1 or 2:2:1:1')
  p.add_argument('--preset', choices=sorted(PRESETS), help='1:1 (joint, bone) or 2:2:1:1 '
                 '(joint, bone, joint motion, bone motion)')
  p.add_argument('--labels', help='label file: scores .json, (names, labels) pickle or pyskl '
                 'annotation pickle')
  p.add_argument('--labels_split', help='split of a pyskl annotation pickle (e.g. xsub_val)')
  p.add_argument('--normalize', choices=('none', 'softmax'), default='none',
                 help='fuse raw scores (the reference\'s) or per-stream softmax probabilities')
  p.add_argument('--class_names', help='text file, one class name a line')
  p.add_argument('--workdir', required=True, help='where fuse.json, fuse.md and the PNG go')
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  host.configure()
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', '-help'):
    print(USAGE)
    return 0 if len(argv) >= 2 else 2
  command, rest = argv[1], argv[2:]
  try:
    if command in ('folds', 'seeds'):
      return _train_main(command, [argv[0]] + rest)
    if command == 'fuse':
      args = _fuse_parser().parse_args(rest)
      weights = parse_weights(args.weights, args.preset, len(args.scores))
      report = run_fuse(args.scores, args.workdir, weights=weights, labels_path=args.labels,
                        labels_split=args.labels_split, normalize=args.normalize,
                        class_names=args.class_names)
      print(f'fused top-1 {_pct(report["top1"])} % over {report["num_labelled"]} samples '
            f'(weights {":".join(f"{w:g}" for w in weights)}); report: '
            f'{os.path.join(args.workdir, "fuse.md")}', flush=True)
      return 0
  except (OSError, ValueError) as e:
    message = '; '.join(l.strip() for l in str(e).splitlines() if l.strip())
    raise SystemExit(f'error: {message}') from None
  raise SystemExit(f'error: unknown command {command!r}\n{USAGE}')


if __name__ == '__main__':
  sys.exit(main())
