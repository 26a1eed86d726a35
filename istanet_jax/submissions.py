r"""Challenge submission files for H2O and Assembly101: writing, validating and fusing them.

  python -m istanet_jax.submissions --submission h2o --config configs/h2o.py \
      --checkpoint runs/h2o/best --data_dir DATA --out action_labels.json
  python -m istanet_jax.submissions --submission assembly101 --config configs/assembly101.py:verb \
      --checkpoint runs/asb_verb/best --data_dir DATA --out verb/preds.json
  python -m istanet_jax.submissions fuse --action action/preds.json --verb verb/preds.json \
      --noun noun/preds.json --out preds.json
  python -m istanet_jax.submissions validate preds.json --kind assembly101 --data_dir DATA

(`python -m istanet_jax.predict` forwards the same arguments here.)

Formats, as the reference's `main.py` writes them (`h2o_get_results`, `asb_get_results`):

  H2O `action_labels.json`: {"modality": "train: hand+obj, test: hand+obj", "<id>": label, ...}
      label is the predicted class + 1 (1..36). The reference keys by loader index + 1, which is
      the `id` column of `label_split/action_test.txt` because its test tensor follows that file's
      rows and the ids count from 1; we key by the prepared split's `id` feature, which stays
      right whatever order the prepared examples are in (TFDS stores them in hash order).
  Assembly101 `preds.json`: {"task": "recognition", "results": {"<id>": {"<type>": [p, ...]}}}
      softmax scores of one test segment, type "action" (1380), "verb" (24) or "object" (90,
      our config task `noun`). The reference keys by loader index, which equals the csv `id` of
      `test_challenge.csv` (its preprocessing asserts ids 0..N-1 in row order and sorts the test
      array by id); we key by the `id` feature. Segments without poses (`pose_missing`) get a
      prediction from the reference's stand-in sequence, as in the reference.
  Fused `preds.json`: entries {"action": [...], "verb": [...], "object": [...]}, in the action
      file's order (`tools/asb_fuse_json_files.py`).

Differences from the reference:
  * Its fuse script reads `verb["results"][i]["action"]` and `noun["results"][i]["action"]`, but
    `asb_get_results` keys verb and object files by "verb" and "object", so the script raises
    KeyError on the files the reference itself writes. We take the entry's matching key ("verb",
    "object"), or its only key whatever it is (so files edited to suit the reference script fuse
    too), and check the score count (24, 90).
  * Files are written and fused as streams: the action file is ~700 MB for the real test set.
    Our writer produces the same text `json.dump` would (same separators, floats as Python's
    repr of the float32 softmax values, as torch's `tolist()` gives), one entry at a time; the
    fuser reads with `iter_results`, an incremental reader of exactly this structure, keeping only
    the small verb/object score vectors in memory. Outputs go to a temporary file renamed at the
    end, so a failed run leaves no partial submission.
  * Segment ids that differ between the fused files are an error naming both files and an id
    (the reference raises KeyError, or silently drops verb/noun-only ids).

`validate` checks a file's format (keys, types, score-vector lengths, labels in range,
probabilities non-negative and summing to 1) and its ids against the split (missing and extra
ids, counted, first few shown); Assembly101 test segments without poses are reported as a note.
The split's ids come from the prepared data (`--data_dir`) or from the raw tree
(`--manual_dir`: H2O's split file; Assembly101's csv, reading every pose json to find the
segments without poses, so slower).

Exit status: 0 success, 1 a file failed validation (the report says why), 2 bad input (one line).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from istanet_jax import files, host

KINDS = ('h2o', 'assembly101')
H2O_MODALITY = 'train: hand+obj, test: hand+obj'
H2O_NUM_CLASSES = 36
ASB_TASK = 'recognition'
# Config task -> the score key the reference writes (its noun model predicts "object").
ASB_TYPES = {'action': 'action', 'verb': 'verb', 'noun': 'object'}
ASB_NUM_CLASSES = {'action': 1380, 'verb': 24, 'noun': 90}
# configs/assembly101.py LABEL_KEYS, inverted: the feature a config trains on -> its task.
ASB_TASK_OF_LABEL_KEY = {'label': 'action', 'verb': 'verb', 'noun': 'noun'}
_TYPE_CLASSES = {ASB_TYPES[t]: n for t, n in ASB_NUM_CLASSES.items()}
FUSED_TYPES = ('action', 'verb', 'object')
# A softmax over 1380 float32 scores sums to 1 within ~1e-5; other producers may round.
PROB_SUM_ATOL = 1e-3
_SHOW = 5  # ids / examples listed per problem


class SubmissionError(ValueError):
  """A submission file that cannot be read or fused: the message names the file and why."""


# --------------------------------------------------------------------------- streaming JSON


def _results_prefix(task: str) -> str:
  return '{"task": ' + json.dumps(task) + ', "results": {'


class ResultsWriter:
  """Writes {"task": task, "results": {key: entry, ...}} one entry at a time.

  The text equals `json.dumps` of the whole dict (default separators, floats by repr), so
  a reader cannot tell it from the reference's `json.dump`. Used as a context manager: the
  file appears under `path` only when the block ends without an exception.
  """

  def __init__(self, path: str | os.PathLike, task: str = ASB_TASK):
    self.path = os.fspath(path)
    self._tmp = files.temp_beside(self.path, '.json')
    self._f = open(self._tmp, 'w', encoding='utf-8', buffering=1 << 20)
    self._f.write(_results_prefix(task))
    self._keys: set[str] = set()

  def __len__(self) -> int:
    return len(self._keys)

  def add(self, key: str, entry: dict) -> None:
    if key in self._keys:
      raise SubmissionError(f'{self.path}: segment id {key} written twice')
    self._f.write((', ' if self._keys else '') + json.dumps(key) + ': ' + json.dumps(entry))
    self._keys.add(key)

  def close(self) -> None:
    self._f.write('}}')
    self._f.close()
    os.replace(self._tmp, self.path)

  def abort(self) -> None:
    self._f.close()
    if os.path.exists(self._tmp):
      os.remove(self._tmp)

  def __enter__(self) -> 'ResultsWriter':
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()


class _Stream:
  """Characters of a JSON text read in chunks; values are decoded with `json`'s own decoder."""

  _DECODER = json.JSONDecoder()

  def __init__(self, f, path: str, chunk: int):
    self._f, self.path, self._chunk = f, path, chunk
    self._buf, self._pos, self._consumed, self._eof = '', 0, 0, False

  def error(self, reason: str, pos: Optional[int] = None) -> SubmissionError:
    at = self._consumed + (self._pos if pos is None else pos)
    return SubmissionError(f'{self.path}: malformed JSON at character {at}: {reason}')

  def _more(self) -> bool:
    """Appends a chunk (at least as large as what is buffered, so re-decoding a long value
    stays linear overall); False at the end of the file."""
    if self._eof:
      return False
    data = self._f.read(max(self._chunk, len(self._buf) - self._pos))
    if not data:
      self._eof = True
      return False
    self._consumed += self._pos
    self._buf = self._buf[self._pos:] + data
    self._pos = 0
    return True

  def peek(self) -> str:
    """The next non-blank character ('' at the end of the file), not consumed."""
    while True:
      while self._pos < len(self._buf) and self._buf[self._pos] in ' \t\n\r':
        self._pos += 1
      if self._pos < len(self._buf):
        return self._buf[self._pos]
      if not self._more():
        return ''

  def expect(self, char: str, what: str) -> None:
    found = self.peek()
    if found != char:
      raise self.error(f'expected {what}, found {found!r}' if found else
                       f'expected {what}, found the end of the file')
    self._pos += 1

  def key(self, what: str) -> str:
    found = self.peek()
    if found != '"':
      raise self.error(f'expected {what}, found {found!r}' if found else
                       f'expected {what}, found the end of the file')
    return self.value()

  def value(self) -> Any:
    if not self.peek():
      raise self.error('expected a value, found the end of the file')
    while True:
      try:
        value, end = self._DECODER.raw_decode(self._buf, self._pos)
      except json.JSONDecodeError as e:
        if self._more():
          continue  # the value may run past the buffer
        raise self.error(e.msg, e.pos) from None
      # A number that ends the buffer may go on in the next chunk.
      if end == len(self._buf) and self._more():
        continue
      self._pos = end
      return value


