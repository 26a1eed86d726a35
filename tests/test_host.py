"""istanet_jax.host: the process settings the entry points apply before JAX starts."""

import os

from istanet_jax import host


def _configure_afresh(monkeypatch, xla_flags):
  monkeypatch.setattr(host, '_done', [])
  monkeypatch.setenv('XLA_FLAGS', xla_flags)
  return host.configure(), os.environ['XLA_FLAGS']


def test_configure_adds_the_xla_cpu_flags_to_the_users(monkeypatch):
  applied, flags = _configure_afresh(monkeypatch, '--xla_force_host_platform_device_count=8')
  assert flags.split() == ['--xla_force_host_platform_device_count=8',
                           '--xla_cpu_use_xnnpack=true',
                           '--xla_backend_extra_options=xla_cpu_disable_loop_unrolling']
  assert applied['xnnpack'] and applied['no_loop_unrolling']


def test_xla_flags_naming_a_setting_win(monkeypatch):
  mine = '--xla_cpu_use_xnnpack=false --xla_backend_extra_options=xla_cpu_optimize_for_size'
  applied, flags = _configure_afresh(monkeypatch, mine)
  assert flags == mine
  assert not applied['xnnpack'] and not applied['no_loop_unrolling']
  assert applied['gc_threshold0'] == host.GC_THRESHOLD0  # the other settings still apply


def test_host_defaults_off_changes_nothing(monkeypatch):
  monkeypatch.setenv('ISTANET_HOST_DEFAULTS', '0')
  applied, flags = _configure_afresh(monkeypatch, '')
  assert flags == '' and applied == host.nothing_applied()


_FIRST_TOUCH = r'''
import ctypes, resource, sys, time
from istanet_jax import host
host.configure()
libc = ctypes.CDLL(None)
libc.malloc.argtypes, libc.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
size = 256 << 20
committed = [0]
if sys.argv[1] == 'warm':
  with host.warm_heap() as committed:
    deadline = time.monotonic() + 120
    while committed[0] < size and time.monotonic() < deadline:
      sum(range(10_000))  # the caller's own single-threaded work, e.g. a trace
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
ctypes.memset(libc.malloc(size), 1, size)
print(committed[0], resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
'''


def _first_touch_faults(mode):
  import subprocess
  import sys
  out = subprocess.run([sys.executable, '-c', _FIRST_TOUCH, mode], check=True, text=True,
                       capture_output=True, env={**os.environ, 'ISTANET_HOST_DEFAULTS': '1'})
  committed, faults = map(int, out.stdout.split())
  return committed, faults


def test_warm_heap_commits_the_pages_a_later_allocation_reuses():
  """Written for the first time, 256 MB fault in page by page (65,536 pages of 4 KiB); after
  warm_heap committed them on its thread, the main thread's allocation reuses them."""
  _, cold = _first_touch_faults('cold')
  committed, warm = _first_touch_faults('warm')
  assert committed >= 256 << 20
  assert cold > 50_000 and warm < cold // 10, (cold, warm)


def test_warm_heap_does_nothing_without_the_allocator_settings(monkeypatch):
  monkeypatch.setattr(host, '_done', [host.nothing_applied()])
  with host.warm_heap() as committed:
    pass
  assert committed == [0]
