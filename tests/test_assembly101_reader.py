"""Assembly101 reader against the reference's own preprocessing of the same synthetic tree.

Expected outputs come from tests/tools/make_assembly101_expected.py (the reference's Preprocess and
PreprocessTest steps 1 and 2, then its feeder); sample i of train/validation is the reference's
step-1 counter i, test samples are keyed by id.
"""

from __future__ import annotations

import collections
import json
import os
import re
import warnings

import numpy as np
import pytest

from data_pipelines import assembly101
from data_pipelines.assembly101 import iter_assembly101_samples
from data_pipelines.common import DataError
from data_pipelines.synthetic_assembly101 import write_assembly101_tree
from reference_outputs import digest, load_expected, tree_digest

ANN = 'fine-grained-annotations'
POSES = 'poses_60fps'


@pytest.fixture(scope='module')
def expected():
  return load_expected('assembly101', arrays='arrays.npz')


@pytest.fixture(scope='module')
def tree(tmp_path_factory, expected):
  root = str(tmp_path_factory.mktemp('asb') / 'download')
  return write_assembly101_tree(root, **expected['tree'])


def _read(root, split, task='action', **kw):
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    return list(iter_assembly101_samples(root, split, task, **kw))


def _valid_frames(skeleton):
  return int((skeleton.sum(axis=(1, 2, 3)) != 0).sum())


def test_generator_is_deterministic(tree, expected):
  assert tree_digest(tree) == expected['tree_sha256'], (
      'the synthetic tree changed: rerun tests/tools/make_assembly101_expected.py')


@pytest.mark.parametrize('split', ['train', 'validation'])
def test_labeled_split_matches_reference(tree, expected, split):
  records = expected['splits'][split]
  samples = _read(tree, split)
  assert len(samples) == len(records)
  for i, (s, r) in enumerate(zip(samples, records)):
    assert r['counter'] == i
    assert s.skeleton.shape == (200, 21, 2, 3) and s.skeleton.dtype == np.float32
    assert (s.label, s.verb, s.noun) == (r['action'], r['verb'], r['noun'])
    assert s.raw_length == r['raw_length']
    assert s.length == min(r['raw_length'], 200)
    assert _valid_frames(s.skeleton) == r['valid_frame_num']
    assert digest(s.skeleton) == r['sha256'], f'{split} sample {i} ({s.sample_name})'
    assert not s.pose_missing
    key = f'{split}_{i}'
    if key in expected['arrays']:
      np.testing.assert_array_equal(s.skeleton[:s.length], expected['arrays'][key])
    np.testing.assert_array_equal(s.skeleton[s.length:], 0)
  # Keyed comparison above; the multiset of (labels, length) must agree as well.
  ours = collections.Counter((s.label, s.verb, s.noun, s.raw_length) for s in samples)
  ref = collections.Counter((r['action'], r['verb'], r['noun'], r['raw_length']) for r in records)
  assert ours == ref
  names = [s.sample_name for s in samples]
  assert len(set(names)) == len(names)


@pytest.mark.parametrize('split', ['train', 'validation'])
@pytest.mark.parametrize('task', ['verb', 'noun'])
def test_task_labels_match_reference(tree, expected, split, task):
  samples = _read(tree, split, task)
  assert [s.label for s in samples] == [r['label'][task] for r in expected['splits'][split]]
  assert [s.label for s in samples] == [getattr(s, task) for s in samples]


def test_test_split_matches_reference(tree, expected):
  records = expected['splits']['test']
  samples = _read(tree, 'test')
  assert [s.id for s in samples] == [r['id'] for r in records] == list(range(len(records)))
  for s, r in zip(samples, records):
    assert s.label == -1 and s.verb is None and s.noun is None
    assert s.raw_length == r['raw_length']
    assert s.pose_missing == r['pose_missing']
    assert _valid_frames(s.skeleton) == r['valid_frame_num']
    assert s.skeleton.shape == (200, 21, 2, 3) and s.skeleton.dtype == np.float32
    assert digest(s.skeleton) == r['sha256'], s.sample_name
    key = f'test_{s.id}'
    if key in expected['arrays']:
      np.testing.assert_array_equal(s.skeleton[:s.length], expected['arrays'][key])
  missing = [s for s in samples if s.pose_missing]
  assert len(missing) == 2  # the video without json, and the segment past the poses' end
  for s in missing:
    assert s.length == 10
    np.testing.assert_array_equal(s.skeleton[:10], 1)
    np.testing.assert_array_equal(s.skeleton[10:], 0)


