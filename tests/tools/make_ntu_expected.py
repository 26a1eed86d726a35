"""Writes tests/data/ntu/ from the reference's own NTU scripts run on our synthetic tree.

  python tests/tools/make_ntu_expected.py --reference_dir /tmp/ista_ref --out tests/data/ntu/

Steps: write the tree with `data_pipelines.synthetic_ntu.write_ntu_tree` (default arguments)
into a temp dir laid out as the reference expects (`nturgbd_raw/` next to a copy of
`data/ntu120/`), write the `statistics/*.txt` files for it (every file but the all-empty one,
in name order, as the real statistics list them), run `get_raw_skes_data.py`,
`get_raw_denoised_data.py` and `seq_transformation.py` unchanged in subprocesses (only numpy 2's
removed `np.int`/`np.string_` aliases are restored, and the unused `h5py`/`sklearn` imports
are stubbed), then read `NTU120_XSub.npz`/`NTU120_XSet.npz`, map rows to names with the
reference's own `get_indices`, and run `feeders/feeder_ntu.py`'s `Feeder` on both files for
the mutual-class mapping (its unused `matplotlib` import stubbed).

Outputs (small): expected.npz, one float32 (T, 25, 2, 3) array per sample, unpadded; and
expected.json: names, lengths (the reference's frames_cnt), padded length, split orders and
the feeder's names/labels per benchmark and split.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import tempfile

import numpy as np

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(TOOLS)), os.path.dirname(TOOLS)]  # repo, tests/
from data_pipelines import synthetic_ntu  # noqa: E402
from reference_outputs import (  # noqa: E402
    import_reference, run_python, save_expected, stub_modules, tool_args)

_SCRIPTS = ('get_raw_skes_data.py', 'get_raw_denoised_data.py', 'seq_transformation.py')
# Runs one data/ntu120 script under `reference_environment()`, as __main__.
_BOOTSTRAP = f'''
import runpy, sys
sys.path.insert(0, {TOOLS!r})
import make_ntu_expected
make_ntu_expected.reference_environment()
runpy.run_path(sys.argv[1], run_name='__main__')
'''


def reference_environment():
  """What the NTU scripts need on numpy 2, without their unused h5py/sklearn imports."""
  np.int = int
  np.string_ = np.bytes_
  stub_modules('h5py', 'sklearn', 'sklearn.model_selection')
  sys.modules['sklearn.model_selection'].train_test_split = None


def _to_ours(rows: np.ndarray) -> np.ndarray:
  """Reference (T, 150) rows -> (T, 25, 2, 3)."""
  return rows.reshape(len(rows), 2, 25, 3).transpose(0, 2, 1, 3)


def main():
  args = tool_args(__doc__)
  ref = os.path.abspath(args.reference_dir)
  out = os.path.abspath(args.out)

  with tempfile.TemporaryDirectory() as tmp:
    synthetic_ntu.write_ntu_tree(os.path.join(tmp, 'nturgbd_raw'))
    work = os.path.join(tmp, 'ntu120')
    os.makedirs(os.path.join(work, 'statistics'))
    for script in _SCRIPTS:
      shutil.copy(os.path.join(ref, 'data', 'ntu120', script), work)
    names = sorted(n for n, scenario in synthetic_ntu.sample_names() if scenario != 'empty')
    skipped = sorted(n for n, scenario in synthetic_ntu.sample_names() if scenario == 'empty')
    fields = {'setup': (1, 4), 'camera': (5, 8), 'performer': (9, 12),
              'replication': (13, 16), 'label': (17, 20)}
    stats = os.path.join(work, 'statistics')
    with open(os.path.join(stats, 'skes_available_name.txt'), 'w') as f:
      f.write('\n'.join(names) + '\n')
    for field, (lo, hi) in fields.items():
      with open(os.path.join(stats, field + '.txt'), 'w') as f:
        f.write('\n'.join(str(int(n[lo:hi])) for n in names) + '\n')

    for script in _SCRIPTS:
      run_python('-c', _BOOTSTRAP, script, cwd=work)

    lengths = np.loadtxt(os.path.join(work, 'denoised_data', 'frames_cnt.txt'), dtype=np.int64)
    setup = np.array([int(n[1:4]) for n in names])
    performer = np.array([int(n[9:12]) for n in names])
    label = np.array([int(n[17:20]) for n in names]) - 1

    reference_environment()  # for the reference's get_indices
    cwd = os.getcwd()
    os.chdir(work)
    try:
      seq = runpy.run_path(os.path.join(work, 'seq_transformation.py'), run_name='ref_seq')
    finally:
      os.chdir(cwd)

    arrays, splits, feeder_out, max_frames = {}, {}, {}, None
    (feeder_ntu,) = import_reference(ref, 'feeder_ntu')
    for evaluation, benchmark in (('XSub', 'xsub'), ('XSet', 'xset')):
      path = os.path.join(work, f'NTU120_{evaluation}.npz')
      npz = np.load(path)
      train_idx, test_idx = seq['get_indices'](performer, setup, evaluation)
      splits[benchmark] = {}
      feeder_out[benchmark] = {}
      for split, idx in (('train', train_idx), ('test', test_idx)):
        x = npz[f'x_{split}']
        y = np.argmax(npz[f'y_{split}'], axis=1)
        max_frames = x.shape[1] if max_frames is None else max_frames
        assert x.shape[1] == max_frames == lengths.max(), (x.shape, lengths.max())
        split_names = [names[i] for i in idx]
        splits[benchmark][split] = split_names
        for row, i in enumerate(idx):
          assert y[row] == label[i]
          assert not x[row, lengths[i]:].any(), 'reference padding is not zero'
          sample = _to_ours(x[row, :lengths[i]])
          if names[i] in arrays:
            np.testing.assert_array_equal(arrays[names[i]], sample)
          arrays[names[i]] = np.ascontiguousarray(sample, dtype=np.float32)
        feeder = feeder_ntu.Feeder(data_path=path, split=split, use_mmap=False)
        # The feeder drops rows; its kept rows are the mutual ones of this split, in order.
        kept = [n for n in split_names if 49 <= int(n[17:20]) - 1 <= 59 or
                int(n[17:20]) - 1 >= 105]
        assert len(kept) == len(feeder.label)
        for n, data in zip(kept, feeder.data):  # (3, T, 25, 2)
          np.testing.assert_array_equal(
              np.asarray(data).transpose(1, 2, 3, 0)[:lengths[names.index(n)]], arrays[n])
        feeder_out[benchmark][split] = {'names': kept,
                                        'labels': [int(v) for v in feeder.label]}

  assert sorted(arrays) == names
  save_expected(out, {'names': names, 'skipped': skipped,
                      'lengths': {n: int(v) for n, v in zip(names, lengths)},
                      'padded_frames': int(max_frames), 'splits': splits,
                      'feeder_mutual26': feeder_out}, arrays, arrays_name='expected.npz')
  print(f'wrote {len(names)} samples to {out}')


if __name__ == '__main__':
  main()
