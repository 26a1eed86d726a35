"""istanet_jax.protocols (folds, seeds, fuse) and the evaluation options behind them: entity
permutation averaging, swap consistency and multi-clip testing (steps.make_eval_step)."""

import functools
import json
import os
import pathlib
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo, h2o, ntu26, sbu
from istanet_jax import augment, input_pipeline, labels, protocols, steps, train
from conftest import prepared_sbu

REPO = pathlib.Path(__file__).resolve().parents[1]

# The reference's folds (feeders/feeder_sbu.py get_SBU: fold_pair_name), transcribed.
REFERENCE_FOLDS = [['s01s02', 's03s04', 's05s02', 's06s04'],
                   ['s02s03', 's02s07', 's03s05', 's05s03'],
                   ['s01s03', 's01s07', 's07s01', 's07s03'],
                   ['s02s01', 's02s06', 's03s02', 's03s06'],
                   ['s04s02', 's04s03', 's04s06', 's06s02', 's06s03']]
TINY_BLOCKS = ((8, 8, 4), (8, 16, 4))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """A synthetic SBU tree (one pair per fold, one sequence per class), prepared."""
  return prepared_sbu(tmp_path_factory.mktemp('sbu'), num_per_class=1)


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  """One persistent compilation cache for every command below: the runs compile alike."""
  return str(tmp_path_factory.mktemp('xla_cache'))


def _names(data_dir, split):
  it = input_pipeline.make_iterator('sbu_kinect_interaction/clean', split, batch_size=8,
                                    max_frames=46, train=False, data_dir=data_dir)
  return [str(n) for b in it for n, m in zip(b['sample_name'], b['mask']) if m]


def _pairs(names):
  return {n.split('/')[0] for n in names}


def test_fold_configs_are_the_reference_partitions(data_dir):
  configs = protocols.fold_configs(sbu.get_config('clean'))
  assert len(configs) == 5
  everything = set()
  for k, (config, part) in enumerate(zip(configs, protocols.fold_partitions())):
    assert part['test_pairs'] == REFERENCE_FOLDS[k]
    assert part['train_pairs'] == [p for i in range(5) if i != k for p in REFERENCE_FOLDS[i]]
    # The same splits as the reference YAML's `fold: k` (configs/sbu.py).
    by_arg = sbu.get_config(f'clean,fold={k}')
    assert (config.train_split, config.eval_split) == (by_arg.train_split, by_arg.eval_split)
    test, trained = _names(data_dir, config.eval_split), _names(data_dir, config.train_split)
    assert test and _pairs(test) <= set(REFERENCE_FOLDS[k])
    assert _pairs(trained) <= set(part['train_pairs']) and not set(test) & set(trained)
    everything |= set(test)
    assert set(test) | set(trained) == everything | set(trained)
  # The five test sets are distinct and together hold every sample once.
  tests = [frozenset(_names(data_dir, c.eval_split)) for c in configs]
  assert len(set(tests)) == 5 and sum(map(len, tests)) == len(everything)
  with pytest.raises(ValueError, match="folds is the SBU-Kinect-Interaction protocol; config.dataset is 'h2o'"):
    protocols.fold_configs(h2o.get_config())


def test_mean_std_and_paper_figures():
  stat = protocols.mean_std([0.9, 0.95, 1.0])
  assert stat['mean'] == pytest.approx(np.mean([0.9, 0.95, 1.0]))
  assert stat['std'] == pytest.approx(np.std([0.9, 0.95, 1.0], ddof=1))
  assert protocols.mean_std([0.5])['std'] == 0.0
  assert protocols.paper_figure(ntu26.get_config('xset'))['top1_percent'] == 91.7
  from configs import assembly101
  assert protocols.paper_figure(assembly101.get_config('noun'))['top1_percent'] == 31.69
  from configs import ntu120
  assert protocols.paper_figure(ntu120.get_config('xsub')) is None


def _command(*args, cwd=REPO):
  done = subprocess.run([sys.executable, '-m', 'istanet_jax.protocols', *args], cwd=cwd,
                        capture_output=True, text=True, timeout=900)
  return done


def _train_command(protocol, workdir, data_dir, cache_dir, *extra):
  done = _command(protocol, '--config', 'configs/demo.py', '--workdir', str(workdir),
                  f'--config.data_dir={data_dir}', '--config.manual_dir=',
                  '--config.synthetic_raw=', '--config.num_epoch=1',
                  f'--config.model.config={TINY_BLOCKS}', '--config.test_batch_size=8',
                  f'--compilation_cache_dir={cache_dir}', *extra)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  return done.stdout