def test_test_frames_are_converted_to_60fps(tree):
  samples = _read(tree, 'test')
  with open(os.path.join(tree, ANN, 'test_challenge.csv')) as f:
    rows = [line.strip().split(',') for line in f][1:]
  for s, row in zip(samples, rows):
    assert s.video == row[1]
    assert (s.start_frame, s.end_frame) == (2 * int(row[2]) + 1, 2 * int(row[3]) + 1)


def test_order_is_sorted_json_names_then_stable_start(tree):
  samples = _read(tree, 'train')
  names = [s.video + '.json' for s in samples]
  assert names == sorted(names)
  # '-' sorts before '.', so the '-2' video comes first although its bare name sorts later.
  assert samples[0].video.endswith('-2')
  for a, b in zip(samples, samples[1:]):
    if a.video == b.video:
      assert a.start_frame <= b.start_frame
      if a.start_frame == b.start_frame:
        assert a.id < b.id  # csv order of the tie (ids are row positions here)


def test_unpadded_and_uncapped(tree, expected):
  padded = _read(tree, 'validation')
  short = _read(tree, 'validation', pad=False)
  full = _read(tree, 'validation', max_frames=None)
  for p, s, f in zip(padded, short, full):
    assert s.skeleton.shape[0] == s.length == p.length
    np.testing.assert_array_equal(s.skeleton, p.skeleton[:p.length])
    assert f.skeleton.shape[0] == f.length == f.raw_length
    np.testing.assert_array_equal(f.skeleton[:200], s.skeleton)
  assert max(f.raw_length for f in full) > 200


def test_missing_pose_file_warns_with_name(tree):
  with pytest.warns(UserWarning) as record:
    samples = list(iter_assembly101_samples(tree, 'train'))
  messages = sorted(str(w.message) for w in record)
  assert len(messages) == 2
  assert re.search(r'153724\.json: no pose frames for segment \d+\.\.\d+ .*train\.csv line \d+',
                   messages[0])
  assert re.search(r'9099.*\.json: pose file missing for 1 segment', messages[1])
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert len(list(iter_assembly101_samples(tree, 'train', missing='ignore'))) == len(samples)
  with pytest.raises(DataError, match='pose file missing'):
    list(iter_assembly101_samples(tree, 'validation', missing='raise'))


# --- malformed input -----------------------------------------------------------------------------


def _small_tree(tmp_path):
  return write_assembly101_tree(str(tmp_path / 'download'), num_per_class=1, seed=1)


def _rewrite(path, edit):
  with open(path) as f:
    lines = f.read().split('\n')
  with open(path, 'w') as f:
    f.write('\n'.join(edit(lines)))


def _first_pose_file(root, split='train'):
  with open(os.path.join(root, ANN, assembly101.CSV_NAMES[split])) as f:
    videos = [line.split(',')[1] for line in f.read().splitlines()[1:]]
  present = sorted(v for v in videos if os.path.exists(os.path.join(root, POSES, v + '.json')))
  return os.path.join(root, POSES, present[0] + '.json')


