"""`istanet_jax.submissions`: H2O and Assembly101 challenge files written from a checkpoint over
prepared synthetic test splits, keyed as the reference keys them, validated and fused; the
streaming writer and reader equal `json`; bad files and mismatched fusions rejected by name."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from data_pipelines import assembly101, h2o, prepare, synthetic
from istanet_jax import checkpoints, steps, submissions, train, viz

REPO = pathlib.Path(__file__).resolve().parents[1]
# Config files for the command line: the real configs with tiny blocks (the runlocal variant's
# batch of 8 puts one example on each fake device; the 9 Assembly101 ids take 2 batches).
TINY_CONFIG = """\
from configs import {name}


def get_config(arg=''):
  config = {name}.get_config(','.join(a for a in (arg, 'runlocal') if a))
  config.model.config = ((8, 8, 4), (8, 16, 4))
  return config
"""


def tiny_config(root, name, arg, data_dir):
  path = root / f'tiny_{name}.py'
  path.write_text(TINY_CONFIG.format(name=name))
  spec = f'{path}:{arg}' if arg else str(path)
  config = ml_collections.ConfigDict(viz.load_config(spec).to_dict())
  config.data_dir = str(data_dir)
  return spec, config


def tiny_variables(config, seed, samples):
  """Variables of the config's model without running its initialisers (compiling them takes
  ~15 s on 2 cores): shapes from eval_shape, random parameters, BatchNorm statistics (0, 1), the
  positional tables as the model builds them. The classifier bias is then shifted by minus the
  mean logits over `samples`: random logits hardly depend on the input, so every H2O clip would
  get one class and a key mix-up would not show."""
  model = steps.model_from_config(config)
  x = steps.eval_transform(config)(np.stack([s.skeleton for s in samples]))
  shapes = model.variable_shapes()
  rng = np.random.default_rng(seed)

  def fill(path, a):
    name = path[-1].key
    if name in ('running_mean', 'num_batches_tracked'):
      return np.zeros(a.shape, a.dtype)
    if name == 'running_var':
      return np.ones(a.shape, a.dtype)
    scale = 1 / np.sqrt(a.size // a.shape[-1]) if a.ndim > 1 else 0.1
    return (rng.normal(size=a.shape) * scale).astype(a.dtype)

  variables = {c: jax.tree_util.tree_map_with_path(fill, shapes[c])
               for c in ('params', 'batch_stats')}
  logits, built = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=['buffers']))(
      variables, x)
  variables['buffers'] = built['buffers']
  variables['params']['fc']['bias'] -= np.asarray(logits).mean(0)
  return model, variables


def with_classes(config, variables, num_classes):
  """The same model with the first `num_classes` outputs of its classifier."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.num_classes = num_classes
  fc = {'weight': variables['params']['fc']['weight'][:, :num_classes],
        'bias': variables['params']['fc']['bias'][:num_classes]}
  return steps.model_from_config(config), dict(variables,
                                               params=dict(variables['params'], fc=fc))


def save_orbax(directory, variables):
  ckpt = checkpoints.Checkpointer(str(directory), use_async=False)
  ckpt.save(1, train.variables_as_state(variables), {'epoch': 1})
  ckpt.close()
  return str(directory)


def reference_scores(config, model, variables, samples):
  """What the reference computes for the reader's samples, in its (split-file / csv) order:
  the test transform and the model, without our input pipeline or id mapping."""
  x = steps.eval_transform(config)(np.stack([s.skeleton for s in samples]))
  logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x),
                      np.float32)
  return np.asarray(jax.nn.softmax(logits, axis=-1)), logits.argmax(-1)


@pytest.fixture(scope='module')
def h2o_setup(tmp_path_factory):
  root = tmp_path_factory.mktemp('h2o')
  raw = synthetic.write_tree('h2o', root / 'raw', num_per_class=1)
  prepare.prepare('h2o', raw, root / 'data')
  spec, config = tiny_config(root, 'h2o', '', root / 'data')
  model, variables = tiny_variables(config, 3, list(h2o.iter_h2o_samples(raw, 'test')))
  return dict(root=root, raw=raw, spec=spec, config=config, model=model, variables=variables,
              checkpoint=save_orbax(root / 'best', variables))


