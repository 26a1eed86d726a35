"""What every raw-dataset reader shares: the sample record and the error type.

Readers (`data_pipelines/<dataset>.py`) are pure numpy and never import TensorFlow, so they
run on the GPU images, in tests, and inside TFDS builders alike.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np


class DataError(ValueError):
  """Malformed raw input: the message names the file (and line, when there is one) and why."""

  def __init__(self, path: str | os.PathLike, reason: str, line: Optional[int] = None):
    self.path = os.fspath(path)
    self.line = line
    self.reason = reason
    where = self.path if line is None else f'{self.path}:{line}'
    super().__init__(f'{where}: {reason}')


def read_text(path: str | os.PathLike, what: str, **open_args) -> str:
  """The whole text of `path`; a DataError naming it where it is missing, cannot be read or
  is not text (a partial or corrupt download among thousands of files)."""
  try:
    with open(path, 'r', **open_args) as f:
      return f.read()
  except FileNotFoundError:
    raise DataError(path, f'missing {what}') from None
  except OSError as e:
    raise DataError(path, f'cannot read {what} ({e.strerror or e})') from None
  except UnicodeDecodeError as e:
    raise DataError(path, f'{what} is not a text file ({e.reason})') from None


@dataclasses.dataclass
class Sample:
  """One sequence as a reader yields it.

  skeleton: float32 (T, V, M, 3), channels-last (frames, joints, entities, xyz).
  length: the number of frames that count (the reference's `valid_frame_num` rule is applied
    later, on device; this is how many frames the reader produced).
  label: the reference's 0-based label, or -1 where the split has none.
  """

  skeleton: np.ndarray
  length: int
  label: int
  sample_name: str
  id: Optional[int] = None
  verb: Optional[int] = None
  noun: Optional[int] = None

  def __post_init__(self):
    if self.skeleton.dtype != np.float32 or self.skeleton.ndim != 4 or self.skeleton.shape[-1] != 3:
      raise ValueError(f'{self.sample_name}: skeleton must be float32 (T, V, M, 3), got '
                       f'{self.skeleton.dtype} {self.skeleton.shape}')
