"""`train_and_evaluate` and the train step: device-count invariance, exact resume, several
processes, corrupt checkpoints, no recompilation, and one step equal to the reference's."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import demo
from istanet_jax import checkpoints, input_pipeline, steps, torch_compat, train
from parity_cases import Case

REPO = pathlib.Path(__file__).resolve().parents[1]
# float32 sums in another order (batch statistics and gradients reduced over 4 shards) differ
# by ~5e-7 relative after one step, and training amplifies that step by step (~1e-3 after 24
# steps), so device counts are compared after one epoch (7 steps at a small LR): measured
# 6e-6 (4 devices vs 1) and 7e-5 (2 processes vs 1) of the largest parameter, so 3e-4 is
# reduction-order noise; a wrong shard or key moves parameters by ~1e-1.
SHARDING_RTOL = 3e-4


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """The demo's synthetic SBU raw tree, small, prepared as ArrayRecord (~60 train sequences)."""
  # Imported here: the two-process test's workers import this module, and conftest configures
  # the process it is imported into.
  from conftest import prepared_sbu  # pylint: disable=g-import-not-at-top
  return prepared_sbu(tmp_path_factory.mktemp('sbu'), num_per_class=2)


def tiny_config(data_dir, **overrides) -> ml_collections.ConfigDict:
  config = demo.get_config()
  config.unlock()
  config.model.config = ((8, 8, 4), (8, 16, 4))
  # Prepared data (no synthetic writing); the last eval batch of 12 is partial.
  config.update(dict(manual_dir=None, synthetic_raw='', data_dir=data_dir, batch_size=8,
                     test_batch_size=12, num_epoch=3, base_lr=0.01, warm_up_epoch=1, step=(2,),
                     eval_interval=1), **overrides)
  return config


def _params(result):
  return jax.tree_util.tree_map(np.asarray, jax.device_get(result['state']['params']))


def _assert_trees(a, b, rtol=None):
  """Equal leaves, or with `rtol`: max |a - b| within rtol of max |b|, on one scale for all
  parameters (conv biases that feed a train-mode BatchNorm get only rounding noise as gradient,
  so on their own scale they differ by rounding alone)."""
  a, b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(a) == len(b)
  if rtol is None:
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
    return
  diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
  scale = max(float(np.abs(y).max()) for y in b)
  print(f'largest parameter difference relative to the largest parameter: {diff / scale:.2e}')
  assert diff <= rtol * scale