@pytest.fixture(scope='module')
def asb_setup(tmp_path_factory):
  root = tmp_path_factory.mktemp('asb')
  raw = synthetic.write_tree('assembly101', root / 'raw', num_per_class=1)
  with pytest.warns(UserWarning):  # the tree's train/validation segments without poses
    prepare.prepare('assembly101', raw, root / 'data')
  setup = dict(root=root, raw=raw, samples=list(assembly101.iter_assembly101_samples(raw, 'test')))
  for task in ('action', 'verb', 'noun'):
    spec, config = tiny_config(root, 'assembly101', task, root / 'data')
    setup[task] = dict(spec=spec, config=config)
  action = setup['action']
  action['model'], action['variables'] = tiny_variables(action['config'], 4, setup['samples'])
  action['checkpoint'] = save_orbax(root / 'best_action', action['variables'])
  for task in ('verb', 'noun'):  # one trunk, fewer outputs: no second initialisation
    t = setup[task]
    t['model'], t['variables'] = with_classes(action['config'], action['variables'],
                                              t['config'].model.num_classes)
  return setup


@pytest.fixture(scope='module')
def asb_files(asb_setup):
  """The action file through the command line (Orbax checkpoint), verb and noun through
  `write_assembly101`, and their fusion through the command line."""
  root, out = asb_setup['root'], {}
  out['action'] = str(root / 'action' / 'preds.json')
  assert submissions.main([
      '--submission', 'assembly101', '--task', 'action', '--config', asb_setup['action']['spec'],
      '--checkpoint', asb_setup['action']['checkpoint'], '--data_dir', str(root / 'data'),
      '--out', out['action']]) == 0
  split_ids = submissions.prepared_split_ids('assembly101', str(root / 'data'))
  for task in ('verb', 'noun'):
    out[task] = str(root / task / 'preds.json')
    summary = submissions.write_assembly101(asb_setup[task]['config'],
                                            asb_setup[task]['variables'], out[task], split_ids)
    assert summary == {'entries': 9, 'task': task, 'type': submissions.ASB_TYPES[task],
                       'pose_missing': 2}
  out['fused'] = str(root / 'fused.json')
  assert submissions.main(['fuse', '--action', out['action'], '--verb', out['verb'],
                           '--noun', out['noun'], '--out', out['fused']]) == 0
  return out


def load(path):
  with open(path) as f:
    return json.load(f)
def validate_cli(capsys, *args):
  capsys.readouterr()
  rc = submissions.main(['validate', *map(str, args)])
  captured = capsys.readouterr()
  return rc, captured.out + captured.err


# --------------------------------------------------------------------------- H2O


def _write_h2o(s, out):
  """The H2O submission through the command line (Orbax checkpoint); its printout."""
  return submissions.main(['--submission', 'h2o', '--config', s['spec'], '--checkpoint',
                           s['checkpoint'], '--data_dir', str(s['root'] / 'data'),
                           '--out', str(out)])


def test_h2o_submission_is_what_the_reference_writes(h2o_setup, tmp_path, capsys):
  s = h2o_setup
  out = tmp_path / 'sub' / 'action_labels.json'
  assert _write_h2o(s, out) == 0
  assert 'valid h2o submission, 8 entries' in capsys.readouterr().out
  res = load(out)
  rows = h2o.read_split_file(os.path.join(s['raw'], 'label_split', 'action_test.txt'),
                             with_label=False)
  # The reference keys by loader index + 1 over the split file's rows, which is the id column.
  assert [r['id'] for r in rows] == list(range(1, len(rows) + 1))
  assert set(res) - {'modality'} == {str(r['id']) for r in rows}
  _, pred = reference_scores(s['config'], s['model'], s['variables'],
                             list(h2o.iter_h2o_samples(s['raw'], 'test')))
  assert len(set(pred.tolist())) > 1  # else a key mix-up could not show
  reference = {'modality': 'train: hand+obj, test: hand+obj',
               **{str(i + 1): int(p + 1) for i, p in enumerate(pred)}}
  assert res == reference
  assert out.read_text() == json.dumps(reference)  # ids in the split file's order, as written
  assert all(1 <= v <= 36 for k, v in res.items() if k != 'modality')
  rc, text = validate_cli(capsys, out, '--kind', 'h2o', '--manual_dir', s['raw'])
  assert rc == 0 and 'valid h2o submission, 8 entries' in text