def iter_results(path: str | os.PathLike, header: Optional[dict] = None, *,
                 chunk: int = 1 << 20) -> Iterator[tuple[str, Any]]:
  """Yields (key, entry) of an Assembly101 file's "results" object, reading it incrementally.

  The file must be a JSON object holding "results", itself an object; the other top-level
  fields go into `header` (those after "results" only once the generator is exhausted).
  Duplicate keys are yielded as they come (json.load would keep the last). Raises
  SubmissionError naming the file and character offset when it is not such a file.
  """
  path = os.fspath(path)
  header = {} if header is None else header
  try:
    f = open(path, encoding='utf-8')
  except FileNotFoundError:
    raise SubmissionError(f'{path}: no such file') from None
  with f:
    s = _Stream(f, path, chunk)
    try:
      s.expect('{', 'a JSON object')
      found = False
      if s.peek() != '}':
        while True:
          key = s.key('a field name')
          s.expect(':', "':'")
          if key == 'results':
            if found:
              raise s.error('"results" appears twice')
            found = True
            s.expect('{', '"results" to be an object')
            if s.peek() != '}':
              while True:
                seg = s.key('a segment id string')
                s.expect(':', "':'")
                yield seg, s.value()
                if s.peek() != ',':
                  break
                s.expect(',', "','")
            s.expect('}', "',' or '}' after a result")
          else:
            header[key] = s.value()
          if s.peek() != ',':
            break
          s.expect(',', "','")
      s.expect('}', "',' or '}' after a top-level field")
      if s.peek():
        raise s.error('extra data after the JSON object')
    except UnicodeDecodeError as e:
      raise SubmissionError(f'{path}: not a UTF-8 text file ({e.reason})') from None
    if not found:
      raise SubmissionError(f'{path}: no "results" field (top-level fields: '
                            f'{sorted(header) or "none"})')