@pytest.fixture(scope='module')
def four_device_run(data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('four')
  made, make_iterator = [], input_pipeline.make_iterator
  with pytest.MonkeyPatch.context() as patch:  # which iterators the run starts
    patch.setattr(input_pipeline, 'make_iterator', lambda builder, split, **kwargs: (
        made.append((split, kwargs['train'])) or make_iterator(builder, split, **kwargs)))
    result = train.train_and_evaluate(tiny_config(data_dir), str(workdir), progress=False,
                                      devices=jax.devices()[:4])
  return workdir, dict(result, iterators_made=made)


@pytest.fixture(scope='module')
def one_epoch_on_four_devices(data_dir, tmp_path_factory):
  return train.train_and_evaluate(tiny_config(data_dir, num_epoch=1),
                                  str(tmp_path_factory.mktemp('four1')), progress=False,
                                  devices=jax.devices()[:4])


def test_four_devices_equal_one(data_dir, tmp_path, one_epoch_on_four_devices):
  one = train.train_and_evaluate(tiny_config(data_dir, num_epoch=1), str(tmp_path),
                                 progress=False, devices=jax.devices()[:1])
  _assert_trees(_params(one_epoch_on_four_devices), _params(one), rtol=SHARDING_RTOL)
  assert one['eval/top1'] == one_epoch_on_four_devices['eval/top1']


def test_loss_falls_every_sample_is_evaluated_and_nothing_recompiles(data_dir, four_device_run):
  workdir, four = four_device_run
  losses = [m['train/loss'] for m in train.read_metrics(str(workdir)) if 'train/loss' in m]
  assert len(losses) == 3 and losses[-1] < losses[0]
  n_test = input_pipeline.num_examples('sbu_kinect_interaction/clean', 'fold0', data_dir)
  assert n_test % 12  # the last eval batch is partial
  evals = [m for m in train.read_metrics(str(workdir)) if 'eval/top1' in m]
  assert [m['eval/count'] for m in evals] == [n_test] * 3  # every test sample counted once
  # One eval iterator serves the three evaluations (the tf.data back end reads the split in).
  assert four['iterators_made'] == [('fold1+fold2+fold3+fold4', True), ('fold0', False)]
  assert all(0 <= m['eval/top1'] <= m['eval/top5'] <= 1 for m in evals)
  assert four['compilations_after_first_epoch'] == 0
  # The step compiled beside the state's initialisation is the one that ran.
  assert four['train_step_compilations'] == 1
  scores = np.load(workdir / 'best_scores.npy')
  names = json.loads((workdir / 'best_scores.json').read_text())['sample_names']
  assert scores.shape == (n_test, 8) and len(set(names)) == n_test


def _comparable(records):
  timing = ('time', 'train/samples_per_second', 'train/seconds', 'eval/samples_per_second',
            'eval/seconds')
  return [{k: v for k, v in r.items() if k not in timing} for r in records]


def test_killed_run_resumes_exactly(data_dir, tmp_path, four_device_run, capsys):
  full_dir, full = four_device_run
  first = train.train_and_evaluate(tiny_config(data_dir), str(tmp_path), progress=False,
                                   devices=jax.devices()[:4], stop_after_epochs=1)
  assert first['epoch'] == 1
  rest = train.train_and_evaluate(tiny_config(data_dir), str(tmp_path), progress=False,
                                  devices=jax.devices()[:4])
  assert 'Resuming from' in capsys.readouterr().out
  assert rest['resumed_from_epoch'] == 1 and rest['epochs_run'] == 2
  # Compiled for the restored state before the first step: the step runs that compilation.
  assert first['train_step_compilations'] == rest['train_step_compilations'] == 1
  _assert_trees(_params(rest), _params(full))
  _assert_trees(jax.device_get(rest['state']['opt_state']), jax.device_get(full['state']['opt_state']))
  assert _comparable(train.read_metrics(str(tmp_path))) == _comparable(train.read_metrics(str(full_dir)))


def test_corrupt_checkpoint_falls_back_to_the_previous_one(data_dir, tmp_path, capsys):
  config = tiny_config(data_dir, num_epoch=2)
  train.train_and_evaluate(config, str(tmp_path), progress=False, devices=jax.devices()[:1])
  ckpt = checkpoints.Checkpointer(str(tmp_path / 'checkpoints'), use_async=False)
  newest = ckpt.steps()[-1]
  ckpt.close()
  # Bit rot / a bad disk: every file of the newest state item overwritten.
  damaged = [p for p in (tmp_path / 'checkpoints' / str(newest) / 'state').rglob('*') if p.is_file()]
  assert damaged
  for path in damaged:
    path.write_bytes(b'garbage')
  result = train.train_and_evaluate(tiny_config(data_dir, num_epoch=3), str(tmp_path),
                                    progress=False, devices=jax.devices()[:1])
  out = capsys.readouterr().out
  assert f'checkpoints/{newest} is corrupt or incomplete' in out
  assert result['resumed_from_epoch'] == 1 and result['epochs_run'] == 2


def test_best_checkpoint_ahead_of_the_last_is_saved_again(data_dir, tmp_path, capsys):
  """A kill after an epoch's `best/` save and before its `checkpoints/` save (or a damaged
  newest checkpoint that was also the best): the rerun reaches that step again and saves it
  anew, where Orbax had refused a step that exists, in every rerun after."""
  config = tiny_config(data_dir, num_epoch=1)
  train.train_and_evaluate(config, str(tmp_path), progress=False, devices=jax.devices()[:1])
  best = checkpoints.Checkpointer(str(tmp_path / 'best'), use_async=False)
  (step,) = best.steps()  # the first evaluation is always the best so far
  best.close()
  shutil.rmtree(tmp_path / 'checkpoints' / str(step))
  result = train.train_and_evaluate(config, str(tmp_path), progress=False,
                                    devices=jax.devices()[:1])
  assert result['resumed_from_epoch'] is None and result['epochs_run'] == 1
  assert f'best/{step} is later than the state resumed from: moved to' in capsys.readouterr().out
  best = checkpoints.Checkpointer(str(tmp_path / 'best'), use_async=False)
  assert best.steps() == [step]
  best.close()
  assert (tmp_path / 'best_scores.npy').exists() and (tmp_path / 'best_scores.json').exists()
  # The one set aside keeps its scores beside it: nothing is lost.
  (aside,) = (tmp_path / 'best').glob(f'{step}.ahead-*')
  assert (aside / 'best_scores.npy').exists() and (aside / 'state').is_dir()


def test_checkpoint_of_another_config_is_named_and_kept(data_dir, tmp_path):
  """A rerun whose config changes the state's layout is not a damaged checkpoint: nothing is
  moved aside, the metrics stay, and the error says what differs."""
  config = tiny_config(data_dir, num_epoch=1)
  train.train_and_evaluate(config, str(tmp_path), progress=False, devices=jax.devices()[:1])
  before = sorted(os.listdir(tmp_path / 'checkpoints'))
  metrics = (tmp_path / 'metrics.jsonl').read_text()
  with pytest.raises(checkpoints.LayoutMismatch, match=r'checkpoints/7 holds a state of another '
                     r'layout .* it was trained with another config'):
    train.train_and_evaluate(tiny_config(data_dir, num_epoch=2, grad_clip_norm=1.0),
                             str(tmp_path), progress=False, devices=jax.devices()[:1])
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == before
  assert (tmp_path / 'metrics.jsonl').read_text() == metrics


@pytest.mark.parametrize('overrides, match', [
    (dict(eval_interval=0), 'config.eval_interval must be >= 1, got 0'),
    (dict(checkpoint_every_epochs=0), 'config.checkpoint_every_epochs must be >= 1'),
    (dict(keep_checkpoints=0), 'config.keep_checkpoints must be >= 1'),
    (dict(batch_size=64), r"config.batch_size 64 exceeds the 62 examples of .* split 'fold1\+"),
])
def test_config_values_that_would_fail_an_epoch_in_are_refused_first(data_dir, tmp_path,
                                                                     overrides, match):
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(tiny_config(data_dir, **overrides), str(tmp_path), progress=False,
                             devices=jax.devices()[:1])
  assert not (tmp_path / 'checkpoints').exists()


def test_metrics_log_of_a_resumed_run(tmp_path):
  """Lines after the checkpoint's epoch go; a last line cut short (a full disk) goes too; a bad
  line before it is named."""
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"epoch": 1, "a": 1}\n{"epoch": 2, "a": 2}\n{"epoch": 3, "a"')
  train.MetricWriter(str(tmp_path), keep_until_epoch=2).close()
  assert path.read_text() == '{"epoch": 1, "a": 1}\n{"epoch": 2, "a": 2}\n'
  train.MetricWriter(str(tmp_path), keep_until_epoch=1).close()
  assert path.read_text() == '{"epoch": 1, "a": 1}\n'
  path.write_text('{"epoch": 1}\n{"epo\n{"epoch": 2}\n')
  with pytest.raises(ValueError, match=r'metrics.jsonl:2: not a JSON record'):
    train.MetricWriter(str(tmp_path), keep_until_epoch=2)


def test_half_written_checkpoint_is_ignored(data_dir, tmp_path, capsys):
  config = tiny_config(data_dir, num_epoch=1)
  train.train_and_evaluate(config, str(tmp_path), progress=False, devices=jax.devices()[:1])
  # What a kill during an async save leaves: Orbax's temporary directory, never renamed.
  (tmp_path / 'checkpoints' / '99.orbax-checkpoint-tmp-1' / 'state').mkdir(parents=True)
  result = train.train_and_evaluate(tiny_config(data_dir, num_epoch=2), str(tmp_path),
                                    progress=False, devices=jax.devices()[:1])
  assert result['resumed_from_epoch'] == 1


def test_train_step_equals_the_reference_sgd_step():
  """The project's train step (identity augmentation) on the float64 parity case."""
  case = Case('pad_odd')
  config = tiny_config('')
  config.model = ml_collections.ConfigDict(dict(case.model_args, att_drop=0.0, dropout=0.0))
  config.train_feeder = ml_collections.ConfigDict(dict(
      window_size=case.model_args['num_frames'], p_interval=(1.0,), random_rot=False,
      entity_rearrangement=False, vel=False, bone=False))
  s = case.step
  config.update(dict(optimizer=s['optimizer'], base_lr=s['lr'], weight_decay=s['weight_decay'],
                     nesterov=s['nesterov'], warm_up_epoch=0, step=(), bn_group_size=None))
  config.loss_args = ml_collections.ConfigDict(dict(smoothing=s['smoothing'],
                                                    temperature=s['temperature']))
  with jax.enable_x64(True):
    model = steps.model_from_config(config)
    tx = steps.make_optimizer(config, steps_per_epoch=1)
    variables = torch_compat.variables_from_state_dict(case.state_dict(), case.model_args)
    state = steps.state_from_variables(variables, tx)
    x = jnp.asarray(np.moveaxis(case.x, 1, -1))
    batch = {'skeleton': x, 'label': jnp.asarray(case.y, jnp.int32),
             'index': jnp.arange(len(case.y), dtype=jnp.int32),
             'mask': jnp.ones(len(case.y), bool)}
    new_state, metrics = jax.jit(steps.make_train_step(config, model, tx))(
        state, batch, jax.random.key(0))
    assert float(metrics['loss_sum'] / metrics['count']) == pytest.approx(
        float(case.arrays['loss']), rel=1e-8)
    after = torch_compat.state_dict_from_variables(steps.variables_of(new_state), case.model_args)
  expected = case.prefixed('after_sgd_step/')
  assert sorted(after) == sorted(expected)
  for key, value in expected.items():
    scale = max(np.abs(value).max(), 1e-300)
    assert np.abs(after[key] - value).max() / scale < 1e-8, key


def test_non_finite_step_is_skipped_and_counted(data_dir):
  config = tiny_config(data_dir)
  model = steps.model_from_config(config)
  tx = steps.make_optimizer(config, steps_per_epoch=3)
  state = steps.create_state(model, tx, jax.random.key(0))
  before = jax.device_get(state['params'])
  batch = {'skeleton': jnp.full((8, 46, 15, 2, 3), jnp.nan), 'label': jnp.zeros(8, jnp.int32),
           'index': jnp.arange(8, dtype=jnp.int32), 'mask': jnp.ones(8, bool)}
  new_state, metrics = jax.jit(steps.make_train_step(config, model, tx))(
      state, batch, jax.random.key(0))
  assert int(new_state['skipped']) == 1 and int(new_state['step']) == 1
  assert float(metrics['skipped']) == 1.0
  _assert_trees(jax.device_get(new_state['params']), before)
  # The schedule still counts the step (the learning rate follows the epoch, as logged); the
  # rest of the optimiser's state is kept.
  is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)
  schedules = [s for s in jax.tree_util.tree_leaves(new_state['opt_state'], is_leaf=is_schedule)
               if is_schedule(s)]
  assert [int(s.count) for s in schedules] == [1]
  rest = lambda opt_state: [
      leaf for leaf in jax.tree_util.tree_leaves(opt_state, is_leaf=is_schedule)
      if not is_schedule(leaf)]
  _assert_trees(jax.device_get(rest(new_state['opt_state'])),
                jax.device_get(rest(state['opt_state'])))