def test_h2o_validator_catches_bad_labels_and_ids(h2o_setup, tmp_path, capsys):
  assert _write_h2o(h2o_setup, tmp_path / 'action_labels.json') == 0
  res = load(tmp_path / 'action_labels.json')
  del res['3']
  res['1'], res['2'], res['77'] = 37, 'x', 5
  bad = tmp_path / 'bad.json'
  bad.write_text(json.dumps(res))
  rc, text = validate_cli(capsys, bad, '--kind', 'h2o', '--config', h2o_setup['spec'],
                          '--data_dir', h2o_setup['root'] / 'data')
  assert rc == 1 and 'INVALID h2o submission' in text
  assert 'labels outside 1..36 (class + 1): 1 entry, e.g. id 1: 37' in text
  assert "labels must be integers: 1 entry, e.g. id 2: 'x'" in text
  assert 'missing ids: 1 of the 8 segments' in text and 'have no entry: 3' in text
  assert any(l.startswith('  error: extra ids: 1 entry is not in') and l.endswith(': 77')
             for l in text.splitlines())


# --------------------------------------------------------------------------- Assembly101


def test_assembly101_files_are_keyed_by_csv_id_as_the_reference(asb_setup, asb_files):
  samples = asb_setup['samples']
  # The reference's key is the loader index of its id-sorted test array: the csv id.
  assert [smp.id for smp in samples] == list(range(9))
  assert [smp.id for smp in samples if smp.pose_missing] == [1, 8]
  for task in ('action', 'verb', 'noun'):
    t = asb_setup[task]
    probs, _ = reference_scores(t['config'], t['model'], t['variables'], samples)
    res = load(asb_files[task])
    type_name = submissions.ASB_TYPES[task]
    assert res['task'] == 'recognition' and list(res) == ['task', 'results']
    assert set(res['results']) == {str(i) for i in range(9)}
    for i in range(9):
      assert list(res['results'][str(i)]) == [type_name]
      np.testing.assert_allclose(res['results'][str(i)][type_name], probs[i], rtol=1e-5,
                                 atol=1e-7)


def test_assembly101_action_file_has_json_dump_text(asb_files):
  text = pathlib.Path(asb_files['action']).read_text()
  res = json.loads(text)
  assert text == json.dumps(res)  # separators, order and every float's repr
  scores = np.asarray([v['action'] for v in res['results'].values()])
  assert scores.shape == (9, 1380)
  # float32 softmax values written as the float64 repr torch's tolist() gives, exactly.
  np.testing.assert_array_equal(scores.astype(np.float32).astype(np.float64), scores)


def test_assembly101_files_validate_with_pose_missing_as_a_note(asb_setup, asb_files, capsys):
  data = asb_setup['root'] / 'data'
  for task in ('action', 'verb', 'noun'):
    rc, text = validate_cli(capsys, asb_files[task], '--kind', 'assembly101', '--task', task,
                            '--config', asb_setup[task]['spec'], '--data_dir', data)
    assert rc == 0, text
    assert 'valid assembly101 submission, 9 entries' in text
    assert 'note: 2 segment(s)' in text and 'have no poses (pose_missing)' in text
    assert text.rstrip().endswith(f'types: {submissions.ASB_TYPES[task]}')
  # From the raw tree: the csv ids, and the segments without poses found in the pose files.
  rc, text = validate_cli(capsys, asb_files['fused'], '--kind', 'assembly101', '--manual_dir',
                          asb_setup['raw'])
  assert rc == 0, text
  assert 'sequence: 1, 8' in text and 'types: action, verb, object' in text
  rc, text = validate_cli(capsys, asb_files['verb'], '--kind', 'assembly101', '--task', 'noun',
                          '--data_dir', data)
  assert rc == 1 and 'entries without exactly the types [\'object\']: 9 entries' in text


def test_fused_file_holds_each_task_file_entry(asb_files):
  fused = load(asb_files['fused'])
  parts = {t: load(asb_files[t])['results'] for t in ('action', 'verb', 'noun')}
  assert list(fused['results']) == list(parts['action'])  # the action file's order
  for key, entry in fused['results'].items():
    assert entry == {'action': parts['action'][key]['action'], 'verb': parts['verb'][key]['verb'],
                     'object': parts['noun'][key]['object']}
  assert pathlib.Path(asb_files['fused']).read_text() == json.dumps(fused)