def test_folds_command(data_dir, cache_dir, tmp_path):
  """Five runs of one epoch on the 8 devices."""
  out = _train_command('folds', tmp_path, data_dir, cache_dir)
  report = json.loads((tmp_path / 'folds.json').read_text())
  runs = report['runs']
  assert [r['fold'] for r in runs] == list(range(5))
  assert [r['eval_split'] for r in runs] == [f'fold{k}' for k in range(5)]
  assert [r['test_pairs'] for r in runs] == REFERENCE_FOLDS
  for key in ('best_top1', 'last_top1'):
    values = [r[key] for r in runs]
    assert report[key]['values'] == values
    assert report[key]['mean'] == pytest.approx(np.mean(values), abs=1e-12)
    assert report[key]['std'] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
  assert all(0 <= r['best_swap_consistency'] <= 1 for r in runs)
  assert f'{100 * report["best_top1"]["mean"]:.2f} ± {100 * report["best_top1"]["std"]:.2f}' in out
  # Pooled best-epoch scores: every sample once, from its own test fold.
  pooled = json.loads((tmp_path / 'pooled_scores.json').read_text())
  assert len(pooled['sample_names']) == sum(r['num_eval'] for r in runs)
  for name in pooled['sample_names']:
    fold, pair = name.split('/')[:2]
    assert pair in REFERENCE_FOLDS[int(fold[len('fold'):])]
  assert sum(c['count'] for c in report['per_class']) == len(pooled['sample_names'])
  # Without --class_names the classes are named as the config's label set names them.
  assert [c['class'] for c in report['per_class']] == labels.class_names('sbu')
  md = (tmp_path / 'folds.md').read_text()
  assert 'mean ± std (ddof=1)' in md and 'Paper: 98.5%' in md and 'says nothing' in md
  assert (tmp_path / 'confusion.png').stat().st_size > 1000
  # A subset (what one process per device group runs); finished runs are only read again.
  _train_command('folds', tmp_path, data_dir, cache_dir, '--folds=3,1')
  subset = json.loads((tmp_path / 'folds.json').read_text())
  assert subset['runs'] == [runs[3], runs[1]]


def test_seeds_are_reproducible_per_seed(data_dir, cache_dir, tmp_path):
  out = _train_command('seeds', tmp_path / 'a', data_dir, cache_dir, '--seeds=2', '--first_seed=5')
  assert 'paper: 98.5 %' in out and 'says nothing' in out
  _train_command('seeds', tmp_path / 'b', data_dir, cache_dir, '--seeds=1', '--first_seed=5')
  a = json.loads((tmp_path / 'a' / 'seeds.json').read_text())
  b = json.loads((tmp_path / 'b' / 'seeds.json').read_text())
  assert [r['seed'] for r in a['runs']] == [5, 6] and [r['seed'] for r in b['runs']] == [5]
  keys = ('best_top1', 'best_epoch', 'last_top1', 'best_swap_consistency')
  assert {k: a['runs'][0][k] for k in keys} == {k: b['runs'][0][k] for k in keys}
  scores = lambda d, s: np.load(tmp_path / d / f'seed{s}' / 'best_scores.npy')
  np.testing.assert_array_equal(scores('a', 5), scores('b', 5))
  assert not np.array_equal(scores('a', 5), scores('a', 6))  # another seed, another model
  values = [r['best_top1'] for r in a['runs']]
  assert a['best_top1']['std'] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
  assert a['paper'] == {'top1_percent': 98.5, 'benchmark': 'SBU-Kinect-Interaction, mean of 5 folds'}


# --------------------------------------------------------------------------- fuse


def _write_ours(path, names, scores, labels):
  np.save(path, scores)
  with open(os.path.splitext(path)[0] + '.json', 'w') as f:
    json.dump({'sample_names': names, 'labels': labels}, f)