def test_init_prng_draws_are_uniform_and_independent():
  """steps.INIT_PRNG, the parameters' draws: every bit and the float draws uniform, no
  correlation between neighbouring words, between the keys folded from or split from one key,
  or between neighbouring seeds (bounds at ~4.5 standard errors: a fixed draw, no flakes)."""
  n = 1 << 16
  def wrap(words):
    return jax.random.wrap_key_data(jnp.asarray(words, jnp.uint32), impl=steps.INIT_PRNG)
  key = wrap([0, 0])  # the plainest key
  bits = np.asarray(jax.random.bits(key, (n,), jnp.uint32))
  frequencies = ((bits[:, None] >> np.arange(32, dtype=np.uint32)) & 1).mean(0)
  np.testing.assert_allclose(frequencies, 0.5, atol=4.5 * 0.5 / np.sqrt(n))
  with jax.enable_x64(True):
    for dtype, width in ((jnp.uint8, 8), (jnp.uint16, 16), (jnp.uint64, 64)):
      narrow = np.asarray(jax.random.bits(key, (n,), dtype))
      assert narrow.dtype == dtype
      frequencies = ((narrow[:, None] >> np.arange(width, dtype=dtype)) & 1).mean(0)
      np.testing.assert_allclose(frequencies, 0.5, atol=4.5 * 0.5 / np.sqrt(n))
  u = np.sort(np.asarray(jax.random.uniform(key, (n,))))
  assert np.abs(u - (np.arange(n) + 0.5) / n).max() < 1.63 / np.sqrt(n)  # Kolmogorov-Smirnov, 1%
  def uniforms(k):
    return np.asarray(jax.random.uniform(k, (n,)), np.float64)
  streams = [uniforms(key)[1:], uniforms(key)[:-1],  # neighbours
             *(uniforms(jax.random.fold_in(key, d))[1:] for d in (0, 1, 2**31)),
             *(uniforms(k)[1:] for k in jax.random.split(key, 2)),
             *(uniforms(wrap(words))[1:] for words in ([0, 1], [1, 0], [2**31, 0], [0, 2**31]))]
  r = np.corrcoef(np.stack(streams))
  assert np.abs(r[np.triu_indices_from(r, 1)]).max() < 4.5 / np.sqrt(n)
  folded = np.asarray(jax.vmap(lambda d: jax.random.key_data(jax.random.fold_in(key, d)))(
      jnp.arange(n, dtype=jnp.uint32)))
  split = np.asarray(jax.random.key_data(jax.random.split(key, n)))
  assert len(np.unique(np.concatenate([folded, split]), axis=0)) == 2 * n