def test_fuse_takes_the_reference_scripts_action_key(asb_files, tmp_path):
  # tools/asb_fuse_json_files.py reads verb/noun scores under "action": accept such files too.
  for task, type_name in (('verb', 'verb'), ('noun', 'object')):
    res = load(asb_files[task])
    res['results'] = {k: {'action': v[type_name]} for k, v in res['results'].items()}
    (tmp_path / f'{task}.json').write_text(json.dumps(res))
  out = tmp_path / 'fused.json'
  submissions.fuse(asb_files['action'], str(out), verb=str(tmp_path / 'verb.json'),
                   noun=str(tmp_path / 'noun.json'))
  assert load(out) == load(asb_files['fused'])


def test_fuse_refuses_mismatched_ids(asb_files, tmp_path, capsys):
  res = load(asb_files['verb'])
  del res['results']['4']
  verb = tmp_path / 'verb.json'
  verb.write_text(json.dumps(res))
  out = tmp_path / 'fused.json'
  rc = submissions.main(['fuse', '--action', asb_files['action'], '--verb', str(verb),
                         '--noun', asb_files['noun'], '--out', str(out)])
  err = capsys.readouterr().err
  assert rc == 2
  assert err.strip() == f'error: segment id 4 is in {asb_files["action"]} but not in {verb}'
  assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith('.tmp_')]
  res = load(asb_files['noun'])
  res['results']['99'] = res['results']['0']
  noun = tmp_path / 'noun.json'
  noun.write_text(json.dumps(res))
  with pytest.raises(submissions.SubmissionError,
                     match=f'segment id 99 is in {noun} but not in {asb_files["action"]}'):
    submissions.fuse(asb_files['action'], str(out), verb=asb_files['verb'], noun=str(noun))
  with pytest.raises(submissions.SubmissionError, match='expected 24 verb scores, got 90'):
    submissions.fuse(asb_files['action'], str(out), verb=asb_files['noun'])


def test_validator_catches_missing_extra_short_and_malformed(asb_setup, asb_files, tmp_path,
                                                             capsys):
  data = asb_setup['root'] / 'data'
  res = load(asb_files['action'])
  del res['results']['5']
  res['results']['42'] = res['results']['0']
  res['results']['2']['action'] = res['results']['2']['action'][:-1]
  bad = tmp_path / 'bad.json'
  bad.write_text(json.dumps(res))
  rc, text = validate_cli(capsys, bad, '--kind', 'assembly101', '--data_dir', data)
  assert rc == 1 and 'INVALID assembly101 submission (3 problem(s))' in text
  assert ('wrong score-vector length: 1 entry, e.g. id 2 action has 1379 scores, expected 1380'
          in text)
  assert 'missing ids: 1 of the 9 segments of' in text and 'have no entry: 5' in text
  assert any(l.startswith('  error: extra ids: 1 entry is not in') and l.endswith(': 42')
             for l in text.splitlines())
  truncated = tmp_path / 'truncated.json'
  truncated.write_text(pathlib.Path(asb_files['action']).read_text()[:5000])
  rc, text = validate_cli(capsys, truncated, '--kind', 'assembly101', '--data_dir', data)
  with pytest.raises(json.JSONDecodeError) as e:
    json.loads(truncated.read_text())
  assert rc == 1  # the same place and reason as json.load gives
  assert f'error: malformed JSON at character {e.value.pos}: {e.value.msg}\n' in text
  # Every id present and well formed but for one sum: that alone makes the file INVALID.
  not_prob = load(asb_files['action'])
  not_prob['results']['0']['action'] = [2.0] + [0.0] * 1379
  bad.write_text(json.dumps(not_prob))
  rc, text = validate_cli(capsys, bad, '--kind', 'assembly101', '--data_dir', data)
  assert rc == 1 and 'INVALID assembly101 submission (1 problem(s))' in text
  assert ('  error: scores not summing to 1 (softmax probabilities expected): 1 entry, e.g. id 0 '
          'action sums to 2' in text)


def test_split_ids_say_when_nothing_is_prepared(asb_setup):
  with pytest.raises(submissions.SubmissionError, match=r'assembly101 is not prepared in .*empty '
                     r'\(python -m data_pipelines.prepare, or --manual_dir\)'):
    submissions.prepared_split_ids('assembly101', str(asb_setup['root'] / 'empty'))


