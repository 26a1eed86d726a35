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

import argparse
import glob
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from data_pipelines.synthetic_sbu_h2o import write_h2o_tree  # noqa: E402

TREE_KWARGS = {'num_per_class': 2, 'num_eval_per_class': 1, 'seed': 0}
# Reference split name -> ours.
SPLITS = {'train': 'train', 'val': 'validation', 'test': 'test'}
FULL_ARRAYS_PER_SPLIT = 1  # the first clip, longer than 120 frames


def digest(skeleton: np.ndarray) -> str:
  """sha256 of a float32 (T, 21, 3, 3) array's C-order bytes (the tests compute the same)."""
  return hashlib.sha256(np.ascontiguousarray(skeleton, dtype=np.float32).tobytes()).hexdigest()


def tree_digest(root: str) -> str:
  """sha256 over every file of the synthetic tree, so the tests notice a changed generator."""
  h = hashlib.sha256()
  for path in sorted(glob.glob(os.path.join(root, '**', '*'), recursive=True)):
    if os.path.isfile(path):
      h.update(os.path.relpath(path, root).replace(os.sep, '/').encode())
      with open(path, 'rb') as f:
        h.update(f.read())
  return h.hexdigest()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--reference_dir', required=True)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
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
    subprocess.run([sys.executable, script, '--root', root, '--dest', dest, '--frames', '120'],
                   cwd=tmp, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'expected.json'), 'w') as f:
    json.dump(expected, f, indent=1, sort_keys=True)
  np.savez_compressed(os.path.join(args.out, 'arrays.npz'), **arrays)


if __name__ == '__main__':
  main()