def test_initialiser_draws_without_loops():
  """The state's initialiser has one threefry hash (the two words that seed INIT_PRNG) and no
  other loop: the per-parameter hashes of JAX's generator compiled 2.5-3 s longer for NTU."""
  config = demo.get_config('runlocal')
  model = steps.model_from_config(config)
  tx = steps.make_optimizer(config, steps_per_epoch=3)
  init_state, _, _ = train.jit_steps(config, model, tx, train.make_mesh(jax.devices()[:1]))
  hlo = init_state.lower(jax.random.key(0)).compile().as_text()
  assert hlo.count(' while(') == 1
  x = jnp.zeros(model.input_shape())
  plain = jax.jit(lambda k: model.init(k, x, train=False))
  assert plain.lower(jax.random.key(0)).compile().as_text().count(' while(') > 10


def test_all_finite_sees_every_leaf():
  tree = {'loss': jnp.float32(1.0), 'grads': [jnp.ones((3, 2)), jnp.arange(4.0)]}
  assert bool(steps.all_finite(tree))
  for bad in (jnp.inf, -jnp.inf, jnp.nan):
    for leaf in (0, 1):
      grads = list(tree['grads'])
      grads[leaf] = grads[leaf].at[(1,) * grads[leaf].ndim].set(bad)
      assert not bool(steps.all_finite({**tree, 'grads': grads})), (bad, leaf)
  assert not bool(steps.all_finite({**tree, 'loss': jnp.float32(jnp.nan)}))


