"""H2O reader against the reference's generate_h2o.py output on the synthetic tree, plus errors.

Expected outputs: tests/data/h2o/, written by tests/tools/make_h2o_expected.py.
"""

import glob
import os

import numpy as np
import pytest

from data_pipelines import h2o
from data_pipelines.common import DataError
from data_pipelines.synthetic_sbu_h2o import write_h2o_tree
from reference_outputs import digest, load_arrays, load_expected, tree_digest

EXPECTED = load_expected('h2o')


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
  return write_h2o_tree(str(tmp_path_factory.mktemp('h2o')), **EXPECTED['tree_kwargs'])


@pytest.fixture(scope='module')
def samples(tree):
  return {split: list(h2o.iter_h2o_samples(tree, split))
          for split in ('train', 'validation', 'test')}


def test_generator_is_the_one_the_expected_outputs_came_from(tree):
  assert tree_digest(tree) == EXPECTED['tree_digest']


@pytest.mark.parametrize('split', ['train', 'validation', 'test'])
def test_matches_reference(samples, split):
  ours = samples[split]
  ref = EXPECTED['splits'][split]
  assert [s.sample_name for s in ours] == [r['name'] for r in ref]
  assert [s.id for s in ours] == [r['id'] for r in ref]
  assert [s.label for s in ours] == [r['label'] for r in ref]
  for s, r in zip(ours, ref):
    assert s.skeleton.shape == (120, 21, 3, 3) and s.skeleton.dtype == np.float32
    assert digest(s.skeleton) == r['sha256'], s.sample_name
    _, start, end = s.sample_name.rsplit(':', 2)
    assert s.length == min(int(end) - int(start) + 1, 120)
  if split == 'test':
    assert all(s.label == -1 for s in ours)
  else:
    assert all(0 <= s.label < 36 for s in ours)


def test_full_arrays_bit_exact(samples):
  arrays = load_arrays('h2o')
  assert len(arrays) == 3
  by_name = {(split, s.sample_name): s for split, ss in samples.items() for s in ss}
  for key in arrays:
    split, name = key.split('/', 1)
    np.testing.assert_array_equal(by_name[split, name].skeleton, arrays[key])


def test_centre_crop_and_padding(tree, samples):
  long = samples['train'][0]
  path, start, end = long.sample_name.rsplit(':', 2)
  start, end = int(start), int(end)
  assert end - start + 1 > 120
  whole, length = h2o.load_clip(tree, path, start, end, max_frames=None)
  assert length == end - start + 1 == len(whole)
  st = (len(whole) - 120) // 2
  np.testing.assert_array_equal(long.skeleton, whole[st:st + 120])
  short = next(s for s in samples['train'] if s.length < 120)
  assert not short.skeleton[short.length:].any()
  assert np.abs(short.skeleton[:short.length, :, 2]).min(axis=(1, 2)).all()  # object always there


def test_hand_flag_zero_blanks_that_hand(tree, samples):
  blanked = 0
  for path in sorted(glob.glob(os.path.join(tree, '*', '*', '*', 'cam4', 'hand_pose', '*.txt'))):
    values = np.array(open(path).read().split(), float)
    flags = values[[0, 64]]
    if flags.all():
      continue
    hands = h2o.read_hand_pose(path)
    for m in range(2):
      coords = values[1 + 64 * m:64 * (m + 1)]
      assert coords.any()  # the synthetic tree writes numbers even for an untracked hand
      if flags[m] == 0:
        assert not hands[m].any()
      else:
        np.testing.assert_array_equal(hands[m], coords.reshape(21, 3).astype(np.float32))
    blanked += 1
  assert blanked > 0
  # And such frames reach the samples: some real frame has one hand all zeros.
  assert any((~s.skeleton[:s.length, :, :2].any(axis=(1, 3))).any()
             for ss in samples.values() for s in ss)