def test_malformed_json_names_file(tmp_path):
  root = _small_tree(tmp_path)
  path = _first_pose_file(root)
  with open(path) as f:
    text = f.read()
  with open(path, 'w') as f:
    f.write(text[:len(text) // 2])  # truncated download
  with pytest.raises(DataError, match='malformed json') as e:
    _read(root, 'train')
  assert e.value.path == path


def test_wrong_joint_count_names_file_and_frame(tmp_path):
  root = _small_tree(tmp_path)
  path = _first_pose_file(root)
  with open(path) as f:
    frames = json.load(f)
  for frame in frames:
    frame['landmarks']['1'] = frame['landmarks']['1'][:20]
  with open(path, 'w') as f:
    json.dump(frames, f)
  with pytest.raises(DataError, match=r'hand 1: expected 21 landmarks') as e:
    _read(root, 'train')
  assert e.value.path == path


@pytest.mark.parametrize('value', [None, '1.5', float('nan')])
def test_non_numeric_landmark(tmp_path, value):
  root = _small_tree(tmp_path)
  path = _first_pose_file(root)
  with open(path) as f:
    frames = json.load(f)
  frames[10]['landmarks']['0'][3][1] = value
  with open(path, 'w') as f:
    json.dump(frames, f)
  with pytest.raises(DataError, match='frame 10') as e:
    _read(root, 'train')
  assert e.value.path == path


def test_missing_landmarks_key(tmp_path):
  root = _small_tree(tmp_path)
  path = _first_pose_file(root, 'test')
  with open(path) as f:
    frames = json.load(f)
  del frames[3]['landmarks']
  with open(path, 'w') as f:
    json.dump(frames, f)
  with pytest.raises(DataError, match='frame 3: expected'):
    _read(root, 'test')


@pytest.mark.parametrize('split', ['train', 'test'])
def test_empty_csv(tmp_path, split):
  root = _small_tree(tmp_path)
  path = os.path.join(root, ANN, assembly101.CSV_NAMES[split])
  open(path, 'w').close()
  with pytest.raises(DataError, match='empty csv') as e:
    _read(root, split)
  assert e.value.path == path
  _rewrite(path, lambda lines: ['id,video,start_frame,end_frame,is_shared', ''])
  with pytest.raises(DataError, match='empty csv'):
    _read(root, split)
  with open(path, 'wb') as f:
    f.write(b'id,video\n\xff\xfe\n')  # a corrupt download: named, not a bare decode error
  with pytest.raises(DataError, match='annotation csv is not a text file') as e:
    _read(root, split)
  assert e.value.path == path


def test_non_numeric_field_names_line(tmp_path):
  root = _small_tree(tmp_path)
  path = os.path.join(root, ANN, 'validation.csv')

  def edit(lines):
    fields = lines[3].split(',')
    fields[2] = 'abc'
    lines[3] = ','.join(fields)
    return lines

  _rewrite(path, edit)
  with pytest.raises(DataError, match=r"validation.csv:4: non-numeric start_frame 'abc'"):
    _read(root, 'validation')


@pytest.mark.parametrize('column,value,task', [(4, '1380', 'action'), (5, '0024', 'verb'),
                                               (6, '-1', 'noun')])
def test_label_out_of_range(tmp_path, column, value, task):
  root = _small_tree(tmp_path)
  path = os.path.join(root, ANN, 'train.csv')

  def edit(lines):
    fields = lines[2].split(',')
    fields[column] = value
    lines[2] = ','.join(fields)
    return lines

  _rewrite(path, edit)
  with pytest.raises(DataError, match=rf'train.csv:3: {task}_id -?\d+ out of range'):
    _read(root, 'train')


def test_wrong_column_count(tmp_path):
  root = _small_tree(tmp_path)
  path = os.path.join(root, ANN, 'train.csv')
  # The 30 fps annotation-drive csv has an extra column; it must not be read by position.
  _rewrite(path, lambda lines: [line + ',1' if line else line for line in lines])
  with pytest.raises(DataError, match=r'train.csv:2: expected 13 columns'):
    _read(root, 'train')


def test_test_ids_must_be_row_positions(tmp_path):
  root = _small_tree(tmp_path)
  path = os.path.join(root, ANN, 'test_challenge.csv')
  _rewrite(path, lambda lines: lines[:2] + ['7' + lines[2][1:]] + lines[3:])
  with pytest.raises(DataError, match=r'test_challenge.csv:3: id 71? is not the row position 1'):
    _read(root, 'test')


def test_missing_pose_dir_and_bad_arguments(tmp_path):
  root = _small_tree(tmp_path)
  with pytest.raises(ValueError, match='task'):
    _read(root, 'train', 'object')
  with pytest.raises(ValueError, match='split'):
    _read(root, 'val')
  os.rename(os.path.join(root, POSES), os.path.join(root, 'elsewhere'))
  with pytest.raises(DataError, match='pose directory not found'):
    _read(root, 'train')
  assert len(_read(root, 'train', pose_dir=os.path.join(root, 'elsewhere'))) > 0