def _microbatch_run(config, microbatches, devices, dtype=jnp.float64):
  """One train step of a tiny random model on a random batch of 8, sharded over `devices`."""
  config.microbatches = microbatches
  model = steps.model_from_config(config)
  tx = steps.make_optimizer(config, steps_per_epoch=3)
  mesh = train.make_mesh(devices)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  rng = np.random.default_rng(0)
  batch = {'skeleton': rng.normal(size=(8, 46, 15, 2, 3)).astype(dtype),
           'label': rng.integers(0, 8, 8).astype(np.int32),
           'index': np.arange(8, dtype=np.int32), 'mask': np.arange(8) != 5}
  batch = jax.device_put(batch, data)
  state = jax.device_put(steps.create_state(model, tx, jax.random.key(0)), replicated)
  state = jax.tree_util.tree_map(lambda a: a.astype(dtype) if a.dtype == jnp.float32 else a,
                                 state)
  step = jax.jit(steps.make_train_step(config, model, tx, num_shards=len(devices)),
                 in_shardings=(replicated, data, replicated))
  new_state, metrics = step(state, batch, jax.random.key(1))
  return jax.device_get((new_state, metrics))


@pytest.mark.parametrize('microbatches, devices', [(2, 1), (4, 1), (2, 2)])
def test_microbatches_give_the_same_step(microbatches, devices):
  """Gradient accumulation over whole BatchNorm groups computes the batch's step: parameters,
  running statistics and metrics equal to float64 rounding (masked example included)."""
  config = tiny_config('', bn_group_size=2)
  with jax.enable_x64(True):
    expected = _microbatch_run(config, 1, jax.devices()[:1])
    got = _microbatch_run(config, microbatches, jax.devices()[:devices])
  for name in ('params', 'batch_stats', 'opt_state'):
    _assert_trees(got[0][name], expected[0][name], rtol=1e-12)
  for key in expected[1]:
    assert float(got[1][key]) == pytest.approx(float(expected[1][key]), rel=1e-12), key
  tracked = jax.tree_util.tree_leaves(got[0]['batch_stats'])
  assert {int(a) for a in tracked if a.dtype == np.int32} == {1}


