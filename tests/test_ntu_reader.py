"""NTU RGB+D reader against the reference scripts' outputs on the synthetic tree.

tests/data/ntu/ comes from tests/tools/make_ntu_expected.py (the reference's
get_raw_skes_data -> get_raw_denoised_data -> seq_transformation and its feeder, run on
`write_ntu_tree()`); here the same tree is regenerated and read with our reader.
"""

import os
import warnings

import numpy as np
import pytest

from data_pipelines import ntu, synthetic_ntu
from data_pipelines.common import DataError
from reference_outputs import load_expected, tree_digest


@pytest.fixture(scope='module')
def expected():
  return load_expected('ntu', arrays='expected.npz')


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
  return synthetic_ntu.write_ntu_tree(tmp_path_factory.mktemp('ntu'))


def _path(tree, name):
  sub = ntu.SKELETON_DIR_120 if int(name[1:4]) >= 18 else ntu.SKELETON_DIR
  return os.path.join(tree, sub, name + '.skeleton')


def _samples(tree, **kwargs):
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    samples = list(ntu.iter_ntu_samples(tree, **kwargs))
  return samples, [str(w.message) for w in caught]


def test_every_file_matches_reference_bit_exact(tree, expected):
  assert sorted(expected['arrays']) == expected['names']
  for name in expected['names']:
    ours = ntu.process_skeleton_file(_path(tree, name))
    ref = expected['arrays'][name]
    assert ours.dtype == np.float32 and ours.shape == (expected['lengths'][name], 25, 2, 3)
    np.testing.assert_array_equal(ours, ref, err_msg=name)


def test_all_empty_file_is_skipped(tree, expected):
  (empty,) = expected['skipped']
  with pytest.raises(ntu.EmptySkeletonError, match='no body'):
    ntu.process_skeleton_file(_path(tree, empty))


@pytest.mark.parametrize('bench', ['xsub', 'xset'])
@pytest.mark.parametrize('split', ['train', 'test'])
def test_split_order_labels_and_padding(tree, expected, bench, split):
  samples, messages = _samples(tree, benchmark=bench, split=split, classes='all120')
  assert [s.sample_name for s in samples] == expected['splits'][bench][split]
  (empty,) = expected['skipped']
  listed = [t.name for t in ntu.list_ntu_files(tree, benchmark=bench, split=split,
                                               classes='all120')]
  if empty in listed:
    assert len(messages) == 1 and empty in messages[0] and 'empty' in messages[0]
  else:
    assert not messages
  for s in samples:
    assert s.label == int(s.sample_name[-3:]) - 1
    assert s.length == s.skeleton.shape[0] == expected['lengths'][s.sample_name]
    np.testing.assert_array_equal(s.skeleton, expected['arrays'][s.sample_name])


def test_reference_padding_is_dataset_max(tree, expected):
  lengths = [s.length for split in ('train', 'test')
             for s in _samples(tree, benchmark='xset', split=split, classes='all120')[0]]
  assert max(lengths) == expected['padded_frames']
  s = next(ntu.iter_ntu_samples(tree, benchmark='xsub', split='train', classes='all120'))
  padded = ntu.pad_like_reference(s.skeleton, max(lengths))
  assert padded.shape == (max(lengths), 25, 2, 3) and padded.dtype == np.float32
  np.testing.assert_array_equal(padded[:s.length], s.skeleton)
  assert not padded[s.length:].any()


@pytest.mark.parametrize('bench', ['xsub', 'xset'])
@pytest.mark.parametrize('split', ['train', 'test'])
def test_mutual_subsets_match_feeder(tree, expected, bench, split):
  ref = expected['feeder_mutual26'][bench][split]
  samples, _ = _samples(tree, benchmark=bench, split=split, classes='mutual26')
  assert [s.sample_name for s in samples] == ref['names']
  assert [s.label for s in samples] == ref['labels']
  samples11, _ = _samples(tree, benchmark=bench, split=split, classes='mutual11')
  assert [(s.sample_name, s.label) for s in samples11] == [
      (n, l) for n, l in zip(ref['names'], ref['labels']) if l <= 10]


def test_parallel_matches_serial(tree):
  serial, _ = _samples(tree, benchmark='xset', split='train', classes='all120')
  parallel, messages = _samples(tree, benchmark='xset', split='train', classes='all120',
                                num_workers=2, chunksize=2)
  assert len(messages) == 1  # the empty file, warned in the parent
  assert [s.sample_name for s in parallel] == [s.sample_name for s in serial]
  for a, b in zip(parallel, serial):
    np.testing.assert_array_equal(a.skeleton, b.skeleton)


