"""The TFDS builders and `python -m data_pipelines.prepare` against the raw readers.

Every dataset is built from its synthetic raw tree and read back (array_record through
`as_data_source`, tfrecord through `as_dataset`); the examples must be the reader's samples,
split by split, with bit-identical arrays.
"""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import assembly101, builders, h2o, ntu, prepare, sbu
from data_pipelines.common import DataError
from data_pipelines.synthetic_assembly101 import write_assembly101_tree
from data_pipelines.synthetic_ntu import EMPTY_FILE_NAME, write_ntu_tree
from data_pipelines.synthetic_sbu_h2o import write_h2o_tree, write_sbu_tree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def raw(tmp_path_factory):
  root = tmp_path_factory.mktemp('raw')
  return {
      'ntu': write_ntu_tree(root / 'ntu', num_per_class=3),
      'sbu': write_sbu_tree(root / 'sbu', num_per_class=1),
      'h2o': write_h2o_tree(root / 'h2o', num_per_class=1),
      'assembly101': write_assembly101_tree(root / 'assembly101', num_per_class=1),
  }


def _build(dataset, manual_dir, data_dir, file_format, **kwargs):
  return prepare.prepare(dataset, manual_dir, data_dir, file_format=file_format, **kwargs)


def _read(builder, split, file_format):
  """{sample_name: example} with numpy values and str names."""
  if file_format == 'array_record':
    source = builder.as_data_source(split=split)
    examples = [source[i] for i in range(len(source))]
  else:
    examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
  out = {}
  for ex in examples:
    name = ex['sample_name'].decode()
    assert name not in out, f'duplicate {name} in {split}'
    out[name] = ex
  return out


def _assert_same(examples, samples, extras=()):
  """The examples are exactly the samples: names, labels, lengths, extras and array bits."""
  assert sorted(examples) == sorted(s.sample_name for s in samples)
  for s in samples:
    ex = examples[s.sample_name]
    assert ex['skeleton'].dtype == np.float32 and ex['skeleton'].shape == s.skeleton.shape
    assert ex['skeleton'].tobytes() == s.skeleton.tobytes(), s.sample_name
    assert int(ex['label']) == s.label and int(ex['length']) == s.length
    for key, value in extras:
      expected = value(s)
      assert ex[key] == expected, (s.sample_name, key, ex[key], expected)