@pytest.mark.parametrize('overrides, match', [
    (dict(microbatches=3), 'split batch_size 8'),
    (dict(microbatches=2, bn_group_size=None), 'need bn_group_size'),
    (dict(microbatches=2, bn_group_size=4, batch_size=8), 'divide the 2 rows')])
def test_microbatches_that_change_the_step_are_refused(data_dir, tmp_path, overrides, match):
  config = tiny_config(data_dir, **overrides)
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, str(tmp_path), progress=False, devices=jax.devices()[:2])


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


WORKER = r'''
import os, sys, json
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
sys.path[:0] = [sys.argv[5], os.path.join(sys.argv[5], 'tests')]
import numpy as np
from istanet_jax import train
from test_train import tiny_config
result = train.train_and_evaluate(tiny_config(sys.argv[3], num_epoch=1), sys.argv[4],
                                  progress=False)
assert result['train_step_compilations'] == 1, result['train_step_compilations']
if jax.process_index() == 0:
  leaves = jax.tree_util.tree_leaves(jax.device_get(result['state']['params']))
  np.savez(os.path.join(sys.argv[4], 'params.npz'), *leaves)
# Leave together: a process that reaches the shutdown barrier long before the other fails it.
from jax.experimental import multihost_utils
multihost_utils.sync_global_devices('test done')
jax.distributed.shutdown()
'''


def test_two_processes_train_like_one(data_dir, tmp_path, one_epoch_on_four_devices):
  four = one_epoch_on_four_devices
  address = f'127.0.0.1:{_free_port()}'
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu')
  # Output to files, not pipes: a worker blocked on a full pipe that nobody reads (while the
  # other is waited for) would stall the collectives of both.
  logs = [open(tmp_path / f'worker{i}.log', 'w+') for i in range(2)]  # pylint: disable=consider-using-with
  workers = [subprocess.Popen([sys.executable, '-c', WORKER, address, str(i), data_dir,
                               str(tmp_path / 'run'), str(REPO)], env=env,
                              stdout=log, stderr=subprocess.STDOUT, text=True)
             for i, log in enumerate(logs)]
  for w, log in zip(workers, logs):
    w.wait(timeout=600)
    log.seek(0)
    assert w.returncode == 0, log.read()[-3000:]
    log.close()
  # Throughput counts every host's samples once (the metrics' counts are global sums).
  config = tiny_config(data_dir, num_epoch=1)
  n_train = input_pipeline.num_batches(
      input_pipeline.num_examples(config.dataset, config.train_split, data_dir),
      batch_size=config.batch_size, train=True) * config.batch_size
  records = train.read_metrics(str(tmp_path / 'run'))
  (train_record,) = [r for r in records if 'train/seconds' in r]
  (eval_record,) = [r for r in records if 'eval/seconds' in r]
  assert train_record['train/samples_per_second'] * train_record['train/seconds'] == (
      pytest.approx(n_train))
  assert eval_record['eval/samples_per_second'] * eval_record['eval/seconds'] == (
      pytest.approx(eval_record['eval/count']))
  saved = np.load(tmp_path / 'run' / 'params.npz')
  ours = [saved[f'arr_{i}'] for i in range(len(saved.files))]
  _assert_trees(ours, _params(four), rtol=SHARDING_RTOL)