def test_generator_is_deterministic(tmp_path, tree):
  assert tree_digest(synthetic_ntu.write_ntu_tree(tmp_path)) == tree_digest(tree)


def test_synthetic_names_stay_apart_and_keep_their_splits():
  """Past 41 files per class the cycled fields repeat (benchmarks/full_training.py asks for
  100-300): names stay distinct and each file stays on its side of every split."""
  small = synthetic_ntu.sample_names(41)
  big = synthetic_ntu.sample_names(300)
  names = [n for n, _ in big]
  assert len(set(names)) == len(names) == 7 * 300 + 1
  assert [n for n, _ in small if n in set(names)] == [n for n, _ in small]  # the first 41 kept
  splits = (('xsub', 'ntu120'), ('xset', 'ntu120'), ('xsub', 'ntu60'), ('xview', 'ntu60'))
  per_class = 300
  for action_index, action in enumerate(synthetic_ntu.OTHER_ACTIONS + synthetic_ntu.MUTUAL_ACTIONS):
    for i in range(per_class):
      got = ntu.parse_ntu_name(names[action_index * per_class + i])
      k = i + action
      cycled = ntu.NtuName(synthetic_ntu.SETUPS[i % 4], 1 + k % 3,
                           synthetic_ntu.PERFORMERS[k % 5], 1 + (i // 3) % 2, action)
      assert (got.camera, got.replication, got.action) == (cycled.camera, cycled.replication,
                                                           action)
      assert (got.setup >= 18) == (cycled.setup >= 18)  # the same directory
      for benchmark, dataset in splits:
        assert ntu.is_train(got, benchmark, dataset) == ntu.is_train(cycled, benchmark, dataset)
  with pytest.raises(ValueError, match='num_per_class 100000'):
    synthetic_ntu.sample_names(100_000)


def test_parse_raw_bodies(tmp_path):
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2, 3, 25, 3))
  frames = [[('11', a[0]), ('22', b[0])], [], [('22', b[1])], [('11', a[2]), ('33', b[2])]]
  path = synthetic_ntu.write_skeleton_file(tmp_path / 'S001C001P001R001A050.skeleton', frames)
  raw = ntu.parse_skeleton_file(path)
  assert raw.bodies_per_frame.tolist() == [2, 0, 1, 2]
  assert raw.body_ids == ['11', '22', '22', '11', '33']
  got = raw.frames
  assert [[i for i, _ in f] for f in got] == [['11', '22'], [], ['22'], ['11', '33']]
  for want, have in zip(frames, got):
    for (_, jw), (_, jh) in zip(want, have):
      assert jh.dtype == np.float32
      np.testing.assert_array_equal(jh, np.array([f'{v:.7g}' for v in jw.ravel()],
                                                 dtype=np.float32).reshape(25, 3))


def _person(offset=0.0, frames=10):
  base = np.zeros((25, 3))
  base[:, :2] = synthetic_ntu._TEMPLATE_XY
  base[:, 2] = 3.0
  t = np.linspace(0, 1, frames)[:, None, None]
  return base[None] + offset + 0.1 * np.sin(6 * t) * np.arange(25)[None, :, None] / 25


def test_all_bodies_short_keeps_longest(tmp_path):
  # The reference crashes (IndexError) here; we keep the longest body.
  a, b = _person(0.0, 10), _person(0.7, 6)
  two = [[('1', a[f])] + ([('2', b[f])] if f < 6 else []) for f in range(10)]
  one = [[('1', a[f])] for f in range(10)]
  got = ntu.process_skeleton_file(synthetic_ntu.write_skeleton_file(tmp_path / 'a.skeleton', two))
  want = ntu.process_skeleton_file(synthetic_ntu.write_skeleton_file(tmp_path / 'b.skeleton', one))
  assert got.shape == (10, 25, 2, 3)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got[:, :, 0], got[:, :, 1])


