"""SBU reader against the reference's `get_SBU` output on the synthetic tree, plus error cases.

Expected outputs: tests/data/sbu/, written by tests/tools/make_sbu_expected.py.
"""

import os
import shutil

import numpy as np
import pytest

from data_pipelines import sbu
from data_pipelines.common import DataError
from data_pipelines.synthetic_sbu_h2o import SBU_DEFAULT_PAIRS, write_sbu_tree
from reference_outputs import digest, load_arrays, load_expected, tree_digest

EXPECTED = load_expected('sbu')


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
  root = write_sbu_tree(str(tmp_path_factory.mktemp('sbu')), **EXPECTED['tree_kwargs'])
  return root


def test_generator_is_the_one_the_expected_outputs_came_from(tree):
  assert tree_digest(tree) == EXPECTED['tree_digest']


@pytest.mark.parametrize('version', ['Clean', 'Noisy'])
@pytest.mark.parametrize('fold', range(5))
@pytest.mark.parametrize('split', ['train', 'test'])
def test_matches_reference(tree, version, fold, split):
  ref = EXPECTED['versions'][version]
  ref_split = ref['splits'][f'fold{fold}_{split}']
  samples = list(sbu.iter_sbu_samples(tree, version=version.lower(),
                                      folds=sbu.split_folds(fold, split)))
  names = [s.sample_name for s in samples]
  # Same samples; the reference's order within a label directory is os.listdir's, ours sorted.
  assert sorted(names) == sorted(ref_split['names'])
  pair_order = [p for k in sbu.split_folds(fold, split) for p in sbu.fold_pairs(k)]
  key = lambda n: (pair_order.index(n.split('/')[0]), n.split('/')[1], n.split('/')[2])
  assert names == sorted(ref_split['names'], key=key)
  ref_labels = dict(zip(ref_split['names'], ref_split['labels']))
  for s in samples:
    assert s.label == ref_labels[s.sample_name]
    assert s.skeleton.shape == (46, 15, 2, 3) and s.skeleton.dtype == np.float32
    assert s.length == 46  # every frame, padding included, is non-zero in the reference
    assert digest(s.skeleton) == ref['digests'][s.sample_name], s.sample_name


def test_full_arrays_bit_exact(tree):
  arrays = load_arrays('sbu')
  assert len(arrays) == 6
  for key in arrays:
    version, name = key.split('/', 1)
    path = os.path.join(tree, version, name, 'skeleton_pos.txt')
    skeleton, length = sbu.load_sequence(path)
    np.testing.assert_array_equal(skeleton, arrays[key])
    assert length == 46


def test_pad_quirk_and_truncation(tree):
  short = os.path.join(tree, 'Clean', 's01s02', '01', '001', 'skeleton_pos.txt')   # 12 frames
  long = os.path.join(tree, 'Clean', 's01s02', '02', '001', 'skeleton_pos.txt')    # 60 frames
  quirk, _ = sbu.load_sequence(short)
  np.testing.assert_array_equal(quirk[12:], np.broadcast_to([1280, 960, 0], (34, 15, 2, 3)))
  fixed, length = sbu.load_sequence(short, pad_quirk=False)
  assert length == 12 and fixed.shape == (46, 15, 2, 3)
  np.testing.assert_array_equal(fixed[:12], quirk[:12])
  assert not fixed[12:].any()
  whole, length = sbu.load_sequence(long, max_frames=None)
  assert length == 60 and whole.shape == (60, 15, 2, 3)
  cut, length = sbu.load_sequence(long, pad_quirk=False)
  assert length == 46
  np.testing.assert_array_equal(cut, whole[:46])


def test_layout_and_denormalisation(tmp_path):
  values = np.arange(90, dtype=np.float64).reshape(2, 15, 3) / 100  # person, joint, xyz
  path = tmp_path / 'skeleton_pos.txt'
  path.write_text('1,' + ','.join(repr(float(v)) for v in values.ravel()) + '\n')
  skeleton, _ = sbu.load_sequence(path, max_frames=None)
  expected = np.stack([1280 - values[..., 0] * 2560, 960 - values[..., 1] * 1920,
                       values[..., 2] * 10000 / 7.8125], -1)
  np.testing.assert_array_equal(skeleton[0], expected.transpose(1, 0, 2).astype(np.float32))


def test_fold_lists_and_missing_pairs(tree):
  assert [len(sbu.fold_pairs(k)) for k in range(5)] == [4, 4, 4, 4, 5]
  assert sbu.split_folds(2, 'train') == [0, 1, 3, 4] and sbu.split_folds(2, 'test') == [2]
  present = set(SBU_DEFAULT_PAIRS)
  missing = sbu.missing_pairs(tree, version='noisy')
  assert missing == {k: [p for p in sbu.FOLD_PAIRS[k] if p not in present] for k in range(5)}
  all_names = {s.sample_name for s in sbu.iter_sbu_samples(tree, version='clean', folds=range(5))}
  assert not any(n.startswith('s08s09') for n in all_names)
  assert not any(n.startswith('s04s02/03/') for n in all_names)
  assert {int(n.split('/')[1]) for n in all_names} == set(range(1, 9))
  with pytest.raises(ValueError, match=r'fold must be in 0\.\.4, got 5'):
    sbu.fold_pairs(5)


def test_stray_files_are_skipped(tmp_path):
  root = write_sbu_tree(tmp_path / 'sbu', num_per_class=1, pairs=('s01s02',), versions=('Clean',))
  (tmp_path / 'sbu' / 'Clean' / 's01s02' / '01' / '.DS_Store').write_text('x')
  names = [s.sample_name for s in sbu.iter_sbu_samples(root, version='clean', folds=[0])]
  assert len(names) == 8


def _one_seq_tree(tmp_path, content):
  seq = tmp_path / 'Clean' / 's01s02' / '01' / '001'
  seq.mkdir(parents=True)
  (seq / 'skeleton_pos.txt').write_text(content)
  return seq / 'skeleton_pos.txt'


def _read(tmp_path):
  return list(sbu.iter_sbu_samples(tmp_path, version='clean', folds=[0]))


def _line(frame, n=90, value='0.5'):
  return ','.join([str(frame)] + [value] * n) + '\n'


@pytest.mark.parametrize('content,reason,line', [
    (_line(1) + _line(2, n=89), 'expected 91 comma-separated values', 2),
    (_line(1) + _line(2) + _line(3, n=91), 'expected 91', 3),
    (_line(1, value='0.5x'), "non-numeric value '0.5x'", 1),
    (_line(1) + _line(2, value='nan'), 'non-finite', 2),
    ('', 'empty skeleton file', None),
    ('\n\n', 'empty skeleton file', None),
])
def test_malformed_files(tmp_path, content, reason, line):
  path = _one_seq_tree(tmp_path, content)
  with pytest.raises(DataError) as err:
    _read(tmp_path)
  assert err.value.path == str(path) and err.value.line == line
  assert reason in err.value.reason


def test_missing_file_and_version_dir(tmp_path):
  path = _one_seq_tree(tmp_path, _line(1))
  os.remove(path)
  with pytest.raises(DataError, match='missing skeleton_pos.txt') as err:
    _read(tmp_path)
  assert err.value.path == str(path)
  path.write_bytes(b'1,\xff\xfe\n')  # a corrupt download: named, not a bare UnicodeDecodeError
  with pytest.raises(DataError, match='skeleton_pos.txt is not a text file') as err:
    _read(tmp_path)
  assert err.value.path == str(path)
  shutil.rmtree(tmp_path / 'Clean')
  with pytest.raises(DataError, match='no such directory'):
    _read(tmp_path)