def test_fuse_equals_a_hand_computation(tmp_path):
  rng = np.random.default_rng(0)
  n, k = 30, 5
  names = [f's{i:02d}' for i in range(n)]
  labels = rng.integers(0, k, n)
  joint, bone, motion = (rng.normal(size=(n, k)) for _ in range(3))
  # Three formats, three orders: ours (.npy + .json), the reference's score.pkl (dict),
  # pyskl's list in the order of a label file.
  _write_ours(str(tmp_path / 'joint.npy'), names, joint, labels.tolist())
  order = rng.permutation(n)
  with open(tmp_path / 'bone.pkl', 'wb') as f:
    pickle.dump({names[i]: bone[i] for i in order}, f)
  order2 = rng.permutation(n)
  with open(tmp_path / 'motion.pkl', 'wb') as f:
    pickle.dump([motion[i] for i in order2], f)
  with open(tmp_path / 'labels.pkl', 'wb') as f:
    pickle.dump(([names[i] for i in order2], [int(labels[i]) for i in order2]), f)
  fused = 2 * joint + 2 * bone + 1 * motion
  expected = float(np.mean(fused.argmax(1) == labels))
  report = protocols.run_fuse([str(tmp_path / 'joint.npy'), str(tmp_path / 'bone.pkl'),
                               str(tmp_path / 'motion.pkl')], str(tmp_path / 'out'),
                              weights=(2, 2, 1), labels_path=str(tmp_path / 'labels.pkl'))
  assert report['top1'] == pytest.approx(expected, abs=1e-12)
  assert report['streams'][0]['top1'] == pytest.approx(np.mean(joint.argmax(1) == labels))
  saved = json.loads((tmp_path / 'out' / 'fused_scores.json').read_text())
  back = np.load(tmp_path / 'out' / 'fused_scores.npy')
  by_name = dict(zip(saved['sample_names'], back))
  np.testing.assert_allclose(np.stack([by_name[s] for s in names]), fused, rtol=1e-6)
  assert (tmp_path / 'out' / 'fuse.md').exists() and (tmp_path / 'out' / 'confusion.png').exists()
  # The command line, with the 2:2:1:1 preset over four files; the list's order now from a
  # pyskl annotation pickle (its test split, among other samples).
  _write_ours(str(tmp_path / 'bm.npy'), names, joint, labels.tolist())
  annotations = [{'frame_dir': 'train0', 'label': 0}] + [
      {'frame_dir': names[i], 'label': int(labels[i])} for i in order2]
  with open(tmp_path / 'ann.pkl', 'wb') as f:
    pickle.dump({'split': {'xsub_train': ['train0'], 'xsub_val': [names[i] for i in order2]},
                 'annotations': annotations}, f)
  done = _command('fuse', '--scores', str(tmp_path / 'joint.npy'), str(tmp_path / 'bone.pkl'),
                  str(tmp_path / 'motion.pkl'), str(tmp_path / 'bm.npy'), '--preset', '2:2:1:1',
                  '--labels', str(tmp_path / 'ann.pkl'), '--labels_split', 'xsub_val',
                  '--workdir', str(tmp_path / 'cli'))
  assert done.returncode == 0, done.stderr
  fused4 = fused + joint
  top1 = json.loads((tmp_path / 'cli' / 'fuse.json').read_text())['top1']
  assert top1 == pytest.approx(np.mean(fused4.argmax(1) == labels), abs=1e-12)


def test_fuse_refuses_score_files_whose_samples_disagree(tmp_path):
  names = ['a', 'b', 'c']
  _write_ours(str(tmp_path / 'joint.npy'), names, np.eye(3), [0, 1, 2])
  _write_ours(str(tmp_path / 'bone.npy'), ['a', 'b', 'd'], np.eye(3), [0, 1, 2])
  done = _command('fuse', '--scores', str(tmp_path / 'joint.npy'), str(tmp_path / 'bone.npy'),
                  '--workdir', str(tmp_path / 'out'))
  assert done.returncode != 0
  message = done.stderr.strip().splitlines()[-1]
  assert str(tmp_path / 'joint.npy') in message and str(tmp_path / 'bone.npy') in message
  assert "sample names disagree: 1 only in" in message and "'c'" in message and "'d'" in message
  # Same names, different labels for one of them.
  _write_ours(str(tmp_path / 'bone.npy'), ['c', 'b', 'a'], np.eye(3), [2, 0, 0])
  with pytest.raises(ValueError, match=r"joint\.npy and .*bone\.npy: labels disagree for sample 'b'"):
    protocols.run_fuse([str(tmp_path / 'joint.npy'), str(tmp_path / 'bone.npy')],
                       str(tmp_path / 'out'), weights=(1, 1))
  with pytest.raises(ValueError, match='3 weights for 2 score files'):
    protocols.parse_weights(['1:2:3'], None, 2)
  assert protocols.parse_weights(['2', '2', '1', '1'], None, 4) == (2, 2, 1, 1)
  assert protocols.parse_weights(None, '1:1', 2) == (1, 1)


