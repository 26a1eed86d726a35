"""Runs the reference's SBU loader on our synthetic tree and stores what it produced.

  python tests/tools/make_sbu_expected.py --reference_dir /tmp/ista_ref --out tests/data/sbu/

Steps:
  1. `write_sbu_tree(tmp)` with TREE_KWARGS (Clean/ and Noisy/).
  2. For each version, fold 0..4 and split train/test, the reference's own
     `feeders/feeder_sbu.py: Feeder(data_path=tmp/<Version>, split=..., fold=...)` (which calls
     `get_SBU`, normalization=False as in the configs). `Feeder.read_tensor` is wrapped only to
     record which file each sample came from (the reference keeps no names); matplotlib, which
     feeders/tools imports, is stubbed if absent.

Stored (well under 1 MB): expected.json with the tree kwargs, a digest of the tree, and per
version the per-fold/split sample names (`pair/label/seq`, in the reference's order, which
depends on os.listdir) and labels, plus per sample the sha256 of float32(reference) in our
(46, 15, 2, 3) layout; arrays.npz with a few full arrays for readable diffs. Needs pandas and
tqdm (the reference's imports) and torch.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]  # the repository, and tests/ for reference_outputs

from data_pipelines.synthetic_sbu_h2o import write_sbu_tree  # noqa: E402
from reference_outputs import (  # noqa: E402
    digest, import_reference, save_expected, tool_args, tree_digest)

TREE_KWARGS = {'num_per_class': 2, 'seed': 0}
VERSIONS = ('Clean', 'Noisy')
# Short (padded), long (truncated) and full-precision samples, stored in full.
FULL_ARRAYS = ('s01s02/01/001', 's01s02/02/001', 's02s03/03/001')


def main():
  args = tool_args(__doc__)
  (feeder_sbu,) = import_reference(args.reference_dir, 'feeder_sbu')

  recorded = []
  original_read = feeder_sbu.Feeder.read_tensor

  def recording_read(self, path):
    recorded.append(path)
    return original_read(self, path)

  feeder_sbu.Feeder.read_tensor = recording_read

  expected = {'tree_kwargs': TREE_KWARGS, 'versions': {}}
  arrays = {}
  with tempfile.TemporaryDirectory() as tmp:
    root = write_sbu_tree(os.path.join(tmp, 'sbu'), **TREE_KWARGS)
    expected['tree_digest'] = tree_digest(root)
    for version in VERSIONS:
      base = os.path.join(root, version)
      digests, splits = {}, {}
      for fold in range(5):
        for split in ('train', 'test'):
          recorded.clear()
          feeder = feeder_sbu.Feeder(data_path=base, split=split, fold=fold)
          data = feeder.data.numpy()  # (N, C, T, V, M), float64
          assert data.dtype == np.float64 and len(recorded) == len(data)
          names = [os.path.relpath(os.path.dirname(p), base).replace(os.sep, '/')
                   for p in recorded]
          splits[f'fold{fold}_{split}'] = {'names': names,
                                           'labels': [int(l) for l in feeder.label]}
          for name, sample in zip(names, data):
            ours_layout = sample.transpose(1, 2, 3, 0).astype(np.float32)  # (T, V, M, C)
            d = digest(ours_layout)
            assert digests.setdefault(name, d) == d, name
            if name in FULL_ARRAYS:
              arrays[f'{version}/{name}'] = ours_layout
      expected['versions'][version] = {'splits': splits, 'digests': digests}
      print(version, {k: len(v['names']) for k, v in splits.items()})

  save_expected(args.out, expected, arrays, sort_keys=True)


if __name__ == '__main__':
  main()
