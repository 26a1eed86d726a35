"""Runs the reference's Assembly101 preprocessing on our synthetic tree and stores what it produced.

  python tests/tools/make_assembly101_expected.py --reference_dir /tmp/ista_ref \
      --out tests/data/assembly101/

Steps, each the reference's own script or class, untouched:
  1. `write_assembly101_tree(tmp/download)` (defaults: num_per_class=2, seed=0).
  2. data/asb/Preprocess/1_generate_pose_data.py and PreprocessTest/1_generate_pose_data.py, with
     the trailing '/' their `+` path joins need.
  3. Preprocess/2_get_final_dataset.py for --type action, verb and noun, and
     PreprocessTest/2_get_final_dataset.py, with --data_path without a trailing '/' (the output
     folder is derived from its dirname).
  4. feeders/feeder_asb.py: `Feeder` (train, validation) and `Feeder_Test` load the arrays and
     labels; `__getitem__` is called with `tools.valid_crop_resize` stubbed to record the
     reference's `valid_frame_num` (matplotlib, which feeders/tools imports, is stubbed if absent).

Stored (well under 1 MB): expected.json with, per split, one record per reference sample, keyed by
the step-1 counter (train/validation) or id (test), holding its labels, raw length, valid frame
count and the sha256 of its (200, 21, 2, 3) float32 array in our layout; arrays.npz with a few full
arrays (first min(T, 200) frames) for readable diffs. Needs pandas and tqdm (the reference's
imports) and torch (the feeder's).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

import numpy as np

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]  # the repository, and tests/ for reference_outputs

from data_pipelines.synthetic_assembly101 import write_assembly101_tree  # noqa: E402
from reference_outputs import (  # noqa: E402
    digest, import_reference, run_python, save_expected, tool_args, tree_digest)

TREE_KWARGS = {'num_per_class': 2, 'seed': 0}
LABELED_NAME = re.compile(r'^(tr|va)(\d+)_a(\d+)_v(\d+)_n(\d+)_len(\d+)_(.*)\.pkl$')
TEST_NAME = re.compile(r'^te(\d+)_len(\d+)\.pkl$')


def feeder_items(feeder, tools):
  """(sample arrays in our layout, valid_frame_num) per index, via the feeder's __getitem__."""
  seen = []

  def record(data_numpy, valid_frame_num, p_interval, window):
    seen.append((np.array(data_numpy), int(valid_frame_num)))
    return data_numpy

  original = tools.valid_crop_resize
  tools.valid_crop_resize = record
  try:
    for i in range(len(feeder)):
      feeder[i]
  finally:
    tools.valid_crop_resize = original
  return [(d.transpose(1, 2, 3, 0), v) for d, v in seen]


def main():
  args = tool_args(__doc__)
  ref = os.path.abspath(args.reference_dir)
  asb = os.path.join(ref, 'data', 'asb')

  with tempfile.TemporaryDirectory() as tmp:
    root = write_assembly101_tree(os.path.join(tmp, 'download'), **TREE_KWARGS)
    raw = os.path.join(tmp, 'RAW_contex25_thresh0')
    step1 = ['--rootdir', os.path.join(root, 'poses_60fps') + '/',
             '--csvdir', os.path.join(root, 'fine-grained-annotations') + '/',
             '--savedir', raw + '/']
    run_python(os.path.join(asb, 'Preprocess', '1_generate_pose_data.py'), *step1, cwd=tmp)
    run_python(os.path.join(asb, 'PreprocessTest', '1_generate_pose_data.py'), *step1, cwd=tmp)
    for task in ('action', 'verb', 'noun'):
      run_python(os.path.join(asb, 'Preprocess', '2_get_final_dataset.py'), '--data_path', raw,
                 '--type', task, cwd=tmp)
    run_python(os.path.join(asb, 'PreprocessTest', '2_get_final_dataset.py'), '--data_path',
               raw, '--type', 'action', cwd=tmp)

    feeder_asb, tools = import_reference(ref, 'feeder_asb', 'tools')
    out_dirs = {'action': 'share_contex25_thresh0', 'verb': 'share_contex25_thresh0_verb',
                'noun': 'share_contex25_thresh0_noun'}
    expected = {'tree': TREE_KWARGS, 'tree_sha256': tree_digest(root), 'splits': {}}
    arrays = {}
    for split in ('train', 'validation'):
      labels = {}
      for task, folder in out_dirs.items():
        feeder = feeder_asb.Feeder(
            data_path=os.path.join(tmp, folder, f'{split}_data_joint_200.npy'),
            label_path=os.path.join(tmp, folder, f'{split}_label.pkl'), use_mmap=False)
        labels[task] = dict(zip(feeder.sample_name, (int(x) for x in feeder.label)))
        if task == 'action':
          names = list(feeder.sample_name)
          items = feeder_items(feeder, tools)
      records = []
      for name, (skeleton, valid) in zip(names, items):
        m = LABELED_NAME.match(name)
        records.append({
            'counter': int(m.group(2)), 'action': int(m.group(3)), 'verb': int(m.group(4)),
            'noun': int(m.group(5)), 'raw_length': int(m.group(6)), 'action_cls': m.group(7),
            'label': {task: labels[task][name] for task in out_dirs},
            'valid_frame_num': valid, 'sha256': digest(skeleton)})
        records[-1]['_skeleton'] = skeleton
      records.sort(key=lambda r: r['counter'])
      expected['splits'][split] = records

    test_dir = os.path.join(tmp, out_dirs['action'])
    feeder = feeder_asb.Feeder_Test(data_path=os.path.join(test_dir, 'test_data_joint_200.npy'),
                                    use_mmap=False)
    # Feeder_Test has no names; the row order is step 2's id order, so read the ids from step 1.
    test_names = sorted(os.listdir(os.path.join(raw, 'test')),
                        key=lambda n: int(TEST_NAME.match(n).group(1)))
    records = []
    for name, (skeleton, valid) in zip(test_names, feeder_items(feeder, tools)):
      m = TEST_NAME.match(name)
      raw_length = int(m.group(2))
      ones = raw_length == 10 and bool((skeleton[:10] == 1).all())
      records.append({'id': int(m.group(1)), 'raw_length': raw_length, 'pose_missing': ones,
                      'valid_frame_num': valid, 'sha256': digest(skeleton), '_skeleton': skeleton})
    expected['splits']['test'] = records

  # Full arrays for a few samples: the one with the fewest valid frames relative to its length
  # (pose gaps), the longest (200-frame cap), and the first (clamped context or ones).
  for split, records in expected['splits'].items():
    picks = {0, max(range(len(records)), key=lambda i: records[i]['raw_length']),
             min(range(len(records)),
                 key=lambda i: records[i]['valid_frame_num'] - min(records[i]['raw_length'], 200))}
    for i in sorted(picks):
      r = records[i]
      key = r.get('counter', r.get('id'))
      arrays[f'{split}_{key}'] = r['_skeleton'][:min(r['raw_length'], 200)]
    for r in records:
      del r['_skeleton']
    expected['splits'][split] = records

  save_expected(args.out, expected, arrays, final_newline=True)
  print({split: len(r) for split, r in expected['splits'].items()}, sorted(arrays))


if __name__ == '__main__':
  main()