LAZY_IMPORTS_WORKER = r'''
import os, sys, threading
from etils import epy
from etils.epy import lazy_imports_utils
entered, original = [], lazy_imports_utils.lazy_imports
def recording(*args, **kwargs):
  compiling = any(t.name.startswith('istanet-compile') for t in threading.enumerate())
  entered.append((threading.current_thread().name, compiling))
  return original(*args, **kwargs)
epy.lazy_imports = lazy_imports_utils.lazy_imports = recording
sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], 'tests')]
import jax
from istanet_jax import train
from test_train import tiny_config
assert 'grain' not in sys.modules
result = train.train_and_evaluate(tiny_config(sys.argv[2], num_epoch=1), sys.argv[3],
                                  progress=False, devices=jax.devices()[:1])
assert 'grain' in sys.modules and result['train_step_compilations'] == 1
print('ENTERED', sorted(set(entered)))
'''


def test_no_import_swap_while_the_step_compiles(data_dir, tmp_path):
  """etils' `lazy_imports` (grain's import) swaps `builtins.__import__` for the whole process
  while it runs; an import that the step's tracing made meanwhile on the compiling thread would
  get a lazy stand-in. A fresh training process enters it on the main thread only, and never
  while the step compiles."""
  proc = subprocess.run([sys.executable, '-c', LAZY_IMPORTS_WORKER, str(REPO), data_dir,
                         str(tmp_path / 'run')], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split('ENTERED', 1)[1].strip() == "[('MainThread', False)]", (
      proc.stdout[-500:])


CHECKPOINT_WORKER = r'''
import sys
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
sys.path.insert(0, sys.argv[4])
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from istanet_jax import checkpoints
replicated = NamedSharding(Mesh(np.array(jax.devices()), ('data',)), PartitionSpec())
last = checkpoints.Checkpointer(sys.argv[3] + '/checkpoints')
best = checkpoints.Checkpointer(sys.argv[3] + '/best', max_to_keep=1)
for step in range(1, 6):  # an epoch that improves the best saves its step twice, at once
  w = np.full((4,), float(step), np.float32)
  state = {'w': jax.make_array_from_callback(w.shape, replicated, lambda index: w[index])}
  best.save(step, state, {'epoch': step})
  last.save(step, state, {'epoch': step})
last.close()
best.close()
print('saved', last.steps(), best.steps())
'''


def test_two_processes_save_one_step_in_two_managers(tmp_path):
  """Several hosts: `checkpoints/` and `best/` commit the same step concurrently; their
  barriers must not collide (they did: "Barrier _async_write_complete.7 is already ongoing")."""
  address = f'127.0.0.1:{_free_port()}'
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1',
             JAX_PLATFORMS='cpu')
  logs = [open(tmp_path / f'worker{i}.log', 'w+') for i in range(2)]  # pylint: disable=consider-using-with
  workers = [subprocess.Popen([sys.executable, '-c', CHECKPOINT_WORKER, address, str(i),
                               str(tmp_path / 'run'), str(REPO)], env=env, stdout=log,
                              stderr=subprocess.STDOUT, text=True)
             for i, log in enumerate(logs)]
  for w, log in zip(workers, logs):
    try:
      w.wait(timeout=120)  # colliding barriers hang until Orbax's timeout: fail sooner
    finally:
      w.kill()
    log.seek(0)
    text = log.read()
    assert w.returncode == 0, text[-3000:]
    assert 'saved [4, 5] [5]' in text, text[-3000:]
    log.close()


