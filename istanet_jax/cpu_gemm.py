"""The model's convolutions on the CPU as calls into the BLAS that NumPy ships (OpenBLAS).

On the CPU XLA's matmuls (Eigen, XNNPACK) reach 180-320 GFLOP/s on the model's shapes where
OpenBLAS reaches 270-380 (`benchmarks/results/cpu_gemm.json`), and XLA runs the 1-D
convolutions' gradients through shifted copies of the output gradient. `csrc/conv1d_gemm.cc`
does each 1-D convolution, its input gradient and its weight gradient as a few large GEMMs on
row offsets of the caller's buffers (no copies), registered with XLA as FFI custom calls.

The library is compiled on first use with the machine's C++ compiler against the FFI headers
that jaxlib ships, and cached under ~/.cache/istanet_jax/kernels (ISTANET_KERNEL_CACHE moves
it). Where anything is missing (no compiler, no BLAS) `available()` says why and the model keeps
XLA's matmuls: the result is the same up to float32 rounding.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import hashlib
import logging
import os
import subprocess
import sys

import jax
import numpy as np

from istanet_jax import files

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'csrc', 'conv1d_gemm.cc')
_TARGETS = {'istanet_conv1d': 'IstanetConv1d',
            'istanet_conv1d_weight_grad': 'IstanetConv1dWeightGrad'}
# (symbol, 64-bit integers): NumPy >= 2 wheels' OpenBLAS, older ILP64 builds, plain CBLAS.
_SGEMM_SYMBOLS = (('scipy_cblas_sgemm64_', True), ('cblas_sgemm64_', True), ('cblas_sgemm', False))


class Unavailable(RuntimeError):
  """The BLAS kernels cannot be used on this machine (the message says why)."""


def cache_dir() -> str:
  return os.environ.get('ISTANET_KERNEL_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'istanet_jax', 'kernels')


def _blas_candidates() -> list[str]:
  """NumPy's bundled OpenBLAS first (what `numpy.matmul` runs), then system libraries."""
  site = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
  paths = sorted(glob.glob(os.path.join(site, 'numpy.libs', '*openblas*.so*')))
  paths += sorted(glob.glob(os.path.join(os.path.dirname(np.__file__), '.dylibs', '*openblas*')))
  for name in ('openblas', 'mkl_rt', 'cblas', 'blas'):
    found = ctypes.util.find_library(name)
    if found:
      paths.append(found)
  return paths


def _find_sgemm() -> tuple[int, bool, str]:
  """(address of a CBLAS sgemm, whether it takes 64-bit integers, library)."""
  for path in _blas_candidates():
    try:
      lib = ctypes.CDLL(path)
    except OSError:
      continue
    for symbol, ilp64 in _SGEMM_SYMBOLS:
      fn = getattr(lib, symbol, None)
      if fn is not None:
        return ctypes.cast(fn, ctypes.c_void_p).value, ilp64, path
  raise Unavailable('no CBLAS sgemm found (looked in NumPy\'s bundled OpenBLAS and the system '
                    'libraries openblas, mkl_rt, cblas, blas)')


def _library_path() -> str:
  """The compiled library for this source and jaxlib, built if missing."""
  with open(_SOURCE, 'rb') as f:
    source = f.read()
  include = jax.ffi.include_dir()
  compiler = os.environ.get('CXX', 'c++')
  key = hashlib.sha256(source + jax.__version__.encode() + include.encode()
                       + compiler.encode()).hexdigest()[:16]
  path = os.path.join(cache_dir(), f'conv1d_gemm-{key}.so')
  if os.path.exists(path):
    return path
  with files.atomic_path(path, '.so') as tmp:
    cmd = [compiler, '-O3', '-std=c++17', '-shared', '-fPIC', '-w', f'-I{include}', _SOURCE,
           '-o', tmp]
    try:
      result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
      raise Unavailable(f'no C++ compiler ({compiler}: {e}); set CXX to one') from e
    if result.returncode:
      raise Unavailable(f'compiling {_SOURCE} failed ({" ".join(cmd)}):\n{result.stderr[-2000:]}')
  return path


@functools.lru_cache(maxsize=None)
def _load() -> str:
  """Builds, loads and registers the kernels once per process; returns the BLAS in use."""
  if sys.platform != 'linux' and sys.platform != 'darwin':
    raise Unavailable(f'not built on {sys.platform}')
  address, ilp64, blas = _find_sgemm()
  lib = ctypes.CDLL(_library_path())
  lib.IstanetSetSgemm.argtypes = [ctypes.c_void_p, ctypes.c_int]
  lib.IstanetSetSgemm(address, int(ilp64))
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
  return blas


def available() -> tuple[bool, str]:
  """(whether the kernels load here, the BLAS library or the reason they do not)."""
  try:
    return True, _load()
  except Unavailable as e:
    return False, str(e)


@functools.lru_cache(maxsize=None)
def use_by_default() -> bool:
  """'auto': on a single CPU device where the kernels load (a sharded program would have to
  gather a custom call's operands; GPUs keep XLA's matmuls)."""
  if jax.default_backend() != 'cpu' or jax.device_count() != 1:
    return False
  ok, why = available()
  if not ok:
    logging.warning('istanet_jax: BLAS convolutions unavailable, using XLA matmuls: %s', why)
  return ok


def conv1d(x: jax.Array, w: jax.Array) -> jax.Array:
  """x (P, L, R, I), w (k, I, O) float32 -> y (P, L, R, O), y[:, l] = sum_j x[:, l+j-pad] @ w[j].

  Zero padding, pad = (k - 1) // 2, k odd. With k = 1 a plain matmul of all rows.
  """
  _load()
  out = jax.ShapeDtypeStruct(x.shape[:3] + (w.shape[2],), x.dtype)
  return jax.ffi.ffi_call('istanet_conv1d', out, has_side_effect=True)(x, w)


def conv1d_weight_grad(x: jax.Array, dy: jax.Array, k: int) -> jax.Array:
  """dw (k, I, O) of `conv1d` from x (P, L, R, I) and the output gradient dy (P, L, R, O)."""
  _load()
  out = jax.ShapeDtypeStruct((k, x.shape[3], dy.shape[3]), x.dtype)
  return jax.ffi.ffi_call('istanet_conv1d_weight_grad', out, has_side_effect=True)(x, dy)
