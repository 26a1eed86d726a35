"""The experiment configs against the reference's YAMLs, plus locking, variants and flags.

The reference facts below are transcribed from ISTA-Net's config/*.yaml, main.py's argument
parser (defaults for keys a YAML leaves out), the feeders' and the model's constructor defaults,
so the tests need no reference checkout. Each YAML is listed without its data paths, `debug`,
`work_dir`, `run_mode`, class paths and `cuda_visible_device`; `device` becomes `num_gpus`.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from configs import assembly101, h2o, ntu120, ntu26, sbu
from istanet_jax import torch_compat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# main.py get_parser() defaults.
PARSER_DEFAULTS = dict(
    seed=1, base_lr=0.1, step=[60, 80], optimizer='SGD', nesterov=False, batch_size=256,
    test_batch_size=256, num_epoch=80, weight_decay=0.0005, lr_decay_rate=0.1, warm_up_epoch=5,
    optimizer_betas=[0.9, 0.999], loss='CrossEntropy', loss_args={}, eval_interval=2)
# model/ISTANet.py Model.__init__ defaults.
MODEL_DEFAULTS = dict(use_pes=True, att_drop=0, dropout=0)
# feeders/feeder_{ntu,sbu,h2o}.py Feeder.__init__ defaults. feeder_asb.Feeder has the same ones
# except vel, bone and entity_rearrangement, which it does not have (never applies).
FEEDER_DEFAULTS = dict(
    p_interval=1, random_choose=False, random_shift=False, random_move=False, random_rot=False,
    window_size=-1, normalization=False, bone=False, vel=False, entity_rearrangement=False)
# Feeder options no reference YAML switches on and our pipeline does not implement: a config
# leaves them out, which is only right while the YAML has them off.
UNIMPLEMENTED_FEEDER_OPTIONS = ('random_choose', 'random_shift', 'random_move', 'normalization')
# The feeder options every config spells out (the trainer reads them all).
FEEDER_KEYS = dict(
    train_feeder={'window_size', 'p_interval', 'random_rot', 'entity_rearrangement', 'vel', 'bone'},
    test_feeder={'window_size', 'p_interval', 'vel', 'bone'})
TOP_LEVEL = ('seed', 'optimizer', 'optimizer_betas', 'weight_decay', 'base_lr', 'lr_decay_rate',
             'step', 'warm_up_epoch', 'nesterov', 'loss', 'loss_args', 'batch_size',
             'test_batch_size', 'num_epoch', 'eval_interval')

NTU_BLOCKS = [[64, 64, 16], [64, 64, 16], [64, 128, 32], [128, 128, 32],
              [128, 256, 64], [256, 256, 64], [256, 256, 64], [256, 256, 64]]
SBU_BLOCKS = [[64, 64, 16], [64, 64, 16], [64, 128, 32], [128, 128, 32],
              [128, 256, 64], [256, 256, 64]]
ASB_BLOCKS = [[64, 64, 16], [64, 64, 16], [64, 64, 16], [64, 128, 32], [128, 128, 32],
              [128, 256, 64], [256, 256, 64], [256, 256, 64], [256, 256, 64]]

# config/ntu/ntu26_xsub_joint.yaml (ntu26_xset_joint.yaml differs only in its data paths).
NTU26_YAML = dict(
    seed=1, num_gpus=4,
    train_feeder_args=dict(
        split='train', random_choose=False, random_shift=False, random_move=False,
        window_size=120, normalization=False, random_rot=True, p_interval=[0.5, 1], vel=False,
        bone=False, entity_rearrangement=True),
    test_feeder_args=dict(split='test', window_size=120, p_interval=[0.95], vel=False,
                          bone=False),
    model_args=dict(
        window_size=[20, 1, 2], num_frames=120, num_joints=25, num_persons=2, num_channels=3,
        num_classes=26, num_heads=3, kernel_size=[3, 5], use_pes=True, config=NTU_BLOCKS),
    optimizer='SGD', weight_decay=0.0004, base_lr=0.1, lr_decay_rate=0.1,
    step=[35, 60, 80, 95], warm_up_epoch=5, nesterov=True, loss='LabelSmoothingCrossEntropy',
    loss_args=dict(smoothing=0.1, temperature=1.0), batch_size=32, test_batch_size=32,
    num_epoch=110)


def sbu_yaml(window_size, model_window_size, smoothing):
  """config/sbu/sbu_{clean,noisy}_joint.yaml, which differ only in data paths and these values.

  window_size is the feeders' (and the model's num_frames); model_window_size the model's.
  """
  return dict(
      seed=1, num_gpus=1,
      train_feeder_args=dict(
          split='train', fold=0, random_choose=False, random_shift=False, random_move=False,
          window_size=window_size, normalization=False, random_rot=True, p_interval=[0.5, 1],
          vel=False, bone=False, entity_rearrangement=True),
      test_feeder_args=dict(split='test', fold=0, window_size=window_size, normalization=False,
                            p_interval=[0.95], vel=False, bone=False),
      model_args=dict(
          window_size=model_window_size, num_frames=window_size, num_joints=15, num_persons=2,
          num_channels=3, num_classes=8, num_heads=3, kernel_size=[5, 5], use_pes=True,
          config=SBU_BLOCKS, att_drop=0.1, dropout=0.1),
      optimizer='AdamW', optimizer_betas=[0.9, 0.999], weight_decay=0.0004, base_lr=5e-4,
      lr_decay_rate=0.25, step=[35, 60, 90, 120], warm_up_epoch=5,
      loss='LabelSmoothingCrossEntropy', loss_args=dict(smoothing=smoothing, temperature=1.0),
      batch_size=32, test_batch_size=32, num_epoch=150)


SBU_CLEAN_YAML = sbu_yaml(40, [20, 5, 2], 0.12)
SBU_NOISY_YAML = sbu_yaml(60, [15, 15, 1], 0.15)

# config/h2o/h2o.yaml
H2O_YAML = dict(
    seed=1, num_gpus=2,
    train_feeder_args=dict(
        split='train', random_choose=False, random_shift=False, random_move=False,
        window_size=120, normalization=False, random_rot=True, p_interval=[0.5, 1], vel=False,
        bone=False, entity_rearrangement=False),
    test_feeder_args=dict(split='val', window_size=120, p_interval=[0.95], vel=False,
                          bone=False),
    model_args=dict(
        window_size=[20, 1, 3], num_frames=120, num_joints=21, num_persons=3, num_channels=3,
        num_classes=36, num_heads=3, kernel_size=[3, 5], use_pes=True, config=NTU_BLOCKS),
    optimizer='AdamW', weight_decay=0.0004, base_lr=1e-3, lr_decay_rate=0.2,
    step=[35, 60, 80, 95, 120], warm_up_epoch=5, nesterov=True,
    loss='LabelSmoothingCrossEntropy', loss_args=dict(smoothing=0.15, temperature=1.0),
    batch_size=16, test_batch_size=16, num_epoch=150)


def asb_yaml(num_classes):
  """config/asb/asb_{action,verb,noun}.yaml: identical but for data paths and num_classes."""
  return dict(
      seed=1, num_gpus=4,
      train_feeder_args=dict(
          random_choose=False, random_shift=False, random_move=False, random_rot=True,
          p_interval=[0.5, 1], window_size=120, normalization=False),
      test_feeder_args=dict(window_size=120, p_interval=[0.95]),
      model_args=dict(
          window_size=[20, 1, 2], num_frames=120, num_joints=21, num_persons=2, num_channels=3,
          num_classes=num_classes, num_heads=3, kernel_size=[5, 5], use_pes=True,
          config=ASB_BLOCKS),
      optimizer='SGD', weight_decay=0.0004, base_lr=0.05, lr_decay_rate=0.1, step=[25, 35, 50],
      warm_up_epoch=5, nesterov=True, loss='LabelSmoothingCrossEntropy',
      loss_args=dict(smoothing=0.1, temperature=1.1), batch_size=52, test_batch_size=52,
      num_epoch=60)


# Where a config knowingly differs from its YAML. feeders/feeder_asb.py's __getitem__ never
# reads self.random_rot, so the reference trains Assembly101 without rotation.
ASB_DEVIATIONS = dict(train_feeder_args=dict(random_rot=False))

# (module, arg) -> (YAML facts, deviations, our data keys).
CASES = {
    (ntu26, 'xsub'): (NTU26_YAML, {}, dict(
        dataset='ntu_mutual26/xsub', train_split='train', eval_split='test', max_frames=300)),
    (ntu26, 'xset'): (NTU26_YAML, {}, dict(
        dataset='ntu_mutual26/xset', train_split='train', eval_split='test', max_frames=300)),
    (sbu, 'clean'): (SBU_CLEAN_YAML, {}, dict(
        dataset='sbu_kinect_interaction/clean', train_split='fold1+fold2+fold3+fold4',
        eval_split='fold0', max_frames=46)),
    (sbu, 'noisy'): (SBU_NOISY_YAML, {}, dict(
        dataset='sbu_kinect_interaction/noisy', train_split='fold1+fold2+fold3+fold4',
        eval_split='fold0', max_frames=46)),
    (h2o, ''): (H2O_YAML, {}, dict(
        dataset='h2o', train_split='train', eval_split='validation', max_frames=120)),
    (assembly101, 'action'): (asb_yaml(1380), ASB_DEVIATIONS, dict(
        dataset='assembly101', label_key='label', train_split='train',
        eval_split='validation', max_frames=200)),
    (assembly101, 'verb'): (asb_yaml(24), ASB_DEVIATIONS, dict(
        dataset='assembly101', label_key='verb', train_split='train',
        eval_split='validation', max_frames=200)),
    (assembly101, 'noun'): (asb_yaml(90), ASB_DEVIATIONS, dict(
        dataset='assembly101', label_key='noun', train_split='train',
        eval_split='validation', max_frames=200)),
}
IDS = [f'{m.__name__.split(".")[-1]}:{a}' for m, a in CASES]
# Every config and variant, with its arg for the tiny variant.
ALL = [(ntu26, 'xsub'), (ntu26, 'xset'), (ntu120, 'xsub'), (ntu120, 'xset'), (sbu, 'clean'),
       (sbu, 'noisy'), (h2o, ''), (assembly101, 'action'), (assembly101, 'verb'),
       (assembly101, 'noun')]
ALL_IDS = [f'{m.__name__.split(".")[-1]}:{a}' for m, a in ALL]


def runlocal_arg(arg):
  return f'{arg},runlocal' if arg else 'runlocal'


def as_yaml(value):
  """A config value as the YAML would hold it: tuples (ours, for flag overrides) as lists."""
  if hasattr(value, 'to_dict'):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: as_yaml(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [as_yaml(v) for v in value]
  return value


def check_against_yaml(config, yaml, deviations):
  expected = {**PARSER_DEFAULTS, **yaml}
  for key in TOP_LEVEL:
    assert as_yaml(config[key]) == expected[key], key
  assert as_yaml(config.model) == {**MODEL_DEFAULTS, **yaml['model_args']}
  for ours, theirs in (('train_feeder', 'train_feeder_args'), ('test_feeder', 'test_feeder_args')):
    args = {k: v for k, v in yaml[theirs].items() if k not in ('split', 'fold')}
    full = {**FEEDER_DEFAULTS, **args, **deviations.get(theirs, {})}
    feeder = as_yaml(config[ours])
    assert set(feeder) == FEEDER_KEYS[ours], ours
    assert feeder == {k: full[k] for k in feeder}, ours
    # Every YAML option the config leaves out is one we do not implement, and it is off.
    left_out = {k: v for k, v in args.items() if k not in feeder}
    assert set(left_out) <= set(UNIMPLEMENTED_FEEDER_OPTIONS), (ours, left_out)
    assert not any(left_out.values()), (ours, left_out)
  num_gpus = yaml['num_gpus']
  assert config.bn_group_size == (None if num_gpus == 1 else config.batch_size // num_gpus)


@pytest.mark.parametrize('module,arg', CASES, ids=IDS)
def test_config_equals_reference_yaml(module, arg):
  yaml, deviations, data = CASES[module, arg]
  config = module.get_config(arg)
  check_against_yaml(config, yaml, deviations)
  data = {'label_key': 'label', **data}
  assert {k: config[k] for k in data} == data
  assert config.seed == 1


def test_asb_deviation_is_only_rotation():
  """The one documented difference (README, Fidelity): without it the config differs from
  the YAML at the training feeder, and with the rotation turned back on it equals the YAML."""
  config = assembly101.get_config('action')
  assert ASB_DEVIATIONS == {'train_feeder_args': {'random_rot': False}}
  with pytest.raises(AssertionError, match='train_feeder'):
    check_against_yaml(config, asb_yaml(1380), {})
  config.unlock()
  config.train_feeder.random_rot = True
  check_against_yaml(config, asb_yaml(1380), {})


@pytest.mark.parametrize('split_scheme', ['xsub', 'xset'])
def test_ntu120_is_ntu26_with_120_classes(split_scheme):
  config = ntu120.get_config(split_scheme)
  yaml = {**NTU26_YAML, 'model_args': {**NTU26_YAML['model_args'], 'num_classes': 120}}
  check_against_yaml(config, yaml, {})
  assert config.dataset == f'ntu120/{split_scheme}'
  assert (config.train_split, config.eval_split, config.max_frames) == ('train', 'test', 300)


@pytest.mark.parametrize('version', ['clean', 'noisy'])
def test_sbu_folds(version):
  yaml = SBU_CLEAN_YAML if version == 'clean' else SBU_NOISY_YAML
  # The YAML's fold 0 is the default.
  assert sbu.get_config(version).eval_split == f'fold{yaml["test_feeder_args"]["fold"]}'
  for fold in range(5):
    config = sbu.get_config(f'{version},fold={fold}')
    assert config.eval_split == f'fold{fold}'
    assert config.train_split.split('+') == [f'fold{k}' for k in range(5) if k != fold]
    check_against_yaml(config, yaml, {})


def find_lists(value, path='config'):
  if hasattr(value, 'items'):
    return [p for k, v in value.items() for p in find_lists(v, f'{path}.{k}')]
  if isinstance(value, tuple):
    return [p for i, v in enumerate(value) for p in find_lists(v, f'{path}[{i}]')]
  return [path] if isinstance(value, list) else []


@pytest.mark.parametrize('module,arg', ALL, ids=ALL_IDS)
def test_sequences_are_tuples(module, arg):
  # ml_collections' flags override tuples but refuse lists.
  for config in (module.get_config(arg), module.get_config(runlocal_arg(arg))):
    assert find_lists(config) == []


@pytest.mark.parametrize('module,arg', ALL, ids=ALL_IDS)
def test_configs_are_locked(module, arg):
  config = module.get_config(arg)
  with pytest.raises(AttributeError, match='cannot be added since the config is locked'):
    config.batchsize = 16
  with pytest.raises(AttributeError, match='cannot be added since the config is locked'):
    config.model.num_head = 2
  with pytest.raises(AttributeError, match='cannot be added since the config is locked'):
    config.train_feeder.random_shift = True
  config.batch_size = 8  # existing keys stay settable, as for --config.* overrides


@pytest.mark.parametrize('module,arg', ALL, ids=ALL_IDS)
def test_runlocal_shrinks_only_size(module, arg):
  full, tiny = module.get_config(arg), module.get_config(runlocal_arg(arg))
  assert len(tiny.model.config) < len(full.model.config)
  assert max(b[1] for b in tiny.model.config) < max(b[1] for b in full.model.config)
  assert tiny.batch_size < full.batch_size and tiny.num_epoch < full.num_epoch
  assert tiny.bn_group_size is None
  changed = {'batch_size', 'test_batch_size', 'num_epoch', 'warm_up_epoch', 'step',
             'bn_group_size', 'log_every_steps', 'model'}
  for key in full:
    if key not in changed:
      assert tiny[key] == full[key], key
  same_model = {k: v for k, v in full.model.items() if k not in ('config', 'num_heads')}
  assert {k: tiny.model[k] for k in same_model} == same_model


@pytest.mark.parametrize('module,arg', ALL, ids=ALL_IDS)
def test_models_build(module, arg):
  """Full and tiny models trace at their batch size and BatchNorm group (shapes only)."""
  for config in (module.get_config(arg), module.get_config(runlocal_arg(arg))):
    model = torch_compat.model_from_reference_args(config.model.to_dict(),
                                                   bn_group_size=config.bn_group_size)
    m = config.model
    x = jax.ShapeDtypeStruct(
        (config.batch_size, m.num_frames, m.num_joints, m.num_persons, m.num_channels),
        jnp.float32)
    assert model.input_shape(config.batch_size) == x.shape
    variables = model.variable_shapes()
    logits, _ = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, rngs={'dropout': jax.random.key(1)},
                                 mutable=['batch_stats']), variables, x)
    assert logits.shape == (config.batch_size, m.num_classes)


@pytest.mark.parametrize('module,arg,match', [
    (sbu, 'clean,fold=7', r'sbu fold must be in 0\.\.4, got 7'),
    (sbu, 'noisy,fold=-1', r'sbu fold must be in 0\.\.4, got -1'),
    (sbu, 'dirty', "sbu version must be clean or noisy, got 'dirty'"),
    (sbu, 'clean,fold=x', "config argument fold='x' is not a int"),
    (sbu, 'clean,folds=1', "unknown config argument 'folds'"),
    (sbu, 'clean,runlocal=maybe', "config argument runlocal='maybe' is not a bool"),
    (sbu, 'clean,noisy', "unknown config argument 'noisy'"),
    (assembly101, 'object', "assembly101 task must be one of .*, got 'object'"),
    (h2o, 'val', "unknown config argument 'val'"),
    (ntu26, 'xview', "ntu26 benchmark must be xsub or xset, got 'xview'"),
    (ntu120, 'xview', "ntu120 benchmark must be xsub or xset, got 'xview'"),
])
def test_bad_args_raise(module, arg, match):
  with pytest.raises(ValueError, match=match):
    module.get_config(arg)


@pytest.mark.parametrize('module', [ntu26, ntu120, sbu, h2o, assembly101])
def test_docstring_has_run_command_and_expected_result(module):
  name = module.__name__.split('.')[-1]
  assert f'--config configs/{name}.py' in module.__doc__
  assert 'Expected:' in module.__doc__


# A tiny absl app, as a training script would read its config.
FLAGS_APP = """
import json
from absl import app, flags
from ml_collections import config_flags
config_flags.DEFINE_config_file('config')
def main(_):
  print(json.dumps(flags.FLAGS.config.to_dict()))
