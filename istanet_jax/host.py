"""Process-wide settings that make XLA:CPU fast here; entry points call `configure()` first.

Three settings, all measured on the NTU Mutual 26 model (benchmarks/README.md):

* XNNPACK for XLA:CPU's matmuls (`--xla_cpu_use_xnnpack=true`, jax's default from 0.11 on):
  the tall, narrow matmuls this model is made of run about 1.6x faster than with Eigen on
  jax 0.10. Read when the first JAX backend starts, so `configure()` must come before.
* glibc's allocator keeps freed memory instead of handing it back to the kernel (no mmap-ed
  chunks, no trimming). XLA:CPU allocates each step's temporaries afresh: with glibc's
  defaults every large buffer is a new mmap, so a batch-16 NTU eval step took ~1.6 million
  page faults, whose kernel time also serialises the compute threads. Memory the process has
  used stays reserved for it (its RSS does not shrink after the peak step). The number of
  arenas is left alone: with one (all threads on the main heap), XLA's compiler threads queue
  on its lock, and lowering and compiling the NTU train step took 11.5-12.0 s instead of
  9.3-9.4 s. The price: a thread arena still mmaps a buffer larger than its 64 MB heap (glibc
  does, whatever M_MMAP_MAX says), so the train step's worker threads fault ~0.1 million
  pages per step afresh (one arena: a few thousand), which measured no slower (16.5-16.7 s
  against 16.3-17.3 s; benchmarks/PERFORMANCE.md). ISTANET_MALLOC_ARENA_MAX=n sets glibc's
  M_ARENA_MAX (1: the single heap).

  With that, single-device CPU computations run synchronously (`jax_cpu_enable_async_dispatch`
  off): with asynchronous dispatch the next step could allocate its temporaries before the
  previous step's were freed, and the heap, which glibc then keeps, doubled at random (the NTU
  batch-16 train step: 12.3 GB, then 22.6 GB at its fourth call, out of memory on 24 GB).
  On XLA:CPU the device is these cores, so dispatching ahead overlaps little.

* Python's cyclic garbage collector runs its young generation every 10,000 net allocations
  instead of 700. Tracing the NTU train step allocates hundreds of thousands of short-lived
  objects, and each full collection walks every object jax and flax hold: the trace
  (`.trace()` of `benchmarks.throughput.make_steps`' jitted NTU train step, batch 16) took
  1.29-1.35 s with the default threshold and 0.94-1.07 s with this one (`GC_THRESHOLD0`).

* LLVM does not unroll loops in XLA:CPU's kernels (`--xla_backend_extra_options=
  xla_cpu_disable_loop_unrolling`, an option of XLA's CPU backend; its GPU backends skip
  `xla_` keys). The NTU train step compiled in 9.0-10.5 s instead of 10.5 / 13.4 s and stepped
  no slower (16.2-16.4 s against 16.6 / 17.6 s; `python -m benchmarks.first_step`, benchmarks/
  PERFORMANCE.md). Its LLVM-compiled kernels are memory-bound loops and the matmuls are
  XNNPACK's, so unrolling bought nothing at run time. Float32 results may move by an ulp.

Set ISTANET_HOST_DEFAULTS=0 to leave all this alone; XLA_FLAGS naming xla_cpu_use_xnnpack or
xla_backend_extra_options wins over the matching setting.

`enable_compilation_cache` keeps compiled programs on disk (JAX's persistent cache): a run
that compiles what an earlier one did, e.g. a resumed or repeated training, loads them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
from typing import Optional

_XNNPACK = '--xla_cpu_use_xnnpack'
_EXTRA_OPTIONS = '--xla_backend_extra_options'
_NO_LOOP_UNROLLING = 'xla_cpu_disable_loop_unrolling'
# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_done = []
GC_THRESHOLD0 = 10_000


def nothing_applied() -> dict:
  """What `configure()` reports where it changed nothing (ISTANET_HOST_DEFAULTS=0)."""
  return {'xnnpack': False, 'no_loop_unrolling': False, 'malloc': False,
          'malloc_arena_max': None, 'sync_cpu_dispatch': False, 'gc_threshold0': None}


def configure() -> dict:
  """Applies the settings above once per process; returns what was done (for benchmark logs)."""
  if _done:
    return _done[0]
  applied = nothing_applied()
  if os.environ.get('ISTANET_HOST_DEFAULTS', '1') != '0':
    gc.set_threshold(GC_THRESHOLD0, *gc.get_threshold()[1:])
    applied['gc_threshold0'] = GC_THRESHOLD0
    flags = os.environ.get('XLA_FLAGS', '')
    if _XNNPACK not in flags:
      flags = f'{flags} {_XNNPACK}=true'.strip()
      applied['xnnpack'] = True
    if _EXTRA_OPTIONS not in flags:
      flags = f'{flags} {_EXTRA_OPTIONS}={_NO_LOOP_UNROLLING}'
      applied['no_loop_unrolling'] = True
    os.environ['XLA_FLAGS'] = flags
    arenas = os.environ.get('ISTANET_MALLOC_ARENA_MAX') or None
    applied['malloc'] = _keep_freed_memory(arenas)
    if applied['malloc']:
      applied['malloc_arena_max'] = arenas
      import jax  # pylint: disable=g-import-not-at-top
      jax.config.update('jax_cpu_enable_async_dispatch', False)  # read when the client starts
      applied['sync_cpu_dispatch'] = True
  _done.append(applied)
  return applied


def _glibc(function: str):
  """glibc's `function` through ctypes, or None off Linux or glibc (musl has no mallopt)."""
  if not sys.platform.startswith('linux'):
    return None
  try:
    return getattr(ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6'), function)
  except (OSError, AttributeError):
    return None


def _keep_freed_memory(arenas: Optional[str] = None) -> bool:
  mallopt = _glibc('mallopt')
  if mallopt is None:
    return False
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  # No mmap-ed chunks, and heaps are never trimmed (trim threshold -1 is SIZE_MAX to glibc).
  settings = [(_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)]
  if arenas:
    settings.append((_M_ARENA_MAX, int(arenas)))
  return all(mallopt(param, value) == 1 for param, value in settings)


def config_override_error(error: AttributeError) -> str:
  """One line for config_flags' AttributeError (around a KeyError whose text may suggest the
  key meant) at an override of a key the config lacks."""
  detail = error
  while isinstance(detail, (AttributeError, KeyError)) and detail.args:
    detail = detail.args[0]
  lines = [l.strip() for l in str(detail).splitlines() if l.strip()]
  return f'a --config.<key>=value override names no key of the config: {"; ".join(lines)}'


def parse_flags(argv: list) -> list:
  """absl's flag parsing for `app.run(..., flags_parser=parse_flags)`: a `--config.<key>=value`
  override of a key the config lacks exits with one line (config_flags raises AttributeError)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  try:
    return app.parse_flags_with_usage(argv)
  except AttributeError as e:
    sys.exit(f'error: {config_override_error(e)}')


def release_freed_memory() -> bool:
  """Hands the memory the process has freed back to the kernel (glibc's malloc_trim), which the
  settings above otherwise keep; for benchmarks that must make room for another process."""
  malloc_trim = _glibc('malloc_trim')
  return malloc_trim is not None and bool(malloc_trim(ctypes.c_size_t(0)))


def default_cache_dir() -> str:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'istanet_jax', 'xla')


def enable_compilation_cache(path: str) -> None:
  """JAX's persistent compilation cache in `path`, for every program however fast it compiled."""
  import jax  # pylint: disable=g-import-not-at-top
  os.makedirs(path, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
