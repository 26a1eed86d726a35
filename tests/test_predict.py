"""`istanet_jax.predict`: each input format read as its dataset reader reads it, the logits
`train.evaluate` gives for the same sample, sliding windows without recompilation, class-name
lists that fit the configs, and one-line errors."""

import json
import os
import pathlib
import pickle
import subprocess
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest

import istanet_jax
from configs import assembly101 as asb_config
from configs import demo, h2o as h2o_config, ntu120, ntu26, sbu as sbu_config
from data_pipelines import assembly101, h2o, ntu
from data_pipelines.synthetic_assembly101 import write_assembly101_tree
from data_pipelines.synthetic_ntu import write_ntu_tree, write_skeleton_file
from data_pipelines.synthetic_sbu_h2o import write_h2o_tree
from istanet_jax import adapters, checkpoints, labels, predict, steps, torch_compat, train
from conftest import prepared_sbu

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = ((8, 8, 4), (8, 16, 4))
TINY_FLAG = '--config.model.config=((8, 8, 4), (8, 16, 4))'
SBU_CONFIG = f'{REPO}/configs/sbu.py:clean,runlocal'
# One forward per test batch shape; the tiny models' logits differ between batch layouts (one
# device here, eight in train.evaluate) by float32 rounding only (measured ~1e-7 relative).
RTOL = 1e-5


def tiny(module, arg):
  config = module.get_config(arg)
  config.unlock()
  config.model.config = TINY
  return config