def test_missing_skeleton_samples_are_left_out_as_the_reference_does(tmp_path):
  """NTU's missing-skeleton list (the reference reads only `skes_available_name.txt`, its
  complement): such a file is left out unread even where it holds a body."""
  missing = ntu.missing_skeletons()
  assert len(missing) == 535 and sum(int(n[1:4]) < ntu.FIRST_SETUP_120 for n in missing) == 302
  name = 'S001C003P002R001A055'  # a mutual action of the list, performer 2: x-sub train
  assert name in missing
  (tmp_path / ntu.SKELETON_DIR).mkdir()
  synthetic_ntu.write_skeleton_file(tmp_path / ntu.SKELETON_DIR / f'{name}.skeleton',
                                    [[('1', _person(0.0, 1)[0])]] * 3)
  read = lambda **kw: [s.sample_name for s in ntu.iter_ntu_samples(
      tmp_path, benchmark='xsub', split='train', **kw)]
  assert read() == [] and read(dataset='ntu60') == []
  assert read(exclude=()) == [name]


def test_single_actor_second_slot_follows_the_release(tmp_path):
  """NTU 120's scripts copy a lone actor into person 2, NTU 60's (`data/ntu/
  seq_transformation.py` align_frames) leave it zero; both keep person 1 the same."""
  a = _person(0.0, 10)
  (tmp_path / ntu.SKELETON_DIR).mkdir()
  path = synthetic_ntu.write_skeleton_file(
      tmp_path / ntu.SKELETON_DIR / 'S001C001P001R001A050.skeleton',
      [[('1', a[f])] for f in range(10)])
  ntu120 = ntu.process_skeleton_file(path)
  ntu60 = ntu.process_skeleton_file(path, 'ntu60')
  np.testing.assert_array_equal(ntu120[:, :, 1], ntu120[:, :, 0])
  np.testing.assert_array_equal(ntu60[:, :, 0], ntu120[:, :, 0])
  assert ntu60[:, :, 0].any() and not ntu60[:, :, 1].any()
  for dataset, want in (('ntu60', ntu60), ('ntu120', ntu120)):  # what the builders read
    (sample,) = ntu.iter_ntu_samples(tmp_path, benchmark='xsub', split='train', dataset=dataset)
    np.testing.assert_array_equal(sample.skeleton, want)
  with pytest.raises(ValueError, match='dataset must be one of'):
    ntu.process_skeleton_file(path, 'ntu61')


def test_translation_origin_and_zero_frames(tmp_path):
  a, b = _person(0.0, 20), _person(0.8, 20)
  # Person 2 (less motion) is alone in the first 3 frames, person 1 (actor 1) enters later.
  a[:, 6:12] += np.linspace(0, 1, 20)[:, None, None]
  frames = [([('1', a[f])] if f >= 3 else []) + [('2', b[f])] for f in range(20)]
  x = ntu.process_skeleton_file(synthetic_ntu.write_skeleton_file(tmp_path / 'c.skeleton', frames))
  assert x.shape == (20, 25, 2, 3)
  assert not x[:3, :, 0].any()  # actor 1's empty frames are set back to zero
  np.testing.assert_array_equal(x[3, 1, 0], 0)  # origin: actor 1's spine mid, first frame
  raw_b = np.array([f'{v:.7g}' for v in b.ravel()], dtype=np.float32).reshape(b.shape)
  raw_a0 = np.array([f'{v:.7g}' for v in a[3, 1]], dtype=np.float32)
  np.testing.assert_array_equal(x[:, :, 1], raw_b - raw_a0)


def _write(tmp_path, text, name='S001C001P001R001A050.skeleton'):
  path = tmp_path / name
  path.write_text(text)
  return path


def _valid_text():
  return synthetic_ntu.format_skeleton([[('7', _person(0.0, 1)[0])]] * 2).replace('\r\n', '\n')


@pytest.mark.parametrize('mutate,line,reason', [
    (lambda L: L[:20], 21, 'ends inside the joints'),
    (lambda L: L[:2], 3, 'ends before a body line'),
    (lambda L: L[:29], 30, 'ends before the body count of frame 2'),
    (lambda L: L[:3] + ['24'] + L[4:], 4, 'joint count 24'),
    (lambda L: L[:5] + [L[5].replace(L[5].split()[1], 'abc', 1)] + L[6:], 6, 'non-numeric'),
    (lambda L: L[:5] + [' '.join(L[5].split()[:11])] + L[6:], 6, 'expected 12'),
    # 13 values beside 11: the block's total is right, a line is not.
    (lambda L: L[:5] + [L[5] + ' 0', ' '.join(L[6].split()[:11])] + L[7:], 6, '13 values'),
    (lambda L: L[:2] + ['7 0 1'] + L[3:], 3, 'expected 10'),
    (lambda L: ['two'] + L[1:], 1, 'frame count'),
    (lambda L: L + ['5'], 58, 'after the last'),
])
def test_malformed_files_raise(tmp_path, mutate, line, reason):
  lines = _valid_text().split('\n')[:-1]
  assert len(lines) == 57
  path = _write(tmp_path, '\n'.join(mutate(lines)) + '\n')
  with pytest.raises(DataError, match=reason) as err:
    ntu.parse_skeleton_file(path)
  assert err.value.path == str(path) and err.value.line == line
  assert f'{path}:{line}' in str(err.value)