# --------------------------------------------------------------------------- the test split


@dataclasses.dataclass(frozen=True)
class SplitIds:
  """A split's segment ids in its index order.

  ids: int64 (N,), the split file's / csv's id of example i.
  pose_missing: bool (N,) (Assembly101: the reference's stand-in sequence), or None.
  source: where they were read, for messages.
  """

  ids: np.ndarray
  pose_missing: Optional[np.ndarray]
  source: str

  def __post_init__(self):
    values, counts = np.unique(self.ids, return_counts=True)
    if (counts > 1).any():
      raise SubmissionError(f'{self.source}: id {int(values[counts > 1][0])} occurs '
                            f'{int(counts[counts > 1][0])} times')


def prepared_split_ids(dataset: str, data_dir: Optional[str], split: str = 'test') -> SplitIds:
  """The `id` (and `pose_missing`) features of a prepared TFDS split, in index order."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from data_pipelines import builders  # pylint: disable=g-import-not-at-top,unused-import
  from istanet_jax import input_pipeline  # pylint: disable=g-import-not-at-top

  builder = input_pipeline.get_builder(dataset, data_dir)
  source = f'{os.path.join(data_dir or "", dataset)} ({split})'
  if not builder.info.splits:
    where = data_dir or "TFDS's default data_dir"
    raise SubmissionError(f'{source}: {dataset} is not prepared in {where} (python -m '
                          'data_pipelines.prepare, or --manual_dir)')
  if split not in builder.info.splits:
    raise SubmissionError(f'{source}: no such split; prepared: {sorted(builder.info.splits)}')
  features = builder.info.features
  if 'id' not in features:
    raise SubmissionError(f'{source}: the prepared data has no `id` feature')
  keys = ['id'] + (['pose_missing'] if 'pose_missing' in features else [])
  fmt = getattr(builder.info.file_format, 'value', builder.info.file_format)
  skip = {'skeleton': tfds.decode.SkipDecoding()}  # the arrays are not needed here
  if fmt == 'array_record':
    data = builder.as_data_source(split, decoders=skip)
    examples = (data[i] for i in range(len(data)))
  else:  # TFRecord, read in index order as input_pipeline's tf back end reads it
    ds = builder.as_dataset(split, shuffle_files=False, decoders=skip, read_config=tfds.ReadConfig(
        interleave_cycle_length=1, shuffle_seed=None))
    examples = tfds.as_numpy(ds)
  columns = {k: [] for k in keys}
  for ex in examples:
    for k in keys:
      columns[k].append(ex[k])
  return SplitIds(np.asarray(columns['id'], np.int64),
                  np.asarray(columns['pose_missing'], bool) if 'pose_missing' in columns else None,
                  source)


def raw_split_ids(kind: str, manual_dir: str, split: str = 'test') -> SplitIds:
  """The ids of a split read from the raw download, in the reference's order."""
  from data_pipelines import assembly101, h2o  # pylint: disable=g-import-not-at-top

  _check_kind(kind)
  if kind == 'h2o':
    path = os.path.join(manual_dir, 'label_split', h2o.SPLIT_FILES[split])
    rows = h2o.read_split_file(path, with_label=False)
    return SplitIds(np.asarray([r['id'] for r in rows], np.int64), None, path)
  ids, missing = [], []
  # Which test segments have no poses is only known by reading their pose files.
  for sample in assembly101.iter_assembly101_samples(manual_dir, split, max_frames=None,
                                                     pad=False, missing='ignore'):
    ids.append(sample.id)
    missing.append(sample.pose_missing)
  return SplitIds(np.asarray(ids, np.int64), np.asarray(missing, bool),
                  os.path.join(manual_dir, assembly101.ANNOTATION_DIR,
                               assembly101.CSV_NAMES[split]))


# --------------------------------------------------------------------------- predictions


def _check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise SubmissionError(f'kind must be one of {", ".join(KINDS)}, got {kind!r}')