def tiny_variables(config, seed=1):
  """Random variables of the config's model, running variances in [0.5, 1.5).

  Drawn with numpy on the shapes `jax.eval_shape` gives: compiling `model.init` for each
  config would cost more than everything else in this file.
  """
  model = steps.model_from_config(config)
  shapes = model.variable_shapes()
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if path[-1].key == 'running_var':
      return (0.5 + rng.uniform(size=leaf.shape)).astype(np.float32)
    return (0.3 * rng.normal(size=leaf.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def save_pt(config, variables, path):
  torch_compat.save_pt(torch_compat.state_dict_from_variables(variables, config.model.to_dict()),
                       str(path))
  return str(path)


@pytest.fixture(scope='module')
def sbu_run(tmp_path_factory):
  """A prepared synthetic SBU tree, a tiny SBU model saved with Orbax, its evaluation scores."""
  root = tmp_path_factory.mktemp('sbu')
  config = tiny(sbu_config, 'clean,runlocal')
  config.data_dir = prepared_sbu(root, num_per_class=1)
  variables = tiny_variables(config)
  tx = steps.make_optimizer(config, steps_per_epoch=1)
  ckpt = checkpoints.Checkpointer(str(root / 'best'), use_async=False)
  ckpt.save(3, steps.state_from_variables(variables, tx), {'epoch': 3})
  ckpt.close()
  result = train.evaluate_checkpoint(config, str(root / 'eval'), str(root / 'best'))
  return dict(root=root, config=config, variables=variables, orbax=str(root / 'best'),
              scores=dict(zip(result['sample_names'], np.asarray(result['scores']))))


@pytest.fixture(scope='module')
def ntu_model(tmp_path_factory):
  root = tmp_path_factory.mktemp('ntu')
  write_ntu_tree(root / 'raw', num_per_class=1, seed=0)
  config = tiny(ntu26, 'xsub,runlocal')
  variables = tiny_variables(config, seed=3)
  return dict(root=root, config=config, variables=variables,
              pt=save_pt(config, variables, root / 'ntu.pt'))


def run_main(argv, capsys):
  code = predict.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


# --------------------------------------------------------------------------- equal to evaluation


def test_sbu_files_get_the_logits_of_train_evaluate(sbu_run, tmp_path, capsys):
  """The CLI (config file + override, Orbax checkpoint) on raw files of the eval split."""
  files = sorted((sbu_run['root'] / 'raw' / 'Clean').glob('s0[1-6]s0[2-4]/0[1-3]/001/*.txt'))
  files = [f for f in files if f.parts[-4] in ('s01s02', 's03s04', 's05s02', 's06s04')]  # fold 0
  assert len(files) >= 3
  out_json = tmp_path / 'out.json'
  code, out, err = run_main(['--config', SBU_CONFIG, TINY_FLAG, '--checkpoint', sbu_run['orbax'],
                             '--batch_size', '2', '--top_k', '3', '--output_json', out_json]
                            + files, capsys)
  assert code == 0, err
  result = json.loads(out_json.read_text())
  assert len(result['samples']) == len(files)
  for sample, path in zip(result['samples'], files):
    assert sample['name'] == '/'.join(path.parts[-4:-1])  # the reader's sample name
    assert sample['label'] == int(path.parts[-3]) - 1
    assert sample['label_name'] == labels.class_names('sbu')[sample['label']]
    (window,) = sample['windows']
    want = sbu_run['scores'][sample['name']]
    np.testing.assert_allclose(window['logits'], want, rtol=RTOL, atol=RTOL * np.abs(want).max())
    assert [e['class'] for e in sample['top_k']] == list(np.argsort(-want, kind='stable')[:3])
    assert f'{sample["name"]} ({path}, 46 frames, label {sample["label"]}' in out
  assert 'rank  class    prob  name' in out


# --------------------------------------------------------------------------- NTU and windows


def test_ntu_file_reads_like_the_dataset_and_windows_aggregate(ntu_model, tmp_path):
  config, variables = ntu_model['config'], ntu_model['variables']
  path = str(next((ntu_model['root'] / 'raw').rglob('*A050.skeleton')))
  (clip,) = predict.read_input(path, config=config)
  np.testing.assert_array_equal(clip.skeleton, ntu.process_skeleton_file(path))
  assert clip.label == 0  # A050 is class 0 of NTU Mutual 26
  # One actor: an NTU 60 config's file is prepared as the NTU 60 builder does (person 2 zero).
  alone = write_skeleton_file(tmp_path / os.path.basename(path),
                              [f[:1] for f in ntu.parse_skeleton_file(path).frames])
  mutual11 = ml_collections.ConfigDict(config.to_dict())
  mutual11.dataset = 'ntu_mutual11/xsub'
  (clip60,) = predict.read_input(alone, config=mutual11)
  assert clip60.label == 0 and clip60.skeleton[:, :, 0].any() and not clip60.skeleton[:, :, 1].any()
  # The same for a one-person array, which predict fills in itself.
  one = predict.Clip('one', 'one.npy', clip60.skeleton[:, :, :1])
  np.testing.assert_array_equal(predict.fit_clip(one, mutual11), clip60.skeleton)
  np.testing.assert_array_equal(predict.fit_clip(one, config)[:, :, 1], clip60.skeleton[:, :, 0])
  # pyskl numbers all 120 actions (label = action - 1): A050 is Mutual 26's class 0, A001 none.
  pkl = tmp_path / 'ntu120.pkl'
  pkl.write_bytes(pickle.dumps([
      {'frame_dir': n, 'label': a - 1, 'keypoint': np.ones((1, 5, 25, 3), np.float32)}
      for n, a in (('S001C001P001R001A050', 50), ('S001C001P001R001A001', 1), ('clip', 106))]))
  assert [c.label for c in predict.read_input(str(pkl), config=config)] == [0, None, 11]
  with pytest.raises(ValueError, match='--stride 0 must be at least 1'):
    predict.predict(config, variables, [clip], window=20, stride=0)
  names = labels.class_names(config)
  result = predict.predict(config, variables, [clip], window=20, stride=15, batch_size=4,
                           top_k=3, names=names)
  (sample,) = result['samples']
  t = len(clip.skeleton)
  spans = [(w['start'], w['end']) for w in sample['windows']]
  assert spans == predict.window_bounds(t, 20, 15) and spans[-1][1] == t and len(spans) >= 3
  assert sample['label_name'] == 'punching/slapping other person'
  probs = np.stack([np.exp(w['logits']) / np.exp(w['logits']).sum() for w in sample['windows']])
  mean = probs.mean(0)
  assert [e['class'] for e in sample['top_k']] == list(np.argsort(-mean)[:3])
  np.testing.assert_allclose([e['prob'] for e in sample['top_k']], np.sort(mean)[::-1][:3],
                             rtol=1e-6)
  # The second window is frames 15..35 of the sequence, padded to 20 frames, on its own.
  x = predict.fit_clip(clip, config)[15:35][None]
  alone = predict.window_logits(config, variables, x, batch_size=4)[0]
  np.testing.assert_allclose(sample['windows'][1]['logits'], alone, rtol=RTOL,
                             atol=RTOL * np.abs(alone).max())
  # Another window count, same batch shape: nothing is compiled again.
  before = train.compilations()
  again = predict.predict(config, variables, [clip, clip], window=20, stride=10, batch_size=4)
  assert len(again['samples'][1]['windows']) == len(predict.window_bounds(t, 20, 10))
  assert train.compilations() == before


def test_window_bounds():
  assert predict.window_bounds(10, 20, 5) == [(0, 10)]
  assert predict.window_bounds(50, 20, 20) == [(0, 20), (20, 40), (30, 50)]
  assert predict.window_bounds(40, 20, 10) == [(0, 20), (10, 30), (20, 40)]
  with pytest.raises(ValueError, match='--window 0 must be at least 1'):
    predict.window_bounds(40, 0, 10)
  with pytest.raises(ValueError, match='--stride 0 must be at least 1'):
    predict.window_bounds(40, 20, 0)


def test_adapter_input_runs_end_to_end(ntu_model, tmp_path, capsys):
  """A COCO-17 2D sequence of one person through --adapter coco17 into the NTU model."""
  rng = np.random.default_rng(0)
  coco = rng.normal(size=(30, 17, 1, 2)).astype(np.float32)
  np.save(tmp_path / 'coco.npy', coco)
  out_json = tmp_path / 'out.json'
  code, out, err = run_main(
      ['--config', f'{REPO}/configs/ntu26.py:xsub,runlocal', TINY_FLAG, '--checkpoint',
       ntu_model['pt'], '--adapter', 'coco17', '--window', '20', '--batch_size', '4',
       '--output_json', out_json, tmp_path / 'coco.npy'], capsys)
  assert code == 0, err
  (sample,) = json.loads(out_json.read_text())['samples']
  assert [(w['start'], w['end']) for w in sample['windows']] == [(0, 20), (10, 30)]
  assert 'mean of 2 windows' in out
  # The same through the API: adapter, z = 0, the one person duplicated as the NTU reader does.
  x = predict.fit_clip(predict.Clip('c', 'c', coco), ntu_model['config'],
                       adapters.get_adapter('coco17', 'ntu'))
  assert x.shape == (30, 25, 2, 3)
  np.testing.assert_array_equal(x[:, 6, 0, :2], coco[:, 9, 0])  # left wrist
  np.testing.assert_array_equal(x[..., 2], 0)
  np.testing.assert_array_equal(x[:, :, 1], x[:, :, 0])
  want = predict.window_logits(ntu_model['config'], ntu_model['variables'],
                               np.stack([x[0:20], x[10:30]]), batch_size=4)
  np.testing.assert_allclose([w['logits'] for w in sample['windows']], want, rtol=RTOL,
                             atol=RTOL * np.abs(want).max())


# --------------------------------------------------------------------------- other formats


def test_h2o_take_with_frame_range_reads_like_the_reader(tmp_path):
  root = tmp_path / 'h2o'
  write_h2o_tree(root, num_per_class=1, num_eval_per_class=1, seed=0)
  row = h2o.read_split_file(root / 'label_split' / 'action_val.txt', with_label=False)[0]
  take = root / row['path']
  (clip,) = predict.read_input(str(take), start=row['start_act'], end=row['end_act'])
  want, _ = h2o.load_clip(root, row['path'], row['start_act'], row['end_act'])
  np.testing.assert_array_equal(clip.skeleton, want)
  assert clip.label == h2o.read_frame_label(root, row['path'], row['start_act']) - 1
  (uncapped,) = predict.read_input(str(take / 'cam4'), 'h2o', start=row['start_act'],
                                   end=row['end_act'], capped=False)
  assert len(uncapped.skeleton) == row['end_act'] - row['start_act'] + 1
  config = tiny(h2o_config, 'runlocal')
  x = predict.fit_clip(clip, config)
  assert x.shape == (120, 21, 3, 3)
  names = labels.class_names(config)
  result = predict.predict(config, tiny_variables(config), [clip], batch_size=1, names=names,
                           top_k=36)
  (sample,) = result['samples']
  assert sorted(e['class'] for e in sample['top_k']) == list(range(36))
  assert sample['label_name'] == names[clip.label]


def test_assembly101_json_range_reads_like_the_reader(tmp_path):
  root = tmp_path / 'asb'
  write_assembly101_tree(root, num_per_class=2, seed=0)
  sample = next(iter(assembly101.iter_assembly101_samples(root, 'validation', missing='ignore')))
  path = root / assembly101.POSE_DIR / f'{sample.video}.json'
  (clip,) = predict.read_input(str(path), start=sample.start_frame, end=sample.end_frame)
  np.testing.assert_array_equal(clip.skeleton, sample.skeleton[:sample.length])
  config = tiny(asb_config, 'verb,runlocal')
  x = predict.fit_clip(clip, config)
  assert x.shape == (sample.length, 21, 2, 3)
  with pytest.raises(ValueError, match=f'{path}: no pose frames for --start 99999'):
    predict.read_input(str(path), start=99999, end=99999)


def test_pyskl_pickles_and_npy(sbu_run, tmp_path):
  config, variables = sbu_run['config'], sbu_run['variables']
  rng = np.random.default_rng(1)
  keypoints = [rng.normal(size=(2, 30, 15, 3)).astype(np.float32) * 100 for _ in range(2)]
  annotations = [{'frame_dir': 'first', 'keypoint': keypoints[0], 'label': 4},
                 {'frame_dir': 'second', 'keypoint': keypoints[1]}]
  with open(tmp_path / 'ann.pkl', 'wb') as f:
    pickle.dump({'split': {}, 'annotations': annotations}, f)
  with open(tmp_path / 'bare.pickle', 'wb') as f:
    pickle.dump(annotations[:1], f)
  np.save(tmp_path / 'seq.npy', keypoints[1].transpose(1, 2, 0, 3))
  clips = (predict.read_input(str(tmp_path / 'ann.pkl')) +
           predict.read_input(str(tmp_path / 'bare.pickle')) +
           predict.read_input(str(tmp_path / 'seq.npy')))
  assert [(c.name, c.label) for c in clips] == [('first', 4), ('second', None), ('first', 4),
                                                ('seq', None)]
  np.testing.assert_array_equal(clips[0].skeleton, keypoints[0].transpose(1, 2, 0, 3))
  # Longer than the config's max_frames (46): evaluation's view keeps the first 46, and says so.
  long = predict.Clip('long', 'long.npy', np.concatenate([clips[3].skeleton] * 2))
  notes = []
  result = predict.predict(config, variables, clips + [long], batch_size=2, notes=notes)
  logits = [s['windows'][0]['logits'] for s in result['samples']]
  np.testing.assert_allclose(logits[0], logits[2], rtol=1e-6)   # the same sequence twice
  np.testing.assert_allclose(logits[1], logits[3], rtol=1e-6)   # pickle and .npy alike
  assert result['samples'][0]['label'] == 4
  assert [(w['start'], w['end']) for w in result['samples'][4]['windows']] == [(0, 46)]
  assert notes == ['long.npy (long): 60 frames; like evaluation, only the first 46 are used '
                   '(--window covers them all)']


# --------------------------------------------------------------------------- class names


def test_class_names_fit_every_config():
  configs = [ntu26.get_config('xsub'), ntu120.get_config('xset'), sbu_config.get_config('noisy'),
             h2o_config.get_config(), demo.get_config()]
  configs += [asb_config.get_config(t) for t in ('action', 'verb', 'noun')]
  for config in configs:
    assert len(labels.class_names(config)) == config.model.num_classes
  all120 = labels.class_names('ntu120')
  assert all120[0] == 'drink water' and all120[119].startswith('finger-guessing game')
  for subset, name in (('mutual26', 'ntu_mutual26'), ('mutual11', 'ntu_mutual11/xview')):
    names = labels.class_names(name)
    mapped = {ntu.class_label(l, subset): all120[l] for l in range(120)}
    mapped.pop(-1)
    assert names == [mapped[i] for i in range(len(names))]
  assert labels.class_names('ntu_mutual26/xsub')[8] == 'handshaking'
  assert labels.class_names('sbu_kinect_interaction/clean')[::7] == ['approaching', 'exchanging']
  assert labels.class_names('h2o')[0] == 'grab book' and labels.class_names('h2o')[35] == (
      'squeeze lotion')
  assert len(labels.class_names('assembly101')) == 1380
  assert labels.class_names('assembly101_verb')[:2] == ['pick up', 'put down']
  assert labels.class_names('assembly101_noun')[27] == 'hand'
  for names in map(labels.class_names, labels.LABEL_SETS):
    assert all(n and n == n.strip() for n in names) and len(set(names)) == len(names)
  with pytest.raises(ValueError, match="'kinetics': no class names"):
    labels.class_names('kinetics')


# --------------------------------------------------------------------------- the command line


def test_bad_inputs_fail_in_one_line(sbu_run, ntu_model, tmp_path, capsys):
  (tmp_path / 'seq.xyz').write_text('1 2 3\n')
  np.save(tmp_path / 'coco.npy', np.ones((5, 17, 2, 3), np.float32))
  np.save(tmp_path / 'sbu.npy', np.ones((5, 15, 2, 3), np.float32))
  base = ['--config', SBU_CONFIG, TINY_FLAG, '--checkpoint', sbu_run['orbax']]
  cases = [
      (base + [tmp_path / 'seq.xyz'], f'{tmp_path}/seq.xyz: unknown input format'),
      (base + [tmp_path / 'missing.npy'], f'{tmp_path}/missing.npy: no such file or directory'),
      (base + [tmp_path / 'coco.npy'], f'{tmp_path}/coco.npy: 17 joints per entity, the '
                                       "config's model takes 15"),
      (base + ['--format', 'mocap', tmp_path / 'sbu.npy'], "--format 'mocap': unknown format"),
      (base + ['--start', '3', tmp_path / 'sbu.npy'], '--start/--end apply to h2o and '
                                                      'assembly101 inputs, not npy'),
      # A checkpoint of another config (the NTU model) for the SBU config.
      (['--config', SBU_CONFIG, TINY_FLAG, '--checkpoint', ntu_model['pt'], tmp_path / 'sbu.npy'],
       f'{ntu_model["pt"]}: '),
      (['--config', f'{REPO}/configs/ntu26.py:xsub,runlocal', TINY_FLAG, '--checkpoint',
        ntu_model['pt'], '--adapter', 'mediapipe_hands', tmp_path / 'coco.npy'],
       '--adapter mediapipe_hands: maps into the assembly101, h2o joint layout, not into ntu'),
  ]
  for argv, message in cases:
    code, out, err = run_main(argv, capsys)
    assert code != 0 and out == ''
    assert err.startswith('error: ') and err.count('\n') == 1, err
    assert message in err, err
    assert 'Traceback' not in err
  # Checkpoints of another config, both kinds: the reason, not only the file.
  for config, checkpoint in ((SBU_CONFIG, ntu_model['pt']),
                             (f'{REPO}/configs/ntu26.py:xsub,runlocal', sbu_run['orbax'])):
    code, _, err = run_main(['--config', config, TINY_FLAG, '--checkpoint', checkpoint,
                             tmp_path / 'sbu.npy'], capsys)
    assert code != 0 and err.startswith(f'error: {checkpoint}: ') and err.count('\n') == 1
    assert 'does not fit the model' in err and 'fc.weight' in err, err


def test_flip_y_turns_image_coordinates_upright(ntu_model):
  """Image keypoints (y down) into a model of camera coordinates (y up): --flip_y negates y
  alone, after the scale."""
  rng = np.random.default_rng(0)
  clip = predict.Clip('c', 'c.npy', rng.normal(size=(4, 25, 2, 2)).astype(np.float32))
  plain = predict.fit_clip(clip, ntu_model['config'], scale=2.0)
  flipped = predict.fit_clip(clip, ntu_model['config'], scale=2.0, flip_y=True)
  np.testing.assert_array_equal(flipped[..., 1], -plain[..., 1])
  np.testing.assert_array_equal(flipped[..., [0, 2]], plain[..., [0, 2]])


def test_coco_npy_to_ntu_model_suggests_the_adapter(ntu_model, tmp_path):
  with pytest.raises(ValueError, match=r'17 joints per entity.*\(try --adapter coco17\)'):
    predict.fit_clip(predict.Clip('c', 'c.npy', np.ones((4, 17, 1, 2))), ntu_model['config'])


def test_help_runs_as_a_module():
  proc = subprocess.run([sys.executable, '-m', 'istanet_jax.predict', '--help'], cwd=REPO,
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  assert 'usage: python -m istanet_jax.predict' in proc.stdout
  for flag in ('--window', '--stride', '--adapter', '--output_json', '--top_k', '--[no]flip_y'):
    assert flag in proc.stdout


def test_submission_commands_go_to_the_submissions_module(monkeypatch):
  calls = []
  fake = types.ModuleType('istanet_jax.submissions')
  fake.main = lambda argv: calls.append(list(argv)) or 7
  monkeypatch.setitem(sys.modules, 'istanet_jax.submissions', fake)
  monkeypatch.setattr(istanet_jax, 'submissions', fake, raising=False)
  assert predict.main(['validate', 'sub.json']) == 7
  assert predict.main(['--config', 'x', '--submission_out=s.zip', 'a.npy']) == 7
  assert calls == [['validate', 'sub.json'], ['--config', 'x', '--submission_out=s.zip', 'a.npy']]