def _quiet(samples):
  """The reader's samples, without the warnings the builders are tested for."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    return list(samples)


def _ntu_samples(root, benchmark, split, classes, dataset='ntu120'):
  return _quiet(ntu.iter_ntu_samples(root, benchmark=benchmark, split=split, classes=classes,
                                     dataset=dataset))


@pytest.mark.parametrize('config,file_format,num_workers', [
    ('xsub', 'array_record', 2),   # also the process-pool path
    ('xsub', 'tfrecord', 0),
    ('xset', 'array_record', 0),
])
def test_ntu_mutual26(raw, tmp_path, config, file_format, num_workers):
  with pytest.warns(UserWarning, match=f'{EMPTY_FILE_NAME}.skeleton: skipped'):
    builder = _build(f'ntu_mutual26/{config}', raw['ntu'], tmp_path, file_format,
                     num_workers=num_workers)
  assert set(builder.info.splits) == {'train', 'test'}
  assert builder.info.features['skeleton'].shape == (None, 25, 2, 3)
  for split in ('train', 'test'):
    samples = _ntu_samples(raw['ntu'], config, split, 'mutual26')
    assert samples and builder.info.splits[split].num_examples == len(samples)
    _assert_same(_read(builder, split, file_format), samples)


@pytest.mark.parametrize('dataset,classes,ntu_dataset', [
    ('ntu120/xsub', 'all120', 'ntu120'),
    ('ntu_mutual11/xview', 'mutual11', 'ntu60'),
])
def test_ntu120_and_mutual11(raw, tmp_path, dataset, classes, ntu_dataset):
  with pytest.warns(UserWarning, match='every frame is empty'):
    builder = _build(dataset, raw['ntu'], tmp_path, 'tfrecord', num_workers=0)
  benchmark = dataset.split('/')[1]
  for split in ('train', 'test'):
    samples = _ntu_samples(raw['ntu'], benchmark, split, classes, ntu_dataset)
    assert samples
    _assert_same(_read(builder, split, 'tfrecord'), samples)
  if ntu_dataset == 'ntu60':  # setups >= 18 are NTU120 only
    names = _read(builder, 'train+test', 'tfrecord')
    assert all(int(n[1:4]) < ntu.FIRST_SETUP_120 for n in names)


def test_sbu_folds_and_split_arithmetic(raw, tmp_path):
  with pytest.warns(UserWarning, match='lacks pairs'):  # the synthetic tree has one pair a fold
    builder = _build('sbu_kinect_interaction/noisy', raw['sbu'], tmp_path, 'tfrecord')
  assert set(builder.info.splits) == {f'fold{k}' for k in range(5)}
  assert builder.info.features['skeleton'].shape == (None, 15, 2, 3)
  for k in range(sbu.NUM_FOLDS):
    for split in ('train', 'test'):
      tfds_split = builders.sbu_train_split(k) if split == 'train' else builders.sbu_fold_split(k)
      samples = list(sbu.iter_sbu_samples(raw['sbu'], version='noisy',
                                          folds=sbu.split_folds(k, split)))
      _assert_same(_read(builder, tfds_split, 'tfrecord'), samples)
  assert builders.sbu_train_split(1) == 'fold0+fold2+fold3+fold4'


def test_sbu_missing_fold_is_left_out_with_a_warning(tmp_path):
  # No pair of fold 2 (s01s03 is the tree's only one) and a pair in no fold.
  root = write_sbu_tree(tmp_path / 'raw', num_per_class=1, versions=('Clean',),
                        pairs=('s01s02', 's02s03', 's02s01', 's04s02', 's08s09'))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    builder = _build('sbu_kinect_interaction/clean', root, tmp_path / 'data', 'array_record')
  messages = [str(w.message) for w in caught]
  assert any(m.endswith('fold 2 left out, it has no sequences (missing pairs: s01s03, s01s07, '
                        's07s01, s07s03)') for m in messages), messages
  assert any(m.endswith('fold 0 lacks pairs s03s04, s05s02, s06s04') for m in messages)
  assert set(builder.info.splits) == {'fold0', 'fold1', 'fold3', 'fold4'}
  samples = list(sbu.iter_sbu_samples(root, version='clean', folds=[0, 1, 3, 4]))
  _assert_same(_read(builder, 'fold0+fold1+fold3+fold4', 'array_record'), samples)


def test_h2o(raw, tmp_path):
  builder = _build('h2o', raw['h2o'], tmp_path, 'tfrecord')
  assert builder.info.features['skeleton'].shape == (None, 21, 3, 3)
  for split in ('train', 'validation', 'test'):
    samples = list(h2o.iter_h2o_samples(raw['h2o'], split))
    assert samples
    _assert_same(_read(builder, split, 'tfrecord'), samples, extras=[('id', lambda s: s.id)])
    if split == 'test':
      assert all(s.label == -1 for s in samples)


def test_assembly101(raw, tmp_path):
  with pytest.warns(UserWarning, match='skipped as in the reference'):
    builder = _build('assembly101', raw['assembly101'], tmp_path, 'tfrecord')
  assert builder.info.features['skeleton'].shape == (None, 21, 2, 3)
  for split in assembly101.SPLITS:
    samples = _quiet(assembly101.iter_assembly101_samples(raw['assembly101'], split))
    extras = [('id', lambda s: s.id), ('verb', lambda s: -1 if s.verb is None else s.verb),
              ('noun', lambda s: -1 if s.noun is None else s.noun),
              ('pose_missing', lambda s: s.pose_missing)]
    _assert_same(_read(builder, split, 'tfrecord'), samples, extras)
  test = _read(builder, 'test', 'tfrecord')
  assert any(ex['pose_missing'] for ex in test.values())  # the tree has such rows


def test_cli_builds_and_reports(raw, tmp_path, capsys):
  data_dir = tmp_path / 'data'
  with pytest.warns(UserWarning, match='every frame is empty'):
    assert prepare.main(['--dataset', 'ntu_mutual26/xset', '--manual_dir', raw['ntu'],
                         '--data_dir', str(data_dir), '--num_workers', '0']) == 0
  out = capsys.readouterr().out
  assert 'ntu_mutual26/xset/1.0.0 (array_record)' in out and 'train: ' in out
  builder = tfds.builder('ntu_mutual26/xset', data_dir=data_dir)
  samples = _ntu_samples(raw['ntu'], 'xset', 'test', 'mutual26')
  _assert_same(_read(builder, 'test', 'array_record'), samples)


@pytest.mark.parametrize('argv_dataset,message', [
    ('ntu_mutual27/xsub', "unknown dataset 'ntu_mutual27'; choose one of ntu_mutual26"),
    ('ntu_mutual26/xview', "unknown config 'xview' for ntu_mutual26; choose one of: xsub, xset"),
    ('ntu_mutual26', 'ntu_mutual26 needs a config: ntu_mutual26/xsub, ntu_mutual26/xset'),
    ('h2o/clean', "unknown config 'clean' for h2o; choose one of: none (h2o has no configs)"),
])
def test_cli_rejects_unknown_names(tmp_path, capsys, argv_dataset, message):
  with pytest.raises(SystemExit) as exit_info:
    prepare.main(['--dataset', argv_dataset, '--manual_dir', str(tmp_path),
                  '--data_dir', str(tmp_path / 'data')])
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


@pytest.mark.parametrize('dataset,layout,missing', [
    ('ntu_mutual26/xsub', ['other/'], 'lacks nturgb+d_skeletons/, nturgb+d_skeletons120/;'),
    ('ntu_mutual26/xsub', ['nturgb+d_skeletons/'], 'lacks nturgb+d_skeletons120/;'),
    ('ntu120/xset', ['nturgb+d_skeletons120/'], 'lacks nturgb+d_skeletons/;'),
    ('ntu_mutual11/xsub', ['nturgb+d_skeletons120/'], 'lacks nturgb+d_skeletons/;'),
    ('sbu_kinect_interaction/noisy', ['Clean/'], 'lacks Noisy/'),
    ('h2o', ['label_split/'], 'lacks subject*/'),
    ('assembly101', ['poses_60fps/', 'fine-grained-annotations'], 'lacks fine-grained-annotations/'),
])
def test_cli_rejects_incomplete_manual_dir(tmp_path, capsys, dataset, layout, missing):
  manual = tmp_path / 'manual'
  for entry in layout:
    path = manual / entry
    if entry.endswith('/'):
      path.mkdir(parents=True)
    else:  # a file where a folder belongs
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text('')
  with pytest.raises(SystemExit) as exit_info:
    prepare.main(['--dataset', dataset, '--manual_dir', str(manual),
                  '--data_dir', str(tmp_path / 'data')])
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert str(manual) in err and missing in err and 'the builder expects' in err
  with pytest.raises(DataError, match='does not exist'):
    prepare.prepare(dataset, tmp_path / 'absent', tmp_path / 'data')


def test_spill_to_disk_without_tensorflow_io(raw, tmp_path, monkeypatch):
  """TFDS's shuffler spills through epath, not TensorFlow, and the data are the same."""
  from tensorflow_datasets.core import shuffle

  class NoTensorflow:
    def __getattr__(self, name):
      raise AssertionError(f'tf.{name} used')

  no_tf = NoTensorflow()
  monkeypatch.setattr(shuffle, 'tf', no_tf)
  spilled, add = [], shuffle._Bucket.add  # pylint: disable=protected-access
  monkeypatch.setattr(shuffle._Bucket, 'add',  # pylint: disable=protected-access
                      lambda self, key, data: spilled.append(key) or add(self, key, data))
  tfds_cap = shuffle.MAX_MEM_BUFFER_SIZE
  builder = _build('h2o', raw['h2o'], tmp_path, 'array_record', shuffle_buffer_mb=0)  # spill all
  assert spilled  # the buckets were written: through epath, since tf is not there
  assert shuffle.tf is no_tf and shuffle.MAX_MEM_BUFFER_SIZE == tfds_cap  # both restored
  assert not list(tmp_path.glob('**/bucket_*.tmp'))
  for split in ('train', 'test'):
    _assert_same(_read(builder, split, 'array_record'), list(h2o.iter_h2o_samples(raw['h2o'],
                                                                                  split)))
  monkeypatch.setattr(prepare, '_has_tensorflow', lambda: False)
  with pytest.raises(prepare.MissingTensorflowError, match='tfrecord files are written by TensorFlow'):
    _build('h2o', raw['h2o'], tmp_path / 'other', 'tfrecord')