def config_task(config) -> str:
  """An Assembly101 config's task ('action', 'verb', 'noun'), from its label_key and classes."""
  key = config.get('label_key', 'label')
  if key not in ASB_TASK_OF_LABEL_KEY:
    raise SubmissionError(f'config label_key {key!r} is not an Assembly101 task '
                          f'({", ".join(ASB_TASK_OF_LABEL_KEY)})')
  task = ASB_TASK_OF_LABEL_KEY[key]
  if config.model.num_classes != ASB_NUM_CLASSES[task]:
    raise SubmissionError(f'config label_key {key!r} ({task}) needs {ASB_NUM_CLASSES[task]} '
                          f'classes, the model has {config.model.num_classes}')
  return task


def make_predict_step(config, model):
  """(variables, skeleton (B, T, V, M, 3)) -> (softmax (B, K) float32, argmax (B,) int32):
  the config's test transform, then the model in eval mode."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from istanet_jax import steps  # pylint: disable=g-import-not-at-top

  transform = steps.eval_transform(config)

  def predict_step(variables, skeleton):
    logits = model.apply(variables, transform(skeleton), train=False).astype(jnp.float32)
    return jax.nn.softmax(logits, axis=-1), jnp.argmax(logits, axis=-1).astype(jnp.int32)

  return predict_step


def iter_predictions(config, variables: dict, *, split: str = 'test',
                     devices: Optional[list] = None) -> Iterator[tuple[np.ndarray, ...]]:
  """Runs the model over a prepared split, batch by batch, as the eval loop does.

  Batches come from `input_pipeline.make_iterator(train=False)` (index order, padded with
  mask=False examples to whole batches of `config.test_batch_size`), are sharded over a
  ('data',) mesh of `devices` and go through one jitted step (one compilation).

  Yields, per batch, for its real examples: index int64 (n,) (the example's index in the
  split), probs float32 (n, K) and pred int32 (n,) (0-based argmax of the logits).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from istanet_jax import input_pipeline, steps, train  # pylint: disable=g-import-not-at-top

  if jax.process_count() > 1:
    raise SubmissionError('write submissions from one process (one host, any number of devices)')
  mesh = train.make_mesh(devices)
  if config.test_batch_size % mesh.size:
    raise SubmissionError(f'test_batch_size {config.test_batch_size} must be a multiple of the '
                          f'{mesh.size} devices')
  replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  variables = jax.device_put(variables, replicated)
  step = jax.jit(make_predict_step(config, steps.model_from_config(config)),
                 in_shardings=(replicated, data), out_shardings=(data, data))
  it = input_pipeline.make_iterator(
      config.dataset, split, batch_size=config.test_batch_size, train=False, seed=0,
      data_dir=config.get('data_dir'), backend=config.get('data_backend', 'auto'),
      max_frames=config.max_frames, label_key=config.get('label_key', 'label'))
  for batch in it:
    probs, pred = step(variables, jax.device_put(batch['skeleton'], data))
    keep = np.asarray(batch['mask'])
    yield np.asarray(batch['index'])[keep], np.asarray(probs)[keep], np.asarray(pred)[keep]


def _ids_of(index: np.ndarray, split_ids: SplitIds) -> np.ndarray:
  if index.size and (index.min() < 0 or index.max() >= len(split_ids.ids)):
    raise SubmissionError(f'{split_ids.source}: example index {int(index.max())} beyond the '
                          f'{len(split_ids.ids)} ids (was the data prepared again meanwhile?)')
  return split_ids.ids[index]


def _check_complete(out: str, written: int, split_ids: SplitIds) -> None:
  if written != len(split_ids.ids):
    raise SubmissionError(f'{out}: wrote {written} entries for the {len(split_ids.ids)} ids of '
                          f'{split_ids.source}')


def write_h2o(config, variables: dict, out: str, split_ids: SplitIds, *, split: str = 'test',
              devices: Optional[list] = None) -> dict:
  """Writes `action_labels.json` (predicted class + 1 by split id); returns a summary."""
  labels = {}
  for index, _, pred in iter_predictions(config, variables, split=split, devices=devices):
    for seg_id, p in zip(_ids_of(index, split_ids).tolist(), pred.tolist()):
      labels[seg_id] = p + 1
  _check_complete(out, len(labels), split_ids)
  res = {'modality': H2O_MODALITY, **{str(k): labels[k] for k in sorted(labels)}}
  with files.atomic_path(out, '.json') as tmp, open(tmp, 'w', encoding='utf-8') as f:
    json.dump(res, f)
  return {'entries': len(labels)}


