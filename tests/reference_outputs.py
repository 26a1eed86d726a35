"""Stored reference outputs under tests/data/: how they are fingerprinted, written and read back.

The tools in tests/tools/ run the official ISTA-Net code (a read-only checkout) on our synthetic
trees and store what it produced; the reader tests compare our output against those files. Both
sides use this module so a digest, a stored file's layout and the reference's import-time
workarounds are defined once. The tests import it from tests/ (on sys.path through conftest.py);
the tools put tests/ on sys.path themselves, as they run as scripts from the repository root.
Needs only numpy: torch and the reference are imported by the tools, after `import_reference`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import types
import zlib

import numpy as np

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')


def digest(skeleton: np.ndarray) -> str:
  """sha256 of a skeleton's C-order float32 bytes, the form every stored sample digest has."""
  return hashlib.sha256(np.ascontiguousarray(skeleton, dtype=np.float32).tobytes()).hexdigest()


def hashed_uniform(key: str, size: int) -> np.ndarray:
  """`size` float64 values uniform in [-1, 1), a pure function of (key, index).

  splitmix64's finaliser over the index offset by the key's crc32, in exact uint64 arithmetic:
  the same numbers on every machine and numpy version (a seeded generator's stream promises
  neither), and no structure a model could notice (a sine of the index would make every weight
  matrix rank 2).
  """
  z = np.arange(size, dtype=np.uint64) + np.uint64(zlib.crc32(key.encode()) << 32)
  z = z * np.uint64(0x9E3779B97F4A7C15)
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  z = z ^ (z >> np.uint64(31))
  return (z >> np.uint64(11)).astype(np.float64) * 2.0**-52 - 1.0


def hashed_state_dict(shapes: dict) -> dict[str, np.ndarray]:
  """A reference model's state dict (float64, torch layout) from its {key: shape}.

  Every value is `hashed_uniform` of its key, scaled as its role wants, so that every parameter
  and statistic matters and the model stays well conditioned: conv weights ~U(+-1/sqrt(fan_in))
  (torch's own default scale), biases and running means +-0.1, BatchNorm scales and `alpha`
  1 +- 0.2, running variances 1 +- 0.5, `M` (1 +- 0.5) / num_tokens; counters 0.
  """
  state = {}
  for key, shape in shapes.items():
    shape = tuple(shape)
    size = int(np.prod(shape, dtype=np.int64))
    u = hashed_uniform(key, size).reshape(shape)
    prefix, _, name = key.rpartition('.')
    is_bn = f'{prefix}.running_mean' in shapes
    if name == 'num_batches_tracked':
      state[key] = np.zeros(shape, np.int64)
    elif name == 'running_var':
      state[key] = 1.0 + 0.5 * u
    elif name in ('running_mean', 'bias'):
      state[key] = 0.1 * u
    elif name == 'alpha' or (name == 'weight' and is_bn):
      state[key] = 1.0 + 0.2 * u
    elif name == 'M':
      state[key] = (1.0 + 0.5 * u) / shape[-1]
    elif name == 'weight':
      state[key] = u / np.sqrt(size // shape[0])
    else:
      raise ValueError(f'hashed_state_dict: no rule for {key!r}')
  return state


MODEL_BATCH = 2  # tests/data/models/


def model_input(model_args: dict) -> tuple[np.ndarray, np.ndarray]:
  """tests/data/models/' input: x (N, C, T, V, M) float64 `hashed_uniform('input')`, and labels
  (1, num_classes // 2)."""
  shape = (MODEL_BATCH, model_args['num_channels'], model_args['num_frames'],
           model_args['num_joints'], model_args['num_persons'])
  x = hashed_uniform('input', int(np.prod(shape))).reshape(shape)
  return x, np.array([1, model_args['num_classes'] // 2])


def probe(key: str, value: np.ndarray) -> tuple[float, float]:
  """(value . hashed_uniform(key + '/probe'), |value|) in float64: the dot product moves with
  any change of `value`, the norm gives the scale to judge it by."""
  value = np.asarray(value, np.float64).ravel()
  return float(value @ hashed_uniform(key + '/probe', value.size)), float(np.linalg.norm(value))


def tree_digest(root: str) -> str:
  """sha256 over every file (relative path, then bytes) of a synthetic raw tree.

  Stored next to the expected outputs, so a test notices that the generator changed and the
  outputs need regenerating, rather than failing on some sample.
  """
  paths = []
  for folder, _, files in os.walk(root):
    paths += [os.path.join(folder, f) for f in files]
  h = hashlib.sha256()
  for path in sorted(paths):
    h.update(os.path.relpath(path, root).replace(os.sep, '/').encode())
    with open(path, 'rb') as f:
      h.update(f.read())
  return h.hexdigest()


def load_expected(name: str, arrays: str | None = None) -> dict:
  """tests/data/<name>/expected.json; with `arrays`, that .npz's arrays under key 'arrays'."""
  with open(os.path.join(DATA_DIR, name, 'expected.json')) as f:
    expected = json.load(f)
  if arrays is not None:
    expected['arrays'] = load_arrays(name, arrays)
  return expected


def load_arrays(name: str, filename: str = 'arrays.npz') -> dict[str, np.ndarray]:
  """Every array of tests/data/<name>/<filename>, read into memory (the file is closed)."""
  with np.load(os.path.join(DATA_DIR, name, filename)) as npz:
    return {key: npz[key] for key in npz.files}


def save_expected(out: str, expected: dict, arrays: dict[str, np.ndarray], *,
                  arrays_name: str = 'arrays.npz', sort_keys: bool = False,
                  final_newline: bool = False) -> None:
  """Writes out/expected.json (indent 1) and out/<arrays_name> (compressed).

  `sort_keys` and `final_newline` only reproduce the byte layout each stored file already has.
  """
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'expected.json'), 'w') as f:
    json.dump(expected, f, indent=1, sort_keys=sort_keys)
    if final_newline:
      f.write('\n')
  np.savez_compressed(os.path.join(out, arrays_name), **arrays)


def tool_args(doc: str, argv=None) -> argparse.Namespace:
  """The arguments every tool takes: --reference_dir (the checkout) and --out (a folder)."""
  parser = argparse.ArgumentParser(description=doc.split('\n')[0])
  parser.add_argument('--reference_dir', required=True)
  parser.add_argument('--out', required=True)
  return parser.parse_args(argv)


def stub_modules(*names: str) -> None:
  """Empty stand-ins for modules the reference imports but never uses here (left if present)."""
  for name in names:
    sys.modules.setdefault(name, types.ModuleType(name))
    parent, _, child = name.rpartition('.')
    if parent in sys.modules and not hasattr(sys.modules[parent], child):
      setattr(sys.modules[parent], child, sys.modules[name])


def import_reference(reference_dir: str, *modules: str) -> list[types.ModuleType]:
  """Imports `feeders.<module>` for each name from the reference checkout.

  feeders/tools.py imports matplotlib at the top without using it; it is stubbed when missing.
  """
  if importlib.util.find_spec('matplotlib') is None:
    stub_modules('matplotlib', 'matplotlib.pyplot')
  reference_dir = os.path.abspath(reference_dir)
  if reference_dir not in sys.path:
    sys.path.insert(0, reference_dir)
  return [importlib.import_module(f'feeders.{m}') for m in modules]


def run_python(*args: str, cwd: str) -> None:
  """Runs `python *args` in cwd (a reference script, untouched); its stderr only on failure."""
  result = subprocess.run([sys.executable, *args], cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False)
  if result.returncode:
    sys.stderr.write(result.stderr)
    result.check_returncode()
