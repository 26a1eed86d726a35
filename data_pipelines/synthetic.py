"""Synthetic raw trees in the four datasets' exact on-disk formats, for tests and the demo.

Each writer is deterministic (seeded), small, includes the awkward cases its reader must handle,
and moves the joints in a class-dependent way so a model can learn the classes:

  ntu          write_ntu_tree(root, num_per_class=4, seed=0)            `.skeleton` files
  sbu          write_sbu_tree(root, num_per_class=2, seed=0, ...)       `skeleton_pos.txt`
  h2o          write_h2o_tree(root, num_per_class=2, seed=0, ...)       `cam4/*_pose`, `label_split`
  assembly101  write_assembly101_tree(root, num_per_class=2, seed=0)    `poses_60fps/*.json`, csvs

The writers live beside their formats' details (`synthetic_ntu.py`, `synthetic_sbu_h2o.py`,
`synthetic_assembly101.py`); this module is the one place to reach them by dataset.
"""

from __future__ import annotations

import os
from typing import Callable

from data_pipelines.synthetic_assembly101 import write_assembly101_tree
from data_pipelines.synthetic_ntu import write_ntu_tree
from data_pipelines.synthetic_sbu_h2o import write_h2o_tree, write_sbu_tree

WRITERS: dict[str, Callable[..., str]] = {
    'ntu': write_ntu_tree,
    'sbu': write_sbu_tree,
    'h2o': write_h2o_tree,
    'assembly101': write_assembly101_tree,
}

__all__ = ['WRITERS', 'write_tree', 'write_ntu_tree', 'write_sbu_tree', 'write_h2o_tree',
           'write_assembly101_tree']


def write_tree(kind: str, root: str | os.PathLike, **kwargs) -> str:
  """Writes the synthetic raw tree of dataset `kind` (a key of WRITERS) into `root`."""
  if kind not in WRITERS:
    raise ValueError(f'unknown synthetic tree {kind!r}; choose one of {sorted(WRITERS)}')
  return WRITERS[kind](root, **kwargs)