def write_assembly101(config, variables: dict, out: str, split_ids: SplitIds, *,
                      split: str = 'test', devices: Optional[list] = None) -> dict:
  """Streams `preds.json` (softmax scores by csv id, type from the config's task); returns a
  summary with the number of entries and of segments predicted from the stand-in."""
  task = config_task(config)
  type_name = ASB_TYPES[task]
  stand_in = 0
  with ResultsWriter(out) as writer:
    for index, probs, _ in iter_predictions(config, variables, split=split, devices=devices):
      ids = _ids_of(index, split_ids)
      finite = np.isfinite(probs).all(axis=1)
      if not finite.all():
        raise SubmissionError(f'{out}: non-finite scores for segment id {int(ids[~finite][0])}')
      if split_ids.pose_missing is not None:
        stand_in += int(split_ids.pose_missing[index].sum())
      # float32 -> Python floats, the values torch's tolist() gives the reference.
      for seg_id, row in zip(ids.tolist(), probs.tolist()):
        writer.add(str(seg_id), {type_name: row})
    _check_complete(out, len(writer), split_ids)
  return {'entries': len(split_ids.ids), 'task': task, 'type': type_name, 'pose_missing': stand_in}


# --------------------------------------------------------------------------- fusing


def _scores(path: str, key: str, entry: Any, type_name: str) -> list:
  """The score list of one entry: its `type_name` key, or its only key whatever it is."""
  if not isinstance(entry, dict) or not entry:
    raise SubmissionError(f'{path}: id {key}: expected {{"{type_name}": [scores]}}, got '
                          f'{str(entry)[:60]}')
  if type_name in entry:
    scores = entry[type_name]
  elif len(entry) == 1:
    scores = next(iter(entry.values()))
  else:
    raise SubmissionError(f'{path}: id {key}: no "{type_name}" scores among {sorted(entry)}')
  n = _TYPE_CLASSES[type_name]
  if not isinstance(scores, list) or len(scores) != n:
    size = len(scores) if isinstance(scores, list) else type(scores).__name__
    raise SubmissionError(f'{path}: id {key}: expected {n} {type_name} scores, got {size}')
  return scores


def _load_small(path: str, type_name: str) -> dict[str, np.ndarray]:
  """A verb/object file's scores by id as float64 arrays (exact: JSON floats are float64)."""
  table = {}
  for key, entry in iter_results(path):
    if key in table:
      raise SubmissionError(f'{path}: segment id {key} occurs twice')
    table[key] = np.asarray(_scores(path, key, entry, type_name), np.float64)
  return table


def fuse(action: str, out: str, *, verb: Optional[str] = None,
         noun: Optional[str] = None) -> int:
  """Merges per-task files into one whose entries hold "action", "verb", "object" (those
  given), in the action file's order. Returns the number of entries.

  Raises SubmissionError naming both files and an id where their ids differ.
  """
  others = [(p, t) for p, t in ((verb, 'verb'), (noun, 'object')) if p]
  if not others:
    raise SubmissionError('fuse needs a verb or a noun file besides the action file')
  tables = [(p, t, _load_small(p, t)) for p, t in others]
  header: dict = {}
  with ResultsWriter(out) as writer:
    for key, entry in iter_results(action, header):
      fused = {'action': _scores(action, key, entry, 'action')}
      for path, type_name, table in tables:
        if key not in table:
          raise SubmissionError(f'segment id {key} is in {action} but not in {path}')
        fused[type_name] = table.pop(key).tolist()
      writer.add(key, fused)
    if header.get('task') != ASB_TASK:
      raise SubmissionError(f'{action}: "task" is {header.get("task")!r}, expected {ASB_TASK!r}')
    for path, _, table in tables:
      if table:
        raise SubmissionError(f'segment id {next(iter(table))} is in {path} but not in {action} '
                              f'({len(table)} such id(s))')
    return len(writer)


# --------------------------------------------------------------------------- validation


@dataclasses.dataclass
class Report:
  """What `validate_*` found: errors make the file unusable; notes are for information."""

  path: str
  kind: str
  entries: int = 0
  errors: list = dataclasses.field(default_factory=list)
  notes: list = dataclasses.field(default_factory=list)
  _problems: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def ok(self) -> bool:
    return not self.errors

  def problem(self, what: str, example: str) -> None:
    """One entry with problem `what`; counted, the first few kept as examples."""
    count, examples = self._problems.get(what, (0, []))
    if len(examples) < 3:
      examples.append(example)
    self._problems[what] = (count + 1, examples)

  def finish(self) -> 'Report':
    for what, (count, examples) in self._problems.items():
      self.errors.append(f'{what}: {count} entr{"y" if count == 1 else "ies"}, e.g. '
                         f'{"; ".join(examples)}')
    self._problems.clear()
    return self

  def text(self) -> str:
    head = (f'{self.path}: valid {self.kind} submission, {self.entries} entries' if self.ok else
            f'{self.path}: INVALID {self.kind} submission ({len(self.errors)} problem(s))')
    lines = [head] + [f'  error: {e}' for e in self.errors] + [f'  note: {n}' for n in self.notes]
    return '\n'.join(lines)