# --------------------------------------------------------------------------- eval options


def _tiny(**overrides):
  """A tiny model whose entity window is 1 (each person its own tokens), so token order
  (and so entity order) matters; with a window over both persons ISTA-Net mean-pools over
  them and is nearly order-independent already."""
  config = demo.get_config()
  config.unlock()
  config.model.config = TINY_BLOCKS
  config.model.window_size = (10, 5, 1)
  config.update(overrides)
  model = steps.model_from_config(config)
  state = steps.create_state(model, steps.make_optimizer(config, 1), jax.random.key(0))
  return config, model, train.variables_as_state(steps.variables_of(state))


def _batch(n=48, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 46, 15, 2, 3)).astype(np.float32)
  lengths = rng.integers(5, 47, n)
  x[np.arange(46)[None] >= lengths[:, None]] = 0  # zero padding after each sequence
  return {'skeleton': jnp.asarray(x), 'label': jnp.asarray(rng.integers(0, 8, n), jnp.int32),
          'index': jnp.arange(n, dtype=jnp.int32), 'mask': jnp.ones(n, bool)}


def _swapped(batch):
  return dict(batch, skeleton=batch['skeleton'][:, :, :, ::-1])


def _varied(model, state, batch):
  """The random model with its fc bias centred on this batch's logits: predictions vary from
  sample to sample (at initialisation every sample gets the same class)."""
  logits = jax.jit(functools.partial(model.apply, train=False))(
      steps.variables_of(state), augment.augment_eval(batch['skeleton'], window=40))
  params = dict(state['params'], fc=dict(state['params']['fc'],
                                         bias=state['params']['fc']['bias'] - logits.mean(0)))
  return dict(state, params=params)


def test_entity_permutation_averaging_is_invariant_to_swapping_persons():
  config, model, state = _tiny(eval_entity_permutation=True)
  batch = _batch()
  state = _varied(model, state, batch)
  averaged = jax.jit(steps.make_eval_step(config, model))
  plain = jax.jit(steps.make_eval_step(_tiny()[0], model))
  a, b = averaged(state, batch)[1], averaged(state, _swapped(batch))[1]
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  p, q = plain(state, batch)[1], plain(state, _swapped(batch))[1]
  assert np.abs(p - q).max() > 1e-3 * np.abs(p).max()  # without averaging the order shows
  # The average is the mean of the two orders' logits.
  np.testing.assert_allclose(a, (p + q) / 2, rtol=1e-5, atol=1e-5)


class _SymmetricModel:
  """A model symmetric by construction: it sees both persons' mean, x and the swapped x give
  bit-identical inputs to the network (float addition commutes)."""

  def __init__(self, model):
    self.model, self.num_classes, self.num_persons = model, model.num_classes, model.num_persons

  def apply(self, variables, x, train):
    return self.model.apply(variables, (x + x[:, :, :, ::-1]) / 2, train=train)


def test_swap_consistency_is_one_for_a_symmetric_model_and_below_for_a_random_one():
  config, model, state = _tiny()
  batch = _batch()
  state = _varied(model, state, batch)
  count = float(batch['mask'].sum())
  metrics, _ = jax.jit(steps.make_eval_step(config, model))(state, batch)
  random_consistency = float(metrics['swap_same_sum']) / count
  assert 0 < random_consistency < 1.0
  symmetric = _SymmetricModel(model)
  metrics, logits = jax.jit(steps.make_eval_step(config, symmetric))(
      _varied(symmetric, state, batch), batch)
  assert float(metrics['swap_same_sum']) / count == 1.0
  assert len(set(np.asarray(logits).argmax(1).tolist())) > 1  # not a constant prediction
  # Switched off: no metric, no second forward pass.
  off, _, _ = _tiny(eval_swap_consistency=False)
  assert 'swap_same_sum' not in jax.jit(steps.make_eval_step(off, model))(state, batch)[0]
  assert steps.eval_views(off, 2)[0].shape == (1, 2)


