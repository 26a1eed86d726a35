"""Writing files so that nobody ever reads a half-written one (a killed run leaves the old file).

Every writer of a user-facing artefact (exports, `.pt` state dicts, submission JSON, the metrics
log when a resumed run rewrites it) writes a temporary file beside the target and renames it
over the target only once the write has finished.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator


def temp_beside(path: str | os.PathLike, suffix: str = '') -> str:
  """A new empty file in `path`'s folder (created if missing), with the permissions
  `open(path, 'w')` would give (mkstemp's are private)."""
  directory = os.path.dirname(os.path.abspath(os.fspath(path)))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp_', suffix=suffix)
  umask = os.umask(0)
  os.umask(umask)
  os.fchmod(fd, 0o666 & ~umask)
  os.close(fd)
  return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = '') -> Iterator[str]:
  """Yields a temporary path to write; on success it replaces `path`, on error it is removed.

  `suffix` keeps the extension for writers that look at it (torch.save, ONNX).
  """
  tmp = temp_beside(path, suffix)
  try:
    yield tmp
    os.replace(tmp, os.fspath(path))
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