def test_missing_file_and_bad_names(tmp_path):
  with pytest.raises(DataError, match='missing skeleton file'):
    ntu.parse_skeleton_file(tmp_path / 'nope.skeleton')
  with pytest.raises(DataError, match='cannot read skeleton file'):
    ntu.parse_skeleton_file(tmp_path)  # a directory
  garbage = tmp_path / 'garbage.skeleton'
  garbage.write_bytes(b'\x00\xff\xfe')
  with pytest.raises(DataError, match=f'{garbage}: skeleton file is not a text file'):
    ntu.parse_skeleton_file(garbage)
  with pytest.raises(DataError, match='does not match'):
    ntu.parse_ntu_name('S001C001P001R001A50')
  with pytest.raises(DataError, match='action 121 out of range'):
    ntu.parse_ntu_name('S001C001P001R001A121')
  with pytest.raises(DataError, match='no nturgb'):
    ntu.list_ntu_files(tmp_path, benchmark='xsub', split='train')
  (tmp_path / ntu.SKELETON_DIR).mkdir()
  _write(tmp_path, _valid_text(), f'{ntu.SKELETON_DIR}/S001C001P001R001A000.skeleton')
  with pytest.raises(DataError, match='action 0 out of range'):
    ntu.list_ntu_files(tmp_path, benchmark='xsub', split='train')


def test_misplaced_setup_is_ignored_with_warning(tmp_path):
  (tmp_path / ntu.SKELETON_DIR).mkdir()
  _write(tmp_path, _valid_text(), f'{ntu.SKELETON_DIR}/S018C001P001R001A050.skeleton')
  _write(tmp_path, _valid_text(), f'{ntu.SKELETON_DIR}/S002C001P001R001A050.skeleton')
  with pytest.warns(UserWarning, match='wrong directory'):
    tasks = ntu.list_ntu_files(tmp_path, benchmark='xset', split='train')
  assert [t.name for t in tasks] == ['S002C001P001R001A050']


def test_names_labels_and_benchmarks():
  f = ntu.parse_ntu_name('S018C002P045R001A110')
  assert (f.setup, f.camera, f.performer, f.replication, f.action, f.label) == (
      18, 2, 45, 1, 110, 109)
  assert [ntu.class_label(l, 'mutual26') for l in (48, 49, 59, 60, 104, 105, 119)] == [
      -1, 0, 10, -1, -1, 11, 25]
  assert [ntu.class_label(l, 'mutual11') for l in (48, 49, 59, 60, 105)] == [-1, 0, 10, -1, -1]
  assert ntu.class_label(7, 'all120') == 7
  ids = lambda field, b, d: [i for i in range(1, 107 if field == 'performer' else 33)
                             if ntu.is_train(ntu.NtuName(**{**dict(setup=1, camera=1,
                                 performer=1, replication=1, action=1), field: i}), b, d)]
  assert ids('performer', 'xsub', 'ntu60')[:20] == [1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18,
                                                    19, 25, 27, 28, 31, 34, 35, 38]
  assert len(ids('performer', 'xsub', 'ntu120')) == 53
  assert ids('setup', 'xset', 'ntu120') == list(range(2, 33, 2))
  assert ids('camera', 'xview', 'ntu60') == [2, 3]
  with pytest.raises(ValueError, match='xview'):
    ntu.split_group(f, 'xview', 'train', 'ntu120')


def test_ntu60_keeps_first_17_setups(tree):
  tasks = ntu.list_ntu_files(tree, benchmark='xview', split='train', dataset='ntu60',
                             classes='all120')
  assert tasks and all(int(t.name[1:4]) < 18 and int(t.name[5:8]) in (2, 3) for t in tasks)
  assert [t.name for t in tasks] == sorted((t.name for t in tasks),
                                           key=lambda n: (int(n[5:8]), n))