def _short(value: Any, limit: int = 40) -> str:
  text = repr(value)
  return text if len(text) <= limit else text[:limit - 3] + '...'


def _id_list(ids: Iterable) -> str:
  ids = sorted(ids, key=lambda k: (0, int(k), '') if _is_id(str(k)) else (1, 0, str(k)))
  shown = ', '.join(str(k) for k in ids[:_SHOW])
  return shown + (f', ... ({len(ids) - _SHOW} more)' if len(ids) > _SHOW else '')


def _is_id(key: str) -> bool:
  # What str(int) gives: no sign, no leading zeros, no blanks.
  return key.isdigit() and key.isascii() and str(int(key)) == key


def _check_ids(report: Report, keys: set, split_ids: Optional[SplitIds]) -> None:
  bad = [k for k in keys if not _is_id(k)]
  if bad:
    report.errors.append(f'{len(bad)} key(s) are not segment ids (decimal integers): '
                         f'{_id_list(repr(k) for k in bad)}')
  if split_ids is None:
    return
  expected = {str(i) for i in split_ids.ids.tolist()}
  missing, extra = expected - keys, {k for k in keys - expected if _is_id(k)}
  if missing:
    report.errors.append(f'missing ids: {len(missing)} of the {len(expected)} segments of '
                         f'{split_ids.source} have no entry: {_id_list(missing)}')
  if extra:
    report.errors.append(f'extra ids: {len(extra)} entr{"y is" if len(extra) == 1 else "ies are"}'
                         f' not in {split_ids.source}: {_id_list(extra)}')


def validate_h2o(path: str, split_ids: Optional[SplitIds] = None) -> Report:
  """Checks an `action_labels.json`: the modality field, labels 1..36 keyed by split ids."""
  report = Report(path, 'h2o')
  try:
    with open(path, encoding='utf-8') as f:
      res = json.load(f)
  except FileNotFoundError:
    report.errors.append('no such file')
    return report
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    report.errors.append(f'malformed JSON: {e}')
    return report
  if not isinstance(res, dict):
    report.errors.append(f'expected a JSON object, got {type(res).__name__}')
    return report
  if 'modality' not in res:
    report.errors.append(f'no "modality" field (the reference writes {H2O_MODALITY!r})')
  elif not isinstance(res['modality'], str):
    report.errors.append(f'"modality" must be a string, got {res["modality"]!r}')
  keys = set(res) - {'modality'}
  if {'task', 'results'} <= keys:
    report.errors.append('this looks like an Assembly101 file ("task", "results"), not H2O\'s '
                         'action_labels.json')
  for key in sorted(k for k in keys if _is_id(k)):
    label = res[key]
    if isinstance(label, bool) or not isinstance(label, int):
      report.problem('labels must be integers', f'id {key}: {_short(label)}')
    elif not 1 <= label <= H2O_NUM_CLASSES:
      report.problem(f'labels outside 1..{H2O_NUM_CLASSES} (class + 1)', f'id {key}: {label}')
  _check_ids(report, keys, split_ids)
  report.entries = len(keys)
  return report.finish()


def _check_scores(report: Report, key: str, type_name: str, scores: Any) -> None:
  n = _TYPE_CLASSES[type_name]
  if not isinstance(scores, list):
    report.problem('score vectors must be lists', f'id {key} {type_name}: {_short(scores)}')
    return
  if len(scores) != n:
    report.problem('wrong score-vector length', f'id {key} {type_name} has {len(scores)} '
                   f'scores, expected {n}')
    return
  if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores):
    report.problem('scores must be numbers', f'id {key} {type_name}')
    return
  p = np.asarray(scores, np.float64)
  if not np.isfinite(p).all():
    report.problem('non-finite scores', f'id {key} {type_name}')
  elif (p < 0).any():
    report.problem('negative scores (softmax probabilities expected)',
                   f'id {key} {type_name}: {p.min():g}')
  elif abs(p.sum() - 1.0) > PROB_SUM_ATOL:
    report.problem('scores not summing to 1 (softmax probabilities expected)',
                   f'id {key} {type_name} sums to {p.sum():.6g}')


