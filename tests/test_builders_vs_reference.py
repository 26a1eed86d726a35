"""The TFDS builders, read back from array_record, against the reference's stored outputs.

tests/test_builders.py checks the builders against our readers and the reader tests check the
readers against tests/data/; this file closes the loop directly: each dataset's synthetic tree is
written exactly as its reader test writes it, prepared with `prepare(..., 'array_record')`, and
every split read back must hold the reference's samples (as tests/tools/make_*_expected.py
stored them), with the same labels, ids, lengths and array bits. Builder splits are unordered
(TFDS writes them in key-hash order), so samples are compared by key, never by position.
"""

import collections
import warnings

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import sbu
from data_pipelines.prepare import prepare
from data_pipelines.synthetic_assembly101 import write_assembly101_tree
from data_pipelines.synthetic_ntu import write_ntu_tree
from data_pipelines.synthetic_sbu_h2o import write_h2o_tree, write_sbu_tree
from reference_outputs import digest, load_arrays, load_expected, tree_digest


def _build(dataset, manual_dir, data_dir, **kwargs):
  """Prepares `dataset` as array_record; the builder read back as a user would get it."""
  # The builders' own warnings (empty NTU file, SBU's missing pairs) are tested elsewhere.
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    prepare(dataset, manual_dir, data_dir, file_format='array_record', **kwargs)
  return tfds.builder(dataset, data_dir=str(data_dir))


def _read(builder, split):
  """The split's examples in file order, names decoded to str."""
  source = builder.as_data_source(split=split)
  examples = [source[i] for i in range(len(source))]
  for ex in examples:
    ex['sample_name'] = ex['sample_name'].decode()
    assert ex['skeleton'].dtype == np.float32
  return examples


def _by_name(examples):
  out = {ex['sample_name']: ex for ex in examples}
  assert len(out) == len(examples), 'duplicate sample names'
  return out


# ----------------------------------------------------------------------------- NTU

@pytest.fixture(scope='module')
def ntu_built(tmp_path_factory):
  # make_ntu_expected.py writes the tree with write_ntu_tree's defaults and stores no digest;
  # the per-sample arrays below pin the tree instead.
  root = tmp_path_factory.mktemp('ntu_raw')
  tree = write_ntu_tree(root / 'raw')
  out = tmp_path_factory.mktemp('ntu_tfds')
  return {name: _build(name, tree, out, num_workers=0)
          for name in ('ntu_mutual26/xsub', 'ntu_mutual26/xset', 'ntu120/xsub', 'ntu120/xset')}


@pytest.fixture(scope='module')
def ntu_expected():
  return load_expected('ntu', arrays='expected.npz')


def _assert_ntu_arrays(examples, ntu_expected):
  for name, ex in examples.items():
    assert int(ex['length']) == ex['skeleton'].shape[0] == ntu_expected['lengths'][name], name
    np.testing.assert_array_equal(ex['skeleton'], ntu_expected['arrays'][name], err_msg=name)


@pytest.mark.parametrize('bench', ['xsub', 'xset'])
@pytest.mark.parametrize('split', ['train', 'test'])
def test_ntu_mutual26_matches_feeder(ntu_built, ntu_expected, bench, split):
  ref = ntu_expected['feeder_mutual26'][bench][split]
  examples = _by_name(_read(ntu_built[f'ntu_mutual26/{bench}'], split))
  assert sorted(examples) == sorted(ref['names'])
  assert {n: int(ex['label']) for n, ex in examples.items()} == dict(
      zip(ref['names'], ref['labels']))
  _assert_ntu_arrays(examples, ntu_expected)


@pytest.mark.parametrize('bench', ['xsub', 'xset'])
@pytest.mark.parametrize('split', ['train', 'test'])
def test_ntu120_matches_reference_splits(ntu_built, ntu_expected, bench, split):
  examples = _by_name(_read(ntu_built[f'ntu120/{bench}'], split))
  assert sorted(examples) == sorted(ntu_expected['splits'][bench][split])
  assert all(int(ex['label']) == int(n[-3:]) - 1 for n, ex in examples.items())
  _assert_ntu_arrays(examples, ntu_expected)


# ----------------------------------------------------------------------------- SBU

SBU = load_expected('sbu')


@pytest.fixture(scope='module')
def sbu_built(tmp_path_factory):
  tree = write_sbu_tree(str(tmp_path_factory.mktemp('sbu_raw')), **SBU['tree_kwargs'])
  assert tree_digest(tree) == SBU['tree_digest']
  out = tmp_path_factory.mktemp('sbu_tfds')
  return {version: _build(f'sbu_kinect_interaction/{version.lower()}', tree, out)
          for version in ('Clean', 'Noisy')}


@pytest.mark.parametrize('version', ['Clean', 'Noisy'])
@pytest.mark.parametrize('fold', range(5))
def test_sbu_fold_matches_reference(sbu_built, version, fold):
  ref = SBU['versions'][version]
  ref_split = ref['splits'][f'fold{fold}_test']
  examples = _by_name(_read(sbu_built[version], f'fold{fold}'))
  assert sorted(examples) == sorted(ref_split['names'])
  labels = dict(zip(ref_split['names'], ref_split['labels']))
  for name, ex in examples.items():
    assert int(ex['label']) == labels[name]
    assert ex['skeleton'].shape == (46, 15, 2, 3) and int(ex['length']) == 46
    assert digest(ex['skeleton']) == ref['digests'][name], name
  # The reference's training set of fold k is the union of the other folds.
  train = sorted(n for k in sbu.split_folds(fold, 'train')
                 for n in ref['splits'][f'fold{k}_test']['names'])
  assert train == sorted(ref['splits'][f'fold{fold}_train']['names'])