def test_validation_labels_come_from_the_frame_files(tmp_path):
  root = write_h2o_tree(tmp_path, num_per_class=1)
  expected = [s.label for s in h2o.iter_h2o_samples(root, 'validation')]
  split = tmp_path / 'label_split' / 'action_val.txt'
  lines = split.read_text().splitlines()
  header = lines[0].split()
  col = header.index('action_label')
  # Drop the column: the reader must not need it.
  split.write_text('\n'.join(' '.join(f for i, f in enumerate(l.split()) if i != col)
                             for l in lines) + '\n')
  assert [s.label for s in h2o.iter_h2o_samples(root, 'validation')] == expected
  first = next(h2o.iter_h2o_samples(root, 'validation'))
  path, start, _ = first.sample_name.rsplit(':', 2)
  label_file = tmp_path / path / 'cam4' / 'action_label' / f'{int(start):06d}.txt'
  label_file.write_text('37\n')
  with pytest.raises(DataError, match='outside 1..36') as err:
    list(h2o.iter_h2o_samples(root, 'validation'))
  assert err.value.path == str(label_file)


@pytest.fixture
def small(tmp_path):
  root = write_h2o_tree(tmp_path, num_per_class=1)
  first = h2o.read_split_file(tmp_path / 'label_split' / 'action_train.txt', with_label=True)[0]
  frame = tmp_path / first['path'] / 'cam4' / 'hand_pose' / f'{first["start_act"] + 1:06d}.txt'
  return root, frame


def _train(root):
  return list(h2o.iter_h2o_samples(root, 'train'))


def test_missing_or_undecodable_files(small):
  root, frame = small
  os.remove(frame)
  with pytest.raises(DataError, match='missing pose file') as err:
    _train(root)
  assert err.value.path == str(frame)
  frame.write_bytes(b'1 \xff\xfe')  # a corrupt download: named, not a bare UnicodeDecodeError
  with pytest.raises(DataError, match='pose file is not a text file') as err:
    _train(root)
  assert err.value.path == str(frame)
  split_file = os.path.join(root, 'label_split', 'action_train.txt')
  with open(split_file, 'wb') as f:
    f.write(b'\xff')
  with pytest.raises(DataError, match='split file is not a text file') as err:
    _train(root)
  assert err.value.path == split_file


@pytest.mark.parametrize('edit,reason', [
    (lambda v: v[:-1], 'expected 128 numbers, got 127'),
    (lambda v: v + ['0.1'], 'expected 128 numbers, got 129'),
    (lambda v: v[:5] + ['abc'] + v[6:], "non-numeric value 'abc'"),
    (lambda v: v[:5] + ['nan'] + v[6:], 'non-finite'),
])
def test_malformed_pose_file(small, edit, reason):
  root, frame = small
  frame.write_text(' '.join(edit(frame.read_text().split())) + ' \n')
  with pytest.raises(DataError, match=reason) as err:
    _train(root)
  assert err.value.path == str(frame) and err.value.line == 1


def test_malformed_object_file(small):
  root, frame = small
  obj = frame.parent.parent / 'obj_pose' / frame.name
  obj.write_text(obj.read_text() + '1 2 3\n')
  with pytest.raises(DataError, match='exactly 1 line') as err:
    _train(root)
  assert err.value.path == str(obj)


@pytest.mark.parametrize('label', ['0', '37', 'x'])
def test_train_label_out_of_range(small, label):
  root, _ = small
  split = os.path.join(root, 'label_split', 'action_train.txt')
  lines = open(split).read().splitlines()
  fields = lines[2].split()
  fields[lines[0].split().index('action_label')] = label
  lines[2] = ' '.join(fields)
  open(split, 'w').write('\n'.join(lines) + '\n')
  with pytest.raises(DataError, match='action label') as err:
    _train(root)
  assert err.value.path == split and err.value.line == 3


def test_split_file_errors(small):
  root, _ = small
  split = os.path.join(root, 'label_split', 'action_test.txt')
  lines = open(split).read().splitlines()
  open(split, 'w').write('\n'.join(lines[:2] + [lines[2] + ' extra']) + '\n')
  with pytest.raises(DataError, match='expected 6 fields, got 7') as err:
    list(h2o.iter_h2o_samples(root, 'test'))
  assert err.value.line == 3
  open(split, 'w').write(lines[0].replace('start_act', 'begin') + '\n' + lines[1] + '\n')
  with pytest.raises(DataError, match='lacks column'):
    list(h2o.iter_h2o_samples(root, 'test'))
  open(split, 'w').write('')
  with pytest.raises(DataError, match='empty split file'):
    list(h2o.iter_h2o_samples(root, 'test'))