def validate_assembly101(path: str, split_ids: Optional[SplitIds] = None, *,
                         task: Optional[str] = None) -> Report:
  """Checks a `preds.json` of one task ('action', 'verb', 'noun') or a fused one ('fused');
  `task` None takes it from the first entry."""
  report = Report(path, 'assembly101')
  if task is not None and task not in (*ASB_TYPES, 'fused'):
    raise SubmissionError(f'task must be one of {", ".join((*ASB_TYPES, "fused"))}, got {task!r}')
  types = None if task is None else (
      set(FUSED_TYPES) if task == 'fused' else {ASB_TYPES[task]})
  header: dict = {}
  keys: set = set()
  try:
    for key, entry in iter_results(path, header):
      if key in keys:
        report.problem('duplicate ids', f'id {key}')
        continue
      keys.add(key)
      if not isinstance(entry, dict):
        report.problem('entries must be objects {"<type>": [scores]}',
                       f'id {key}: {type(entry).__name__}')
        continue
      if types is None:
        types = set(entry)
        if not (types == set(FUSED_TYPES) or (len(types) == 1 and types <= set(FUSED_TYPES))):
          report.errors.append(f'first entry (id {key}) has types {sorted(types)}: expected one '
                               f'of {", ".join(FUSED_TYPES)}, or all three (fused)')
          types = set(entry) & set(FUSED_TYPES)
      if set(entry) != types:
        report.problem(f'entries without exactly the types {sorted(types)}',
                       f'id {key} has {sorted(entry)}')
      for type_name in sorted(set(entry) & set(FUSED_TYPES)):
        _check_scores(report, key, type_name, entry[type_name])
  except SubmissionError as e:
    report.errors.append(str(e).removeprefix(f'{path}: '))
    return report
  if header.get('task') != ASB_TASK:
    report.errors.append(f'"task" is {header.get("task")!r}, expected {ASB_TASK!r}')
  unknown = sorted(set(header) - {'task'})
  if unknown:
    report.notes.append(f'top-level fields besides "task" and "results" are ignored: {unknown}')
  _check_ids(report, keys, split_ids)
  if split_ids is not None and split_ids.pose_missing is not None and split_ids.pose_missing.any():
    stand_in = split_ids.ids[split_ids.pose_missing]
    report.notes.append(f'{len(stand_in)} segment(s) of {split_ids.source} have no poses '
                        f'(pose_missing): their scores come from the reference\'s stand-in '
                        f'sequence: {_id_list(stand_in.tolist())}')
  report.entries = len(keys)
  if types:
    report.notes.append(f'types: {", ".join(t for t in FUSED_TYPES if t in types)}')
  return report.finish()


def validate(path: str, kind: str, split_ids: Optional[SplitIds] = None, *,
             task: Optional[str] = None) -> Report:
  _check_kind(kind)
  if kind == 'h2o':
    return validate_h2o(path, split_ids)
  return validate_assembly101(path, split_ids, task=task)


# --------------------------------------------------------------------------- command line


_USAGE = """\
usage: python -m istanet_jax.submissions --submission {h2o,assembly101} --config CONFIG
           --checkpoint CKPT --data_dir DATA --out FILE [--task {action,verb,noun}] [...]
       python -m istanet_jax.submissions validate FILE --kind {h2o,assembly101}
           (--data_dir DATA | --manual_dir RAW) [--config CONFIG] [--task ...]
       python -m istanet_jax.submissions fuse --action FILE [--verb FILE] [--noun FILE] --out FILE

Writes, validates and fuses H2O / Assembly101 challenge submissions. Each form has --help.
"""


def _write_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m istanet_jax.submissions',
                              description='Runs a checkpoint over the prepared test split and '
                              'writes the challenge file, then validates it.')
  p.add_argument('--submission', required=True, choices=KINDS)
  p.add_argument('--config', required=True, help='configs/<name>.py[:arg]')
  p.add_argument('--checkpoint', required=True, help='Orbax dir (or one step) or reference .pt')
  p.add_argument('--out', required=True, help='action_labels.json (h2o) / preds.json')
  p.add_argument('--task', choices=tuple(ASB_TYPES), default=None,
                 help='assembly101: checked against the config (default: the config\'s)')
  p.add_argument('--data_dir', default=None, help='prepared TFDS data (default: config.data_dir)')
  p.add_argument('--manual_dir', default=None, help='raw download: prepared into --data_dir first '
                 'if it is not yet')
  p.add_argument('--split', default='test')
  p.add_argument('--batch_size', type=int, default=None, help='default: config.test_batch_size')
  return p


def _validate_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m istanet_jax.submissions validate',
                              description='Checks a submission file against the format and the '
                              'split\'s ids.')
  p.add_argument('file')
  p.add_argument('--kind', required=True, choices=KINDS)
  p.add_argument('--task', choices=(*ASB_TYPES, 'fused'), default=None,
                 help='assembly101 (default: from the file\'s first entry)')
  p.add_argument('--config', default=None, help='configs/<name>.py[:arg]: the dataset and '
                 'data_dir')
  p.add_argument('--data_dir', default=None, help='prepared TFDS data')
  p.add_argument('--manual_dir', default=None, help='the raw download instead of prepared data')
  p.add_argument('--split', default='test')
  return p


