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