def test_multi_clip_crops_and_averaging():
  batch = _batch(16, seed=1)
  x = batch['skeleton']
  valid = np.asarray(augment.valid_frame_counts(x))
  begin, length = augment.eval_crop_window(valid, 0.95, 46)
  first, _ = augment.clip_crop_window(valid, 0.95, 46, 3, 0)
  middle, _ = augment.clip_crop_window(valid, 0.95, 46, 3, 1)
  last, _ = augment.clip_crop_window(valid, 0.95, 46, 3, 2)
  assert (np.asarray(first) == 0).all() and (np.asarray(middle) == np.asarray(begin)).all()
  assert (np.asarray(last) + np.asarray(length) == np.maximum(valid, 1)).all()
  # One clip, or the middle one of three, is the reference's centre crop.
  centre = augment.augment_eval(x, window=40)
  np.testing.assert_array_equal(augment.augment_eval(x, window=40, num_clips=3, clip=1), centre)
  config, model, state = _tiny(eval_num_clips=3, eval_swap_consistency=False)
  _, logits = jax.jit(steps.make_eval_step(config, model))(state, batch)
  forward = jax.jit(functools.partial(model.apply, train=False))
  by_hand = np.mean([forward(steps.variables_of(state),
                             augment.augment_eval(x, window=40, num_clips=3, clip=c))
                     for c in range(3)], axis=0)
  np.testing.assert_allclose(logits, by_hand, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='eval_num_clips must be >= 1'):
    steps.eval_views(_tiny(eval_num_clips=0)[0], 2)


def test_entity_orders_never_move_the_h2o_object():
  config = h2o.get_config()
  assert tuple(config.interchangeable_entities) == (0, 1) and config.model.num_persons == 3
  orders = steps.entity_orders(3, config.interchangeable_entities)
  np.testing.assert_array_equal(orders, [[0, 1, 2], [1, 0, 2]])
  np.testing.assert_array_equal(steps.swap_order(3, (0, 1)), [1, 0, 2])
  config.eval_entity_permutation = True
  orders, clips, swap = steps.eval_views(config, 3)
  assert (orders[:, 2] == 2).all() and swap == 1 and clips == 1
  with pytest.raises(ValueError, match=r'interchangeable_entities \(0, 3\) must be distinct'):
    steps.entity_orders(3, (0, 3))
  for module, arg in ((ntu26, 'xsub'), (sbu, 'clean')):
    assert tuple(module.get_config(arg).interchangeable_entities) == (0, 1)


def test_stream_configs():
  for stream, (bone, vel) in {'joint': (False, False), 'bone': (True, False),
                              'joint_motion': (False, True), 'bone_motion': (True, True)}.items():
    config = ntu26.get_config(f'xsub,stream={stream}')
    for feeder in (config.train_feeder, config.test_feeder):
      assert (feeder.bone, feeder.vel) == (bone, vel), stream
  with pytest.raises(ValueError, match="stream must be one of .*, got 'velocity'"):
    ntu26.get_config('xsub,stream=velocity')


def test_help():
  for args in (['--help'], ['folds', '--help'], ['seeds', '--help'], ['fuse', '--help']):
    done = _command(*args)
    assert done.returncode == 0, (args, done.stderr)
    assert '--workdir' in done.stdout, args


def test_seeds_needs_at_least_one(tmp_path):
  from istanet_jax import protocols
  with pytest.raises(SystemExit, match='--seeds must be at least 1, got 0'):
    protocols.main(['protocols', 'seeds', '--config', 'configs/demo.py', '--workdir',
                    str(tmp_path), '--seeds', '0'])
  done = _command('folds', '--config', 'configs/demo.py', '--workdir', str(tmp_path),
                  '--config.model.bogus=1')
  assert done.returncode != 0 and 'Traceback' not in done.stderr, done.stderr
  assert done.stderr.strip().splitlines()[-1] == (
      "error: a --config.<key>=value override names no key of the config: 'bogus'")


def test_fuse_names_score_files_that_hold_no_scores(tmp_path):
  annotations = tmp_path / 'anno.pkl'
  annotations.write_bytes(pickle.dumps({'split': {}, 'annotations': [{'label': 0}]}))
  with pytest.raises(ValueError,
                     match=r'anno\.pkl: a pyskl annotation file .* pass it as --labels'):
    protocols.load_score_file(str(annotations))
  words = tmp_path / 'words.pkl'
  words.write_bytes(pickle.dumps({'a': [0.1, 0.9], 'b': {'x': 1}}))
  with pytest.raises(ValueError, match=r"words\.pkl: the scores of 'b' are not numbers \(dict\)"):
    protocols.load_score_file(str(words))
  ragged = tmp_path / 'ragged.pkl'
  ragged.write_bytes(pickle.dumps({'a': [0.1, 0.9], 'b': [0.2, 0.3, 0.5]}))
  with pytest.raises(ValueError,
                     match=r'ragged\.pkl: score rows of different lengths \(\[2, 3\]\)'):
    protocols.load_score_file(str(ragged))
