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