app.run(main)
"""


def run_flags_app(*argv):
  return subprocess.run([sys.executable, '-c', FLAGS_APP, *argv], cwd=REPO, text=True,
                        capture_output=True, timeout=60)


def test_command_line_overrides():
  result = run_flags_app('--config', 'configs/sbu.py:noisy,fold=3', '--config.batch_size=64',
                         '--config.model.dropout=0.2', '--config.step=(10, 20, 30)',
                         '--config.train_feeder.p_interval=(0.6, 1.0)')
  assert result.returncode == 0, result.stderr
  config = json.loads(result.stdout)
  assert config['batch_size'] == 64 and config['test_batch_size'] == 32
  assert config['model']['dropout'] == 0.2 and config['step'] == [10, 20, 30]
  assert config['train_feeder']['p_interval'] == [0.6, 1.0]
  assert config['dataset'] == 'sbu_kinect_interaction/noisy'
  assert (config['train_split'], config['eval_split']) == ('fold0+fold1+fold2+fold4', 'fold3')
  assert config['model']['window_size'] == [15, 15, 1] and config['loss_args']['smoothing'] == 0.15
  assert config['bn_group_size'] is None


def test_command_line_batch_size_keeps_per_gpu_batchnorm():
  # H2O's BatchNorm group follows the batch size: the reference's two GPUs each see half.
  result = run_flags_app('--config', 'configs/h2o.py', '--config.batch_size=32')
  assert result.returncode == 0, result.stderr
  config = json.loads(result.stdout)
  assert (config['batch_size'], config['bn_group_size']) == (32, 16)


def test_command_line_unknown_key_fails():
  result = run_flags_app('--config', 'configs/h2o.py', '--config.batchsize=32')
  assert result.returncode != 0
  assert 'batchsize' in result.stderr


def test_in_process_batch_size_override_keeps_per_gpu_batchnorm():
  for module, arg, gpus in ((ntu26, 'xsub', 4), (ntu120, 'xset', 4), (h2o, '', 2),
                            (assembly101, 'noun', 4)):
    config = module.get_config(arg)
    config.batch_size = 64
    assert config.bn_group_size == 64 // gpus, module.__name__
