"""Reads the reference parity fixtures (../shared/fixtures/reference_parity, README there)."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

FIXTURES = pathlib.Path(os.environ.get(
    'ISTANET_PARITY_DIR',
    pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'fixtures' / 'reference_parity'))


def case_names():
  if not FIXTURES.is_dir():
    raise FileNotFoundError(
        f'parity fixtures not found at {FIXTURES}; set ISTANET_PARITY_DIR to the folder that '
        f'holds the reference parity cases')
  return sorted(p.name for p in FIXTURES.iterdir() if (p / 'case.json').is_file())


class Case:

  def __init__(self, name: str):
    self.name = name
    self.dir = FIXTURES / name
    self.meta = json.loads((self.dir / 'case.json').read_text())
    self.model_args = self.meta['model_args']
    self.float64 = str(self.meta['dtype']).startswith('float64')
    self.arrays = dict(np.load(self.dir / 'case.npz'))
    self.step = self.meta.get('step', {})

  def prefixed(self, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}

  def state_dict(self) -> dict:
    """float64 cases: the float64 originals; float32 cases: the stored .pt."""
    if self.float64:
      return self.prefixed('before/')
    from istanet_jax.torch_compat import load_pt
    return load_pt(self.dir / 'state_dict.pt')

  @property
  def x(self):
    return self.arrays['x']

  @property
  def y(self):
    return self.arrays['y']
