"""istanet_jax.files: a target is replaced whole or not at all."""

import os
import stat

import pytest

from istanet_jax import files


def test_atomic_path_replaces_on_success(tmp_path):
  target = tmp_path / 'sub' / 'out.json'
  with files.atomic_path(target, '.json') as tmp:
    assert tmp.endswith('.json') and os.path.dirname(tmp) == str(target.parent)
    with open(tmp, 'w') as f:
      f.write('new')
    assert not target.exists()  # nothing visible until the block ends
  assert target.read_text() == 'new'
  assert os.listdir(target.parent) == ['out.json']


def test_atomic_path_keeps_old_file_on_error(tmp_path):
  target = tmp_path / 'out.pt'
  target.write_text('old')
  with pytest.raises(RuntimeError, match='killed'):
    with files.atomic_path(target, '.pt') as tmp:
      with open(tmp, 'w') as f:
        f.write('half')
      raise RuntimeError('killed')
  assert target.read_text() == 'old'
  assert os.listdir(tmp_path) == ['out.pt']


def test_temp_beside_has_default_permissions(tmp_path):
  umask = os.umask(0o022)
  try:
    tmp = files.temp_beside(tmp_path / 'x')
  finally:
    os.umask(umask)
  assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o644