def test_prediction_loop_compiles_once(asb_setup):
  t = asb_setup['action']
  batches = submissions.iter_predictions(t['config'], t['variables'])
  index, probs, pred = next(batches)
  compiled = train.compilations()
  rest = list(batches)
  assert train.compilations() == compiled  # the padded last batch reuses the program
  assert len(index) == 8 and len(rest) == 1 and len(rest[0][0]) == 1
  assert sorted(np.concatenate([index, rest[0][0]]).tolist()) == list(range(9))
  np.testing.assert_array_equal(pred, probs.argmax(-1))


def test_task_must_match_the_config(asb_setup, tmp_path, capsys):
  t = asb_setup['verb']
  rc = submissions.main(['--submission', 'assembly101', '--task', 'noun', '--config', t['spec'],
                         '--checkpoint', asb_setup['action']['checkpoint'],
                         '--data_dir', str(asb_setup['root'] / 'data'),
                         '--out', str(tmp_path / 'x.json')])
  err = capsys.readouterr().err
  assert rc == 2 and "trains verb (label_key 'verb'), not --task noun" in err
  assert submissions.config_task(asb_setup['noun']['config']) == 'noun'


# --------------------------------------------------------------------------- streaming JSON


AWKWARD = {'task': 'recognition', 'results': {
    '0': {'action': [0.1, 1.0, 0.0, 1e-7, 5e-324, 2.2250738585072014e-308, 0.30000000000000004]},
    '17': {'verb': [float(np.float32(1 / 3)), 1e16, 123456789.125], 'object': []},
    'x"y\u00e9': {'action': [-0.0, 1.5e300]}}}


def test_results_writer_text_equals_json_dumps(tmp_path):
  path = tmp_path / 'w.json'
  with submissions.ResultsWriter(path) as w:
    for key, entry in AWKWARD['results'].items():
      w.add(key, entry)
  assert path.read_text(encoding='utf-8') == json.dumps(AWKWARD)
  with submissions.ResultsWriter(tmp_path / 'empty.json'):
    pass
  assert (tmp_path / 'empty.json').read_text() == json.dumps({'task': 'recognition',
                                                              'results': {}})
  with pytest.raises(submissions.SubmissionError, match='segment id 1 written twice'):
    with submissions.ResultsWriter(tmp_path / 'dup.json') as w:
      w.add('1', {})
      w.add('1', {})
  assert sorted(p.name for p in tmp_path.iterdir()) == ['empty.json', 'w.json']


@pytest.mark.parametrize('chunk', [1, 7, 1 << 20])
def test_iter_results_equals_json_load(tmp_path, chunk):
  path = tmp_path / 'r.json'
  path.write_text(json.dumps({'before': [1, {'a': 2}], **AWKWARD, 'after': 'z'}, indent=1),
                  encoding='utf-8')
  header = {}
  got = list(submissions.iter_results(path, header, chunk=chunk))
  assert got == list(AWKWARD['results'].items())
  assert header == {'before': [1, {'a': 2}], 'task': 'recognition', 'after': 'z'}


@pytest.mark.parametrize('text, message', [
    ('', 'character 0: expected a JSON object, found the end of the file'),
    ('[1]', "character 0: expected a JSON object, found '['"),
    ('{"task": "recognition"}', 'no "results" field'),
    ('{"results": [1]}', "character 12: expected \"results\" to be an object, found '['"),
    ('{"results": {"0": {"action": [0.5, 0.5}}}', "character 38: Expecting ',' delimiter"),
    ('{"results": {"0": 1} "x": 2}', "character 21: expected ',' or '}' after a top-level field"),
    ('{"results": {}} {}', 'character 16: extra data after the JSON object'),
    ('{"results": {1: 2}}', "character 13: expected a segment id string, found '1'"),
])
def test_iter_results_rejects_malformed_files(tmp_path, text, message):
  path = tmp_path / 'm.json'
  path.write_text(text)
  with pytest.raises(submissions.SubmissionError) as e:
    list(submissions.iter_results(path, chunk=4))
  assert str(e.value).startswith(f'{path}: ') and message in str(e.value)


def test_command_line_help():
  out = subprocess.run([sys.executable, '-m', 'istanet_jax.submissions', '--help'],
                       capture_output=True, text=True, cwd=REPO, check=True).stdout
  assert 'validate FILE --kind {h2o,assembly101}' in out and 'fuse --action FILE' in out
  out = subprocess.run([sys.executable, '-m', 'istanet_jax.submissions', 'fuse', '--help'],
                       capture_output=True, text=True, cwd=REPO, check=True).stdout
  assert '--noun NOUN' in out
