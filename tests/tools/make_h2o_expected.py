"""Runs the reference's H2O preprocessing on our synthetic tree and stores what it produced.

  python tests/tools/make_h2o_expected.py --reference_dir /tmp/ista_ref --out tests/data/h2o/

Steps, each the reference's own script, untouched:
  1. `write_h2o_tree(tmp/h2o)` with TREE_KWARGS.
  2. data/h2o/generate_h2o.py --root tmp/h2o --dest tmp/pth --frames 120 (its dest/{val,train,test}
     folders made first, as torch.save needs them), then torch.load of the .pth files it wrote.
  3. The script's own `read_split(root, split, False)` for the row order (path, start_act,
     end_act, id), since the .pth files carry no names.

Stored (well under 1 MB): expected.json with the tree kwargs, a digest of the tree, and per split
the sample names (`path:start_act:end_act`), ids, labels (gt - 1, the feeder's shift; -1 for test)
and the sha256 of each float32 sample in our (120, 21, 3, 3) layout; arrays.npz with a few full
arrays for readable diffs. Needs pandas and tqdm (the reference's imports) and torch.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile

import numpy as np

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]  # the repository, and tests/ for reference_outputs

from data_pipelines.synthetic_sbu_h2o import write_h2o_tree  # noqa: E402
from reference_outputs import (  # noqa: E402
    digest, run_python, save_expected, tool_args, tree_digest)

TREE_KWARGS = {'num_per_class': 2, 'num_eval_per_class': 1, 'seed': 0}
# Reference split name -> ours.
SPLITS = {'train': 'train', 'val': 'validation', 'test': 'test'}
FULL_ARRAYS_PER_SPLIT = 1  # the first clip, longer than 120 frames


def main():
  args = tool_args(__doc__)
  import torch

  script = os.path.join(os.path.abspath(args.reference_dir), 'data', 'h2o', 'generate_h2o.py')
  spec = importlib.util.spec_from_file_location('generate_h2o', script)
  generate_h2o = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(generate_h2o)

  expected = {'tree_kwargs': TREE_KWARGS, 'splits': {}}
  arrays = {}
  with tempfile.TemporaryDirectory() as tmp:
    root = write_h2o_tree(os.path.join(tmp, 'h2o'), **TREE_KWARGS)
    expected['tree_digest'] = tree_digest(root)
    dest = os.path.join(tmp, 'pth')
    for split in SPLITS:
      os.makedirs(os.path.join(dest, split))
    run_python(script, '--root', root, '--dest', dest, '--frames', '120', cwd=tmp)
    for split, ours in SPLITS.items():
      data = torch.load(os.path.join(dest, split, 'data.pth')).numpy()  # (N, C, T, V, M)
      assert data.dtype == np.float32, data.dtype
      if split == 'test':
        labels = [-1] * len(data)
      else:
        labels = [int(g) - 1 for g in torch.load(os.path.join(dest, split, 'gt.pth'))]
      df = generate_h2o.read_split(root, split, False)
      assert len(df) == len(data)
      names = [f'{p}:{s}:{e}' for p, s, e in zip(df['path'], df['start_act'], df['end_act'])]
      records = []
      for i, (name, sample) in enumerate(zip(names, data)):
        ours_layout = sample.transpose(1, 2, 3, 0)  # (T, V, M, C)
        records.append({'name': name, 'id': int(df['id'].iloc[i]), 'label': labels[i],
                        'sha256': digest(ours_layout)})
        if i < FULL_ARRAYS_PER_SPLIT:
          arrays[f'{ours}/{name}'] = ours_layout
      expected['splits'][ours] = records
      print(split, len(records))

  save_expected(args.out, expected, arrays, sort_keys=True)


if __name__ == '__main__':
  main()