def test_package_import_is_light_and_registers_after_tfds():
  code = ('import sys, data_pipelines, data_pipelines.ntu, data_pipelines.prepare; '
          'print(sorted(m for m in ("tensorflow", "tensorflow_datasets") if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True, capture_output=True,
                       text=True).stdout
  assert out.strip() == '[]'
  code = ('import tensorflow_datasets as tfds, data_pipelines; '
          'print(tfds.builder("sbu_kinect_interaction/clean").name)')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True, capture_output=True,
                       text=True).stdout
  assert out.strip().endswith('sbu_kinect_interaction')


def test_cli_names_a_malformed_file(tmp_path, capsys):
  root = write_sbu_tree(tmp_path / 'raw', num_per_class=1, versions=('Clean',),
                        pairs=('s01s02',))
  bad = tmp_path / 'raw' / 'Clean' / 's01s02' / '02' / '001' / 'skeleton_pos.txt'
  bad.write_text('1,0.5,0.5\n')
  with pytest.raises(SystemExit) as exit_info, warnings.catch_warnings():
    warnings.simplefilter('ignore')  # the folds this tree lacks
    prepare.main(['--dataset', 'sbu_kinect_interaction/clean', '--manual_dir', root,
                  '--data_dir', str(tmp_path / 'data')])
  assert exit_info.value.code == 1
  assert f'{bad}:1: expected 91 comma-separated values' in capsys.readouterr().err