def test_eval_mode_on_orbax_and_reference_checkpoints(data_dir, tmp_path, four_device_run):
  workdir, four = four_device_run
  config = tiny_config(data_dir)
  best = train.evaluate_checkpoint(config, str(tmp_path / 'a'), str(workdir / 'best'),
                                  devices=jax.devices()[:4])
  assert best['eval/top1'] == four['best_top1']
  assert (tmp_path / 'a' / 'eval_scores.npy').exists()
  # The same weights as a reference .pt state dict give the same scores.
  ckpt = checkpoints.Checkpointer(str(workdir / 'best'), use_async=False)
  state, _, _ = ckpt.restore_latest(checkpoints.abstract_like(four['state']))
  ckpt.close()
  variables = steps.variables_of(jax.device_get(state))
  state_dict = torch_compat.state_dict_from_variables(variables, config.model.to_dict())
  torch_compat.save_pt(state_dict, tmp_path / 'best.pt')
  from_pt = train.evaluate_checkpoint(config, str(tmp_path / 'b'), str(tmp_path / 'best.pt'),
                                     devices=jax.devices()[:4])
  np.testing.assert_allclose(from_pt['scores'], best['scores'], rtol=1e-5, atol=1e-5)
  with pytest.raises(FileNotFoundError, match='missing: no such file or directory'):
    train.evaluate_checkpoint(config, str(tmp_path / 'c'), str(tmp_path / 'missing'),
                              devices=jax.devices()[:4])
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='empty: no Orbax checkpoint steps'):
    train.evaluate_checkpoint(config, str(tmp_path / 'c'), str(tmp_path / 'empty'),
                              devices=jax.devices()[:4])
  with pytest.raises(ValueError, match='test_batch_size 12 must be a multiple of the 8 devices'):
    train.evaluate_checkpoint(config, str(tmp_path / 'd'), str(tmp_path / 'best.pt'))
  # Training's batch settings are not evaluation's business: a batch of 6 does not split over
  # 4 devices, the eval batch of 12 does.
  odd = train.evaluate_checkpoint(tiny_config(data_dir, batch_size=6, microbatches=3),
                                  str(tmp_path / 'e'), str(tmp_path / 'best.pt'),
                                  devices=jax.devices()[:4])
  assert odd['eval/top1'] == from_pt['eval/top1']


def test_synthetic_trees_by_name(tmp_path):
  from data_pipelines import synthetic
  for kind in synthetic.WRITERS:
    root = synthetic.write_tree(kind, tmp_path / kind)
    assert os.listdir(root), kind
  with pytest.raises(ValueError, match="unknown synthetic tree 'kinetics'"):
    synthetic.write_tree('kinetics', tmp_path / 'k')


def test_command_line_trains_resumes_and_evaluates(tmp_path):
  """The README's commands: the demo (runlocal), its rerun, and --mode eval."""
  workdir = tmp_path / 'demo'
  base = [sys.executable, '-m', 'istanet_jax.train', '--config', 'configs/demo.py:runlocal',
          '--workdir', str(workdir), '--config.num_epoch=1',
          f'--compilation_cache_dir={tmp_path / "xla_cache"}']

  def run(*extra):
    done = subprocess.run(base + list(extra), cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout

  out = run()
  assert 'Writing a synthetic sbu raw tree' in out and 'best eval top-1' in out
  assert [m['epoch'] for m in train.read_metrics(str(workdir))] == [1, 1]
  assert any((tmp_path / 'xla_cache').iterdir())  # compiled steps kept for the rerun
  assert 'Resuming from' in run()
  out = run('--mode', 'eval', '--checkpoint', str(workdir / 'best'))
  assert 'eval of' in out and (workdir / 'eval_scores.npy').exists()
  typo = subprocess.run(base + ['--config.model.num_clases=3'], cwd=REPO, capture_output=True,
                        text=True, timeout=600)
  assert typo.returncode != 0 and 'Traceback' not in typo.stderr, typo.stderr
  assert typo.stderr.strip().splitlines()[-1] == (
      "error: a --config.<key>=value override names no key of the config: 'num_clases'; Did you "
      'mean "num_classes" instead of "num_clases"?')