def test_sbu_full_arrays_bit_exact(sbu_built):
  arrays = load_arrays('sbu')
  examples = {v: {n: ex for k in range(5) for n, ex in _by_name(_read(b, f'fold{k}')).items()}
              for v, b in sbu_built.items()}
  assert len(arrays) == 6
  for key, want in arrays.items():
    version, name = key.split('/', 1)
    np.testing.assert_array_equal(examples[version][name]['skeleton'], want, err_msg=key)


# ----------------------------------------------------------------------------- H2O

H2O = load_expected('h2o')


@pytest.fixture(scope='module')
def h2o_examples(tmp_path_factory):
  tree = write_h2o_tree(str(tmp_path_factory.mktemp('h2o_raw')), **H2O['tree_kwargs'])
  assert tree_digest(tree) == H2O['tree_digest']
  builder = _build('h2o', tree, tmp_path_factory.mktemp('h2o_tfds'))
  return {split: _by_name(_read(builder, split)) for split in ('train', 'validation', 'test')}


@pytest.mark.parametrize('split', ['train', 'validation', 'test'])
def test_h2o_matches_reference(h2o_examples, split):
  ref = H2O['splits'][split]
  examples = h2o_examples[split]
  assert sorted(examples) == sorted(r['name'] for r in ref)
  for r in ref:
    ex = examples[r['name']]
    assert (int(ex['id']), int(ex['label'])) == (r['id'], r['label']), r['name']
    assert ex['skeleton'].shape == (120, 21, 3, 3)
    assert digest(ex['skeleton']) == r['sha256'], r['name']
    _, start, end = r['name'].rsplit(':', 2)
    assert int(ex['length']) == min(int(end) - int(start) + 1, 120)


def test_h2o_full_arrays_bit_exact(h2o_examples):
  arrays = load_arrays('h2o')
  assert len(arrays) == 3
  for key, want in arrays.items():
    split, name = key.split('/', 1)
    np.testing.assert_array_equal(h2o_examples[split][name]['skeleton'], want, err_msg=key)


# ----------------------------------------------------------------------------- Assembly101

def _valid_frames(skeleton):
  """The reference's valid_frame_num: frames whose coordinates do not sum to zero."""
  return int((skeleton.sum(axis=(1, 2, 3)) != 0).sum())


@pytest.fixture(scope='module')
def asb_expected():
  return load_expected('assembly101', arrays='arrays.npz')


@pytest.fixture(scope='module')
def asb_examples(tmp_path_factory, asb_expected):
  tree = write_assembly101_tree(str(tmp_path_factory.mktemp('asb') / 'download'),
                                **asb_expected['tree'])
  assert tree_digest(tree) == asb_expected['tree_sha256']
  builder = _build('assembly101', tree, tmp_path_factory.mktemp('asb_tfds'))
  return {split: _read(builder, split) for split in ('train', 'validation', 'test')}


@pytest.mark.parametrize('split', ['train', 'validation'])
def test_assembly101_labeled_split_matches_reference(asb_examples, asb_expected, split):
  # The reference keys train/validation samples by its step-1 counter, which the examples do not
  # carry: they are matched by the digest of their skeleton (with everything else stored).
  records = asb_expected['splits'][split]
  examples = asb_examples[split]
  key = lambda sha, action, verb, noun, length: (sha, action, verb, noun, length)
  ours = collections.Counter(
      key(digest(ex['skeleton']), int(ex['label']), int(ex['verb']), int(ex['noun']),
          int(ex['length'])) for ex in examples)
  ref = collections.Counter(
      key(r['sha256'], r['action'], r['verb'], r['noun'], min(r['raw_length'], 200))
      for r in records)
  assert ours == ref
  assert all(r['label'] == {'action': r['action'], 'verb': r['verb'], 'noun': r['noun']}
             for r in records)
  for ex in examples:
    assert ex['skeleton'].shape == (200, 21, 2, 3) and not ex['pose_missing']
  assert sorted(_valid_frames(ex['skeleton']) for ex in examples) == sorted(
      r['valid_frame_num'] for r in records)
  by_digest = {digest(ex['skeleton']): ex for ex in examples}
  for i, r in enumerate(records):
    stored = asb_expected['arrays'].get(f'{split}_{i}')
    if stored is not None:
      ex = by_digest[r['sha256']]
      np.testing.assert_array_equal(ex['skeleton'][:int(ex['length'])], stored)
  assert len({ex['sample_name'] for ex in examples}) == len(examples)


def test_assembly101_test_split_matches_reference(asb_examples, asb_expected):
  records = asb_expected['splits']['test']
  examples = {int(ex['id']): ex for ex in asb_examples['test']}
  assert sorted(examples) == [r['id'] for r in records]
  for r in records:
    ex = examples[r['id']]
    assert (int(ex['label']), int(ex['verb']), int(ex['noun'])) == (-1, -1, -1)
    assert bool(ex['pose_missing']) == r['pose_missing']
    assert ex['skeleton'].shape == (200, 21, 2, 3)
    assert _valid_frames(ex['skeleton']) == r['valid_frame_num']
    assert digest(ex['skeleton']) == r['sha256'], r['id']
    stored = asb_expected['arrays'].get(f'test_{r["id"]}')
    if stored is not None:
      np.testing.assert_array_equal(ex['skeleton'][:int(ex['length'])], stored)
