"""Tests for istanet_jax/input_pipeline.py: both back ends, order, sharding, padding, resume.

A tiny TFDS builder with the skeleton feature spec is prepared in tmp_path as TFRecord and as
ArrayRecord (3 files per split, so reading in index order across files is exercised).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds

from istanet_jax import input_pipeline as ip

V, M = 5, 2
MAX_FRAMES = 12
SIZES = {'train': 37, 'test': 13}


def _example(split: str, i: int) -> dict:
  rng = np.random.default_rng([len(split), i])
  frames = int(rng.integers(1, 20))  # Some longer than MAX_FRAMES, to be truncated.
  skeleton = (1000 * i + np.arange(frames, dtype=np.float32)[:, None, None, None]
              + np.arange(V * M * 3, dtype=np.float32).reshape(V, M, 3) / 100)
  length = frames - int(rng.integers(0, 3))  # A stored length may be shorter than T.
  return dict(skeleton=skeleton.astype(np.float32), label=i % 4, sample_name=f'{split}_{i:03d}',
              length=max(length, 1))


class TinySkeleton(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Same features as the project's skeleton builders, synthetic variable-length data."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'skeleton': tfds.features.Tensor(shape=(None, V, M, 3), dtype=np.float32),
        'label': np.int64,
        'sample_name': tfds.features.Text(),
        'length': np.int64,
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in SIZES}

  def _generate_examples(self, split):
    for i in range(SIZES[split]):
      ex = _example(split, i)
      yield ex['sample_name'], ex


@pytest.fixture(scope='module')
def builders(tmp_path_factory):
  out = {}
  for fmt, backend in (('tfrecord', 'tf'), ('array_record', 'grain')):
    data_dir = os.fspath(tmp_path_factory.mktemp(fmt))
    b = TinySkeleton(data_dir=data_dir, file_format=fmt)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=3))
    out[backend] = b
  return out


def _collect(it, count=None):
  return [next(it) for _ in range(count)] if count is not None else list(it)


def _iter(builders, which, split='train', **kw):
  """An iterator over `builders[which]` ('tf': TFRecord, 'grain': ArrayRecord)."""
  kw.setdefault('batch_size', 8)
  kw.setdefault('train', split == 'train')
  kw.setdefault('process_index', 0)
  kw.setdefault('process_count', 1)
  kw.setdefault('backend', which)
  return ip.make_iterator(builders[which], split, max_frames=MAX_FRAMES, **kw)


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
      assert x[k].dtype == y[k].dtype, k


def _check_content(batch, split, source):
  """Every real row is its example, padded / truncated as documented; padding rows are zero.

  `index` is the position in the prepared split (TFDS shuffles at write time), checked
  against the ArrayRecord data source; the content is checked against the generator.
  """
  for r in range(len(batch['index'])):
    index = int(batch['index'][r])
    name = batch['sample_name'][r]
    if not batch['mask'][r]:
      assert index == -1 and batch['length'][r] == 0 and name == ''
      assert not batch['skeleton'][r].any()
      continue
    assert source[index]['sample_name'].decode() == name
    ex = _example(split, int(name.split('_')[1]))
    frames = min(len(ex['skeleton']), MAX_FRAMES)
    want = np.zeros((MAX_FRAMES, V, M, 3), np.float32)
    want[:frames] = ex['skeleton'][:frames]
    np.testing.assert_array_equal(batch['skeleton'][r], want)
    assert batch['length'][r] == min(ex['length'], frames)
    assert batch['label'][r] == ex['label']
    assert batch['sample_name'][r] == ex['sample_name']


def test_backends_deliver_identical_batches(builders):
  """Same example order in both back ends: two training epochs and one eval pass."""
  train = {b: _collect(_iter(builders, b, num_epochs=2, seed=3)) for b in ('tf', 'grain')}
  _assert_batches_equal(train['tf'], train['grain'])
  assert len(train['tf']) == 2 * (37 // 8)
  evals = {b: _collect(_iter(builders, b, 'test', batch_size=4)) for b in ('tf', 'grain')}
  _assert_batches_equal(evals['tf'], evals['grain'])

  first = train['grain'][0]
  assert first['skeleton'].shape == (8, MAX_FRAMES, V, M, 3)
  assert {k: v.dtype for k, v in first.items() if k != 'sample_name'} == dict(
      skeleton=np.float32, length=np.int32, label=np.int32, mask=np.bool_, index=np.int64)
  for batch in train['tf']:
    _check_content(batch, 'train', builders['grain'].as_data_source('train'))
  for batch in evals['grain']:
    _check_content(batch, 'test', builders['grain'].as_data_source('test'))


def test_auto_backend_follows_file_format(builders):
  it = ip.make_iterator(builders['tf'], 'train', batch_size=8, max_frames=MAX_FRAMES, train=True,
                        process_index=0, process_count=1)
  assert it.backend == 'tf' and it.steps_per_epoch == 4 and it.num_examples == 37
  it = ip.make_iterator(builders['grain'], 'train', batch_size=8, max_frames=MAX_FRAMES,
                        train=True, process_index=0, process_count=1)
  assert it.backend == 'grain'
  with pytest.raises(ValueError, match='needs data prepared as array_record'):
    _iter(builders, 'tf', backend='grain')
  with pytest.raises(ValueError, match='needs data prepared as tfrecord'):
    _iter(builders, 'grain', backend='tf')


def test_epochs_shuffled_and_reproducible(builders):
  def epoch_orders(seed):
    batches = _collect(_iter(builders, 'grain', num_epochs=3, seed=seed))
    idx = np.concatenate([b['index'] for b in batches]).reshape(3, -1)
    return idx

  orders = epoch_orders(seed=7)
  for e in range(3):
    assert len(set(orders[e])) == orders.shape[1] == 32  # Distinct examples, remainder dropped.
    assert set(orders[e]) <= set(range(37))
  assert not np.array_equal(orders[0], orders[1])
  np.testing.assert_array_equal(orders, epoch_orders(seed=7))
  assert not np.array_equal(orders, epoch_orders(seed=8))


def test_hosts_split_every_global_batch(builders):
  """H hosts together see exactly the batches one host sees: each takes its slice of every
  global batch, so a run's result does not depend on the number of hosts."""
  for train, split, epochs in ((False, 'train', 1), (True, 'train', 2)):
    single = _collect(_iter(builders, 'grain', split, train=train, batch_size=8, num_epochs=epochs))
    for backend in ('tf', 'grain'):
      per_host = [_collect(_iter(builders, backend, split, train=train, batch_size=8,
                                 num_epochs=epochs, process_index=h, process_count=2))
                  for h in range(2)]
      assert len(per_host[0]) == len(per_host[1]) == len(single)
      for whole, a, b in zip(single, *per_host):
        assert a['skeleton'].shape[0] == b['skeleton'].shape[0] == 4
        for key in whole:
          np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), whole[key], err_msg=key)
  # Eval: every example on exactly one host, counted once.
  per_host = [_collect(_iter(builders, 'tf', 'train', train=False, batch_size=8,
                             process_index=h, process_count=2)) for h in range(2)]
  seen = [np.concatenate([b['index'][b['mask']] for b in host]).tolist() for host in per_host]
  assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(37))