def _fuse_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m istanet_jax.submissions fuse',
                              description='Merges Assembly101 action, verb and noun files into '
                              'one preds.json.')
  p.add_argument('--action', required=True)
  p.add_argument('--verb', default=None)
  p.add_argument('--noun', default=None)
  p.add_argument('--out', required=True)
  return p


def _load_config(spec: str, data_dir: Optional[str], batch_size: Optional[int] = None):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from istanet_jax import viz  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict(viz.load_config(spec).to_dict())  # an unlocked copy
  if data_dir:
    config.data_dir = os.path.abspath(data_dir)
  if batch_size:
    config.test_batch_size = batch_size
  return config


def _run_write(args) -> int:
  from istanet_jax import export  # pylint: disable=g-import-not-at-top

  config = _load_config(args.config, args.data_dir, args.batch_size)
  if config.dataset != args.submission:
    raise SubmissionError(f'{args.config}: dataset {config.dataset!r}, not {args.submission}')
  if args.submission == 'assembly101':
    task = config_task(config)
    if args.task and args.task != task:
      raise SubmissionError(f'{args.config} trains {task} (label_key '
                            f'{config.get("label_key")!r}), not --task {args.task}; use '
                            f'configs/assembly101.py:{args.task}')
  elif args.task:
    raise SubmissionError('--task is for assembly101')
  if not config.get('data_dir'):
    raise SubmissionError('--data_dir is needed (or config.data_dir)')
  if args.manual_dir:
    from data_pipelines import prepare  # pylint: disable=g-import-not-at-top
    prepare.prepare(config.dataset, args.manual_dir, config.data_dir)
  split_ids = prepared_split_ids(config.dataset, config.data_dir, args.split)
  variables = export.load_variables(config, args.checkpoint)
  if args.submission == 'h2o':
    summary = write_h2o(config, variables, args.out, split_ids, split=args.split)
    print(f'wrote {args.out}: {summary["entries"]} predicted labels', flush=True)
  else:
    summary = write_assembly101(config, variables, args.out, split_ids, split=args.split)
    print(f'wrote {args.out}: {summary["entries"]} "{summary["type"]}" score vectors '
          f'({summary["pose_missing"]} segment(s) without poses, predicted from the stand-in)',
          flush=True)
  report = validate(args.out, args.submission, split_ids,
                    task=config_task(config) if args.submission == 'assembly101' else None)
  print(report.text(), flush=True)
  return 0 if report.ok else 1


def _run_validate(args) -> int:
  dataset, data_dir = args.kind, args.data_dir
  if args.config:
    config = _load_config(args.config, args.data_dir)
    if config.dataset != args.kind:
      raise SubmissionError(f'{args.config}: dataset {config.dataset!r}, not {args.kind}')
    dataset, data_dir = config.dataset, config.get('data_dir')
  if args.task and args.kind != 'assembly101':
    raise SubmissionError('--task is for assembly101')
  if args.manual_dir:
    split_ids = raw_split_ids(args.kind, args.manual_dir, args.split)
  elif data_dir:
    split_ids = prepared_split_ids(dataset, data_dir, args.split)
  else:
    raise SubmissionError('--data_dir (prepared data) or --manual_dir (raw download) is needed '
                          'to check the ids')
  report = validate(args.file, args.kind, split_ids, task=args.task)
  print(report.text(), flush=True)
  return 0 if report.ok else 1


def _run_fuse(args) -> int:
  n = fuse(args.action, args.out, verb=args.verb, noun=args.noun)
  print(f'wrote {args.out}: {n} fused entries', flush=True)
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`argv` without the program name; returns the exit status."""
  host.configure()
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ('-h', '--help'):
    print(_USAGE, end='')
    return 0 if argv else 2
  if argv[0] == 'validate':
    args, run = _validate_parser().parse_args(argv[1:]), _run_validate
  elif argv[0] == 'fuse':
    args, run = _fuse_parser().parse_args(argv[1:]), _run_fuse
  else:
    args, run = _write_parser().parse_args(argv), _run_write
  try:
    return run(args)
  except (OSError, ValueError) as e:  # SubmissionError, DataError, CheckpointMismatchError
    message = '; '.join(l.strip() for l in str(e).splitlines() if l.strip())
    print(f'error: {message}', file=sys.stderr, flush=True)
    return 2


if __name__ == '__main__':
  sys.exit(main())
