"""benchmarks/throughput.py writes a results JSON with what the performance table quotes."""

import json

from benchmarks import throughput


def test_throughput_writes_results_json(tmp_path, capsys):
  out = tmp_path / 'small.json'
  throughput.main(['--model', 'small', '--batch', '4', '--eval_batches', '2', '--steps', '1',
                   '--warmup', '1', '--out', str(out)])
  report = json.loads(out.read_text())
  assert json.loads(capsys.readouterr().out) == report
  kinds = {(r['kind'], r['batch']) for r in report['results']}
  assert kinds == {('train', 4), ('eval', 2)}
  for r in report['results']:
    assert r['samples_per_s'] > 0 and r['median_step_s'] > 0 and r['flops_per_sample'] > 0
  assert report['environment']['jax'] and report['environment']['command']
  assert [len(report['load_average'][k]) for k in ('before', 'after')] == [3, 3]
  assert all(r['minor_page_faults_per_step'] >= 0 for r in report['results'])
  # What istanet_jax.host.configure() did in this process (the conftest applied it).
  assert report['environment']['host_defaults'] == {'xnnpack': True, 'malloc': True}


def test_gemm_reports_every_backend(tmp_path, capsys):
  from benchmarks import gemm
  out = tmp_path / 'gemm.json'
  gemm.main(['--rows', '64', '--repeats', '1', '--out', str(out)])
  report = json.loads(out.read_text())
  assert set(report['results']) == {'xla_eigen', 'xla_xnnpack', 'xla_onednn', 'torch', 'numpy'}
  for backend, figures in report['results'].items():
    assert set(figures) == set(gemm.shapes(64)), (backend, figures)
    assert all(v > 0 for v in figures.values())
  capsys.readouterr()