def test_eval_padding_counts_every_example_once(builders):
  batches = _collect(_iter(builders, 'grain', 'test', batch_size=5))
  assert len(batches) == 3  # ceil(13 / 5)
  index = np.concatenate([b['index'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.sum() == 13 and not mask[13:].any()
  np.testing.assert_array_equal(index[mask], np.arange(13))
  assert (index[~mask] == -1).all()


def test_tf_back_end_runs_no_python_and_leaves_the_plan_intact(builders, monkeypatch):
  """tf.data only reads the split; the plan's position arrays (which both back ends share)
  never reach TensorFlow, and no Python runs inside tf.data.

  When tf.data gathered the examples of each batch by position, TF took a 64-byte-aligned
  positions array without copying and could write `max(pos, 0)` into its last element:
  trailing padding (-1) became example 0, once in CI; and a `from_generator` iterator dropped
  while its generator was being pulled deadlocked (its destructor, holding the GIL, waited
  for a py_func waiting for the GIL). The positions here are forced 64-byte aligned.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  handed_out, sliced = [], []
  positions = ip._Plan.positions.__wrapped__  # pylint: disable=protected-access

  def aligned_positions(plan, epoch):
    pos = positions(plan, epoch)
    raw = np.empty(pos.size + 8, np.int64)
    out = raw[(-raw.ctypes.data % 64) // 8:][:pos.size]
    out[:] = pos
    handed_out.append((out, pos))
    return out

  from_tensor_slices = tf.data.Dataset.from_tensor_slices

  def recording_from_tensor_slices(tensors, name=None):
    if isinstance(tensors, np.ndarray) and tensors.dtype == np.int64:  # not TFDS's own
      sliced.append(tensors)
    return from_tensor_slices(tensors, name=name)

  def no_python(*args, **kwargs):
    raise AssertionError('Python inside the tf.data pipeline')

  monkeypatch.setattr(ip._Plan, 'positions', aligned_positions)  # pylint: disable=protected-access
  monkeypatch.setattr(tf.data.Dataset, 'from_tensor_slices', recording_from_tensor_slices)
  for name in ('from_generator',):
    monkeypatch.setattr(tf.data.Dataset, name, no_python)
  for name in ('numpy_function', 'py_function'):
    monkeypatch.setattr(tf, name, no_python)
  epochs = 20
  batches = _collect(_iter(builders, 'tf', 'test[:8]', batch_size=3, num_epochs=epochs))
  assert sum(int(b['mask'].sum()) for b in batches) == 8 * epochs
  assert len(handed_out) == 3 * epochs and not sliced
  for out, expected in handed_out:
    np.testing.assert_array_equal(out, expected)
  for b in batches:  # the padding stays padding
    assert (b['index'][~b['mask']] == -1).all() and not b['skeleton'][~b['mask']].any()


def test_split_is_read_while_the_caller_goes_on(builders, monkeypatch):
  """make_iterator returns before the split is read (training compiles meanwhile); the first
  batch waits for the read, and a failed read raises there."""
  import threading  # pylint: disable=g-import-not-at-top
  read, release = ip._read_grain, threading.Event()  # pylint: disable=protected-access

  def slow_read(*args):
    assert release.wait(timeout=60)
    return read(*args)

  monkeypatch.setattr(ip, '_read_grain', slow_read)
  it = _iter(builders, 'grain', 'test', batch_size=4)
  assert it.steps_per_epoch == 4  # made while the read still waits
  release.set()
  _check_content(next(it), 'test', builders['grain'].as_data_source('test'))

  def failed_read(*args):
    raise ValueError('tiny_skeleton/test[3]: field skeleton must be ...')

  monkeypatch.setattr(ip, '_read_grain', failed_read)
  it = _iter(builders, 'grain', 'test', batch_size=4)
  with pytest.raises(ValueError, match=r'test\[3\]'):
    next(it)


@pytest.mark.parametrize('backend', ['tf', 'grain'])
def test_resume_from_state_gives_same_batches(builders, backend):
  full_it = _iter(builders, backend, num_epochs=3, seed=5)
  full = _collect(full_it)
  assert full_it.get_state() == {'epoch': 3, 'step': 0}
  # Resume mid-epoch and exactly at an epoch boundary.
  for stop in (2, 4, 6):
    it = _iter(builders, backend, num_epochs=3, seed=5)
    _collect(it, stop)
    state = it.get_state()
    assert state == {'epoch': stop // 4, 'step': stop % 4}
    resumed = _collect(_iter(builders, backend, num_epochs=3, seed=5, start_state=dict(state)))
    _assert_batches_equal(resumed, full[stop:])


def test_bad_arguments(builders):
  with pytest.raises(ValueError, match='multiple of process_count'):
    _iter(builders, 'grain', batch_size=7, process_count=2)
  with pytest.raises(ValueError, match='out of range'):
    _iter(builders, 'grain', start_state={'epoch': 0, 'step': 4})
  with pytest.raises(ValueError, match='no full batch'):
    _iter(builders, 'grain', batch_size=64)
  with pytest.raises(ValueError, match='backend must be one of'):
    _iter(builders, 'grain', backend='torch')


@pytest.mark.parametrize('backend', ['grain', 'tf'])
def test_labels_outside_the_model_s_classes_are_named(builders, backend):
  """A config whose num_classes (or label_key) does not fit the data: the labels i % 4 of 3
  classes. Unchecked, the loss took NaN at those labels and every step was skipped."""
  assert len(_collect(_iter(builders, backend, num_classes=4), 1)) == 1
  it = _iter(builders, backend, num_classes=3)
  with pytest.raises(ValueError, match=r"tiny_skeleton/train 'label'\[\d+\] \('train_\d+'\): "
                                       r"label 3 outside \[0, 3\) of model.num_classes; 9 such "
                                       r"examples"):
    next(it)


def test_num_batches():
  assert ip.num_batches(37, batch_size=8, train=True) == 4
  assert ip.num_batches(37, batch_size=8, train=False) == 5
  assert ip.num_batches(37, batch_size=8, train=True, process_count=2) == 4  # global batches
  assert ip.num_batches(37, batch_size=8, train=False, process_count=4) == 5


def test_grain_path_without_tensorflow(builders):
  """The grain back end, resolved by dataset name, runs where TensorFlow cannot be imported."""
  root = os.path.dirname(os.path.dirname(builders['grain'].data_dir))  # <root>/<name>/<version>
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = textwrap.dedent(f"""
    import sys
    # Every finder answers "no such module" for TensorFlow, as on a machine without it
    # (sys.modules['tensorflow'] = None would not do: TFDS takes that as "TF is loaded").
    class Hide:
      def __init__(self, finder):
        self.finder = finder
      def find_spec(self, name, path=None, target=None):
        if name == 'tensorflow' or name.startswith('tensorflow.'):
          return None
        return self.finder.find_spec(name, path, target)
      def __getattr__(self, attr):
        return getattr(self.finder, attr)
    sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
    sys.path.insert(0, {repo!r})
    from istanet_jax import input_pipeline as ip
    it = ip.make_iterator('tiny_skeleton', 'test', data_dir={root!r}, batch_size=4,
                          max_frames={MAX_FRAMES}, train=False, process_index=0,
                          process_count=1)
    batches = list(it)
    assert it.backend == 'grain', it.backend
    assert sum(int(b['mask'].sum()) for b in batches) == 13
    assert 'tensorflow' not in sys.modules
    try:
      import tensorflow
      raise AssertionError('TensorFlow was importable')
    except ModuleNotFoundError:
      pass
    print('OK', len(batches))
  """)
  proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split()[-2:] == ['OK', '4']


def test_reading_thread_swaps_no_imports(builders):
  """etils' `lazy_imports` (grain's import, TFDS's modules) swaps `builtins.__import__` for the
  whole process while it runs: entered on the reading thread, it handed imports that training
  made meanwhile a lazy stand-in ('LazyModule' object is not callable). Both back ends enter it
  on the caller's thread only."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  roots = {b: os.path.dirname(os.path.dirname(builders[b].data_dir)) for b in ('tf', 'grain')}
  script = textwrap.dedent(f"""
    import sys, threading
    from etils import epy
    from etils.epy import lazy_imports_utils
    entered, original = [], lazy_imports_utils.lazy_imports
    def recording(*args, **kwargs):
      entered.append(threading.current_thread().name)
      return original(*args, **kwargs)
    epy.lazy_imports = lazy_imports_utils.lazy_imports = recording
    sys.path.insert(0, {repo!r})
    from istanet_jax import input_pipeline as ip
    for backend, root in {roots!r}.items():
      it = ip.make_iterator('tiny_skeleton', 'test', data_dir=root, batch_size=4,
                            max_frames={MAX_FRAMES}, train=False, process_index=0,
                            process_count=1, backend=backend)
      next(it)
    assert 'grain' in sys.modules and 'tensorflow' in sys.modules
    print('OK', sorted(set(entered)))
  """)
  proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split('OK', 1)[1].strip() == "['MainThread']", proc.stdout[-500:]


def test_combined_split_same_in_both_backends(builders):
  """Split expressions such as SBU's 'fold0+fold2+...' are read in the same order by both."""
  runs = [_collect(_iter(builders, b, 'train+test[:5]', train=False, batch_size=6,
                         process_index=1, process_count=2)) for b in ('tf', 'grain')]
  _assert_batches_equal(*runs)
  index = np.concatenate([b['index'][b['mask']] for b in runs[0]])
  # Host 1 of 2 over 42 examples, global batches of 6: the second half of each.
  np.testing.assert_array_equal(index, (np.arange(7)[:, None] * 6 + np.arange(3, 6)).ravel())
  names = np.concatenate([b['sample_name'][b['mask']] for b in runs[0]])
  assert names[-2:].tolist() == [builders['grain'].as_data_source('test')[i]['sample_name']
                                 .decode() for i in (3, 4)]


def test_project_builder_h2o_by_name(tmp_path):
  """The project's H2O builder, prepared in both formats and looked up by name."""
  from data_pipelines import prepare  # pylint: disable=g-import-not-at-top
  from data_pipelines.synthetic_sbu_h2o import write_h2o_tree  # pylint: disable=g-import-not-at-top

  raw = write_h2o_tree(tmp_path / 'raw', num_per_class=1)
  dirs = {}
  for fmt, which in (('tfrecord', 'tf'), ('array_record', 'grain')):
    dirs[which] = os.fspath(tmp_path / fmt)
    prepare.prepare('h2o', raw, dirs[which], file_format=fmt)
  n = ip.num_examples('h2o', 'test', data_dir=dirs['grain'])
  for split, train in (('train', True), ('test', False)):
    runs = []
    for which in ('tf', 'grain'):
      it = ip.make_iterator('h2o', split, data_dir=dirs[which], batch_size=3, max_frames=50,
                            train=train, num_epochs=2, seed=1, process_index=0, process_count=1)
      assert it.backend == which
      runs.append(_collect(it))
    _assert_batches_equal(*runs)
    assert runs[0][0]['skeleton'].shape == (3, 50, 21, 3, 3)
  assert sum(int(b['mask'].sum()) for b in runs[0]) == 2 * n


def test_label_key_selects_the_feature_trained_on(tmp_path):
  """Assembly101 trains on action, verb or noun: `label_key` picks which arrives as `label`."""
  from data_pipelines import prepare  # pylint: disable=g-import-not-at-top
  from data_pipelines.synthetic_assembly101 import write_assembly101_tree  # pylint: disable=g-import-not-at-top

  raw = write_assembly101_tree(tmp_path / 'raw')
  prepare.prepare('assembly101', raw, tmp_path / 'data', file_format='array_record')
  source = ip.get_builder('assembly101', os.fspath(tmp_path / 'data')).as_data_source('train')
  verbs = {source[i]['sample_name'].decode(): int(source[i]['verb']) for i in range(len(source))}
  assert len(set(verbs.values())) > 1
  it = ip.make_iterator('assembly101', 'train', batch_size=2, max_frames=200, train=False,
                        data_dir=os.fspath(tmp_path / 'data'), label_key='verb')
  checked = 0
  for batch in it:
    for name, label, valid in zip(batch['sample_name'], batch['label'], batch['mask']):
      if valid:
        assert label == verbs[name]
        checked += 1
  assert checked == len(source)
  with pytest.raises(ValueError, match="no feature 'object' to use as label"):
    ip.make_iterator('assembly101', 'train', batch_size=2, max_frames=200, train=False,
                     data_dir=os.fspath(tmp_path / 'data'), label_key='object')
