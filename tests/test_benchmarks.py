"""benchmarks/throughput.py writes a results JSON with what the performance table quotes."""

import argparse
import gc
import json
import os

import pytest

from benchmarks import throughput
from istanet_jax import host


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
  # The first call's kernel CPU seconds, over all threads: at most wall time x cores.
  assert all(0 <= r['first_call_kernel_s'] <= r['first_call_s'] * os.cpu_count()
             for r in report['results'])
  assert report['environment']['processor']  # the CPU is named (/proc/cpuinfo on Linux)
  # What istanet_jax.host.configure() did in this process (the conftest applied it). The XLA
  # flags it adds are only reported where this process added them: a pytest-xdist worker
  # inherits them from the controller's environment.
  done = report['environment']['host_defaults']
  assert done == host.configure()
  assert {k: done[k] for k in ('malloc', 'malloc_arena_max', 'sync_cpu_dispatch',
                               'gc_threshold0')} == {'malloc': True, 'malloc_arena_max': None,
                                                     'sync_cpu_dispatch': True,
                                                     'gc_threshold0': 10_000}
  assert '--xla_cpu_use_xnnpack=true' in os.environ['XLA_FLAGS']
  assert 'xla_cpu_disable_loop_unrolling' in os.environ['XLA_FLAGS']
  assert gc.get_threshold()[0] == 10_000


def test_no_host_defaults_reports_the_same_keys_all_off(monkeypatch):
  """--no_host_defaults records what configure() records, every setting off (files compare)."""
  from istanet_jax import host
  monkeypatch.setattr(throughput, '_HOST_DEFAULTS', [None])
  throughput.configure_host(argparse.Namespace(no_host_defaults=True))
  off = throughput._HOST_DEFAULTS[0]  # pylint: disable=protected-access
  assert off.keys() == host.configure().keys()
  assert not any(off.values())


def test_throughput_batch_sweep_and_mfu(tmp_path, capsys):
  """`--batch 2,4` times one train step per batch; a peak gives MFU = FLOPs / time / peak."""
  out = tmp_path / 'sweep.json'
  throughput.main(['--model', 'small', '--batch', '2,4', '--eval_batches', '', '--steps', '1',
                   '--warmup', '0', '--peak_tflops', '0.5', '--out', str(out)])
  capsys.readouterr()
  report = json.loads(out.read_text())
  assert [(r['kind'], r['batch']) for r in report['results']] == [('train', 2), ('train', 4)]
  for r in report['results']:
    assert r['mfu'] == pytest.approx(
        r['flops_per_sample'] * r['batch'] / r['median_step_s'] / 0.5e12)
  assert report['peak_tflops'] == 0.5


def test_a_batch_out_of_device_memory_costs_only_its_row():
  """A sweep's largest batch running out of memory becomes an error row; others raise."""
  import jax

  def out_of_memory():
    raise jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to '
                                     'allocate 81.2GiB.\nmore detail')

  assert throughput.unless_out_of_memory('train', 256, out_of_memory) == dict(
      kind='train', batch=256,
      error='RESOURCE_EXHAUSTED: Out of memory while trying to allocate 81.2GiB.')
  assert throughput.unless_out_of_memory('eval', 1, lambda: {'ok': 1}) == {'ok': 1}

  def other_failure():
    raise jax.errors.JaxRuntimeError('INVALID_ARGUMENT: shapes differ')

  with pytest.raises(jax.errors.JaxRuntimeError, match='INVALID_ARGUMENT'):
    throughput.unless_out_of_memory('train', 2, other_failure)


def test_throughput_keeps_the_rows_of_a_run_cut_off(tmp_path, capsys, monkeypatch):
  """Each row is written as it ends: a part that a device call's time limit stops (a sweep's
  second batch) still returns the rows before."""
  bench_train = throughput.bench_train

  def second_batch_never_ends(model, batch, **kwargs):
    if batch == 3:
      raise KeyboardInterrupt  # what `timeout` leaves of the process, for this test
    return bench_train(model, batch, **kwargs)

  monkeypatch.setattr(throughput, 'bench_train', second_batch_never_ends)
  out = tmp_path / 'cut.json'
  with pytest.raises(KeyboardInterrupt):
    throughput.main(['--model', 'small', '--batch', '2,3', '--eval_batches', '', '--steps', '1',
                     '--warmup', '0', '--out', str(out)])
  capsys.readouterr()
  report = json.loads(out.read_text())
  assert [(r['kind'], r['batch']) for r in report['results']] == [('train', 2)]
  assert report['results'][0]['samples_per_s'] > 0 and not (tmp_path / 'cut.json.tmp').exists()


def test_throughput_microbatches_count_every_microbatch(tmp_path, capsys):
  """`--microbatches 2` (ghost BatchNorm groups of 2) runs the step as a loop over two halves;
  its FLOPs are the whole batch's (XLA counts a loop body once), as without the split."""
  reports = []
  for microbatches in (1, 2):
    out = tmp_path / f'mb{microbatches}.json'
    throughput.main(['--model', 'small', '--batch', '4', '--eval_batches', '', '--steps', '1',
                     '--warmup', '0', '--bn_group_size', '2', '--microbatches',
                     str(microbatches), '--out', str(out)])
    reports.append(json.loads(out.read_text()))
  capsys.readouterr()
  whole, split = (r['results'][0] for r in reports)
  assert (whole['microbatches'], split['microbatches']) == (1, 2)
  assert reports[1]['bn_group_size'] == 2
  # The matmuls' FLOPs (MFU's) are the same split or not (to 3e-4: a few small dots differ in
  # the split program), each microbatch's counted; XLA's count
  # also has elementwise FLOPs, fused (and recomputed) differently inside the loop (372 against
  # 392 MFLOP per sample); a body counted once would halve either.
  assert split['flops_per_sample'] == pytest.approx(whole['flops_per_sample'], rel=1e-3)
  assert split['xla_flops_per_sample'] == pytest.approx(whole['xla_flops_per_sample'], rel=0.1)
  assert whole['flops_per_sample'] < whole['xla_flops_per_sample']


def test_peak_tflops_auto_knows_hopper_gpus():
  assert throughput.resolve_peak('auto', 'bfloat16', 'NVIDIA H100 80GB HBM3') == 989.4
  assert throughput.resolve_peak('auto', 'bfloat16', 'NVIDIA H100 PCIe') == 756.0
  assert throughput.resolve_peak('auto', 'bfloat16', 'NVIDIA H200') == 989.4
  assert throughput.resolve_peak('auto', 'bfloat16', 'NVIDIA H100 NVL') == 835.5
  # float32 runs on the tensor cores in TF32 (XLA's default precision), not at the FP32 rate.
  assert throughput.resolve_peak('auto', 'float32', 'NVIDIA H100 80GB HBM3') == 494.7
  assert throughput.resolve_peak('12.5', 'float32') == 12.5
  assert throughput.resolve_peak(None, 'float32') is None
  with pytest.raises(SystemExit, match='no known peak'):
    throughput.resolve_peak('auto', 'bfloat16', 'cpu')
  with pytest.raises(SystemExit, match='comma-separated integers'):
    throughput.parse_batches('16,x')
  assert throughput.parse_batches('0') == [] and throughput.parse_batches('8, 16') == [8, 16]


def test_matmul_ops_reads_operand_and_result_dtypes():
  """On a GPU the matmuls are library calls: the summary names them with their dtypes."""
  hlo = """
  %p0 = bf16[64,32]{1,0} parameter(0)
  %p1 = bf16[3,32,16]{2,1,0} parameter(1)
  %conv.1 = (bf16[64,16]{1,0}, u8[0]{0}) custom-call(%p0, %p1), window={size=3}, custom_call_target="__cudnn$convForward"
  %gemm.2 = (f32[64,16]{1,0}, s8[4]{0}) custom-call(%p0, %p0), custom_call_target="__cublas$lt$matmul"
  %sort.3 = f32[64]{0} custom-call(%p0), custom_call_target="Sort"
  ROOT %dot.4 = f32[64,64]{1,0} dot(%p0, %p0), lhs_contracting_dims={1}, rhs_contracting_dims={1}
  """
  assert throughput.matmul_ops(hlo) == {
      'custom-call __cudnn$convForward bf16,bf16->bf16': 1,
      'custom-call __cublas$lt$matmul bf16,bf16->f32': 1, 'dot bf16,bf16->f32': 1}


def test_gemm_reports_every_backend(tmp_path, capsys):
  from benchmarks import gemm
  out = tmp_path / 'gemm.json'
  gemm.main(['--rows', '64', '--repeats', '1', '--out', str(out)])
  report = json.loads(out.read_text())
  assert set(report['results']) == {'xla_eigen', 'xla_xnnpack', 'xla_onednn', 'torch', 'numpy'}
  for backend, figures in report['results'].items():
    assert set(figures) == set(gemm.shapes(64)), (backend, figures)
    assert all(v > 0 for v in figures.values())
  import numpy as np  # pylint: disable=g-import-not-at-top
  assert report['versions']['numpy'] == np.__version__ and report['environment']['jax']
  capsys.readouterr()


def test_profile_step_attributes_time_to_categories_and_layers(tmp_path, capsys, monkeypatch):
  from benchmarks import profile_step
  out = tmp_path / 'profile.json'
  projection = tmp_path / 'projection.json'  # as benchmarks.gpu_compile writes one
  projection.write_text(json.dumps({'results': [{'kind': 'train', 'batch': 2, 'devices': 1,
                                                 'roofline': {'roofline_s': 1e-3, 'by_layer': {
                                                     'blocks.*/proj/0': {'seconds': 1e-4}}}}]}))
  profile_step.main(['--model', 'small', '--kind', 'train', '--batch', '2', '--out', str(out),
                     '--conv_algorithm', 'matmul', '--projection', str(projection)])
  report = json.loads(out.read_text())
  capsys.readouterr()
  total = report['op_seconds_total']
  assert total > 0 and report['conv_algorithm'] == 'matmul'
  assert 0 <= report['idle_s'] < report['ops_span_s']
  vs = report['vs_projection']
  assert vs['projection'] == 'projection.json' and vs['roofline_s'] == 1e-3
  assert vs['by_layer']['blocks.*/proj/0']['projected_s'] == 1e-4
  assert vs['by_layer']['blocks.*/proj/0']['measured_s'] == pytest.approx(
      report['by_layer']['blocks.*/proj/0']['seconds'], abs=1e-6)
  # A projection found on its own ('auto') that does not fit is noted; the profile is kept.
  monkeypatch.setattr(profile_step, 'projection_path', lambda *args: str(projection))
  profile_step.main(['--model', 'small', '--kind', 'train', '--batch', '1', '--out', str(out)])
  capsys.readouterr()
  noted = json.loads(out.read_text())
  assert noted['by_category'] and 'no train projection at batch 1' in \
      noted['vs_projection']['error']
  assert abs(sum(v['seconds'] for v in report['by_category'].values()) - total) < 1e-3
  assert report['by_category']['gemm']['seconds'] > 0
  # The proj conv's forward and backward land in one layer row.
  assert 'blocks.*/proj/0' in report['by_layer']
  assert any('/proj/0/' in op['op_name'] for op in report['top_ops'].values())


def test_profile_gaps_go_to_the_operation_that_ended_last():
  from benchmarks import profile_step
  events = [dict(name='dot', ts=0, dur=2), dict(name='add', ts=1, dur=4),
            dict(name='mul', ts=10, dur=1)]
  got = {e['name']: e['dur'] for e in profile_step.attribute_gaps(events)}
  # 5..10 is idle after 'add' (the last to end): an Eigen matmul's pool work looks like this.
  assert got == {'dot': 2, 'add': 9, 'mul': 1}


def test_profile_gaps_go_to_the_matmul_still_in_the_pool():
  from benchmarks import profile_step
  # 'dot' hands its work to the pool at 2; 'add' and 'mul' (independent of it) run meanwhile,
  # then the executor waits: 5..10 and 11..13 are the dot's. 'sub' reads the dot's result, so
  # the dot is done when it starts: 14..16 goes to 'sub', the last to end.
  events = [dict(name='dot', ts=0, dur=2), dict(name='add', ts=1, dur=4),
            dict(name='mul', ts=10, dur=1), dict(name='sub', ts=13, dur=1),
            dict(name='neg', ts=16, dur=1)]
  got = {e['name']: e['dur'] for e in profile_step.attribute_gaps(
      events, is_async=lambda name: name == 'dot',
      consumes=lambda name, other: (name, other) == ('sub', 'dot'))}
  assert got == {'dot': 2 + 5 + 2, 'add': 4, 'mul': 1, 'sub': 1 + 2, 'neg': 1}


def test_profile_events_of_a_gpu_are_its_stream_kernels():
  from benchmarks import profile_step
  meta = lambda kind, pid, name, tid=0: dict(ph='M', name=kind, pid=pid, tid=tid,
                                             args=dict(name=name))
  op = lambda pid, tid, hlo_op, ts: dict(ph='X', pid=pid, tid=tid, ts=ts, dur=2,
                                         name='kernel', args=dict(hlo_op=hlo_op))
  events = [meta('process_name', 1, '/host:CPU'), meta('process_name', 7, '/device:GPU:0'),
            meta('thread_name', 7, 'Stream #14(Compute)', 14), meta('thread_name', 7, 'XLA Ops', 2),
            op(1, 5, 'fusion.1', 0),  # the host's launch of it
            op(7, 14, 'fusion.1', 3), op(7, 14, 'convolution.2', 6),
            op(7, 2, 'fusion.1', 3)]  # a line derived from the kernels
  assert profile_step.operation_events(events) == [
      dict(name='fusion.1', ts=3, dur=2), dict(name='convolution.2', ts=6, dur=2)]
  # A CPU trace: every operation event.
  assert len(profile_step.operation_events(events[:1] + events[4:5])) == 1
  # A GPU without kernel events (no CUPTI): said, not profiled from the host's launches.
  with pytest.raises(RuntimeError, match='no GPU kernel events'):
    profile_step.operation_events(events[:5], 'x.trace.json.gz')
  # The idle stretches (4..6 ms here), reported apart from the events that own them.
  events = [dict(name='d', ts=0, dur=2000), dict(name='d', ts=1000, dur=3000),
            dict(name='n', ts=6000, dur=1000)]
  hlo = profile_step.parse_hlo('ENTRY %e (p: f32[1]) -> f32[1] {\n  ROOT %d = f32[1]{0} '
                               'negate(%p)\n}\n')
  assert profile_step.summarise(events, hlo)['idle_s'] == pytest.approx(0.002)
  # On a GPU (no pooled matmuls) the kernels keep their own time; the gap is only idle.
  gpu = profile_step.summarise(events, hlo, pool_matmuls=False)
  assert gpu['idle_s'] == pytest.approx(0.002)
  assert gpu['op_seconds_total'] == pytest.approx(0.006)  # 2 + 3 + 1 ms of events
  cpu = profile_step.summarise(events, hlo)
  assert cpu['op_seconds_total'] == pytest.approx(0.008)  # the gap charged to the last to end


def test_profile_beside_its_projection():
  from benchmarks import profile_step
  report = dict(kind='train', batch=128, op_seconds_total=0.12, ops_span_s=0.125,
                by_layer={'blocks.*/proj/0': dict(seconds=0.03), 'embed': dict(seconds=0.001)})
  projection = dict(results=[
      dict(kind='train', batch=256, devices=1, roofline=dict(roofline_s=0.17, by_layer={})),
      dict(kind='train', batch=128, devices=1, roofline=dict(roofline_s=0.08, by_layer={
          'blocks.*/proj/0': dict(seconds=0.02), 'blocks.*/TA/0': dict(seconds=0.01)}))])
  vs = profile_step.compare_with_projection(report, projection, 'h100.json')
  assert vs['measured_over_roofline'] == 1.5 and vs['roofline_s'] == 0.08
  assert list(vs['by_layer']) == ['blocks.*/proj/0', 'embed', 'blocks.*/TA/0']
  assert vs['by_layer']['blocks.*/proj/0'] == dict(measured_s=0.03, projected_s=0.02, ratio=1.5)
  assert vs['by_layer']['embed']['ratio'] is None  # nothing projected there
  assert vs['by_layer']['blocks.*/TA/0']['ratio'] == 0
  with pytest.raises(ValueError, match=r'h100.json: no train projection at batch 64'):
    profile_step.compare_with_projection(dict(report, batch=64), projection, 'h100.json')
  # The committed projections are found by the GPU's name; other devices have none.
  found = profile_step.projection_path('ntu26', 'bfloat16', 'xla', 'NVIDIA H100 80GB HBM3')
  assert found.endswith('h100_deviceless_ntu26_bf16_train_xla_compute.json')
  assert profile_step.projection_path('ntu26', 'bfloat16', 'matmul', 'NVIDIA H200').endswith(
      'h200_deviceless_ntu26_bf16_train_matmul_compute.json')
  assert profile_step.projection_path('ntu26', 'bfloat16', 'xla', 'cpu') is None
  assert profile_step.projection_path('ntu26', 'bfloat16', 'xla', 'NVIDIA H100 PCIe') is None
  assert profile_step.projection_path('ntu26', 'float32', 'xla', 'NVIDIA H100 80GB HBM3') is None
  assert profile_step.projection_path('small', 'bfloat16', 'xla', 'NVIDIA H100 80GB HBM3') is None


def test_profile_reads_hand_written_hlo():
  from benchmarks import profile_step
  hlo = profile_step.parse_hlo("""HloModule m

ENTRY %main (p0: f32[4,4]) -> f32[16] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %d = f32[4,4]{1,0} dot(%p0, %p0), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %b = f32[16]{0} bitcast(%d)
  %t = (f32[16]{0}, f32[4,4]{1,0}) tuple(%b, %p0)
  %g = f32[16]{0} get-tuple-element(%t), index=0
  %c = (f32[4,4]{1,0}, s8[64]{0}) custom-call(%p0, %p0), custom_call_target="__cublas$lt$matmul"
  %s = f32[4,4]{1,0} custom-call(%p0), custom_call_target="Sharding"
  ROOT %n = f32[16]{0} negate(%g)
}
""")
  consumes = profile_step._consumes(hlo)  # pylint: disable=protected-access
  assert consumes('n', 'd') and consumes('n', 'p0') and consumes('d', 'p0')
  assert not consumes('d', 'n') and not consumes('p0', 'd')
  # A GPU's library matmuls and convolutions are custom calls: counted as matmuls.
  assert [profile_step.category(n, hlo) for n in ('d', 'c', 's')] == ['gemm', 'gemm',
                                                                       'custom-call']


def test_profile_categories_from_compiled_hlo():
  import jax
  import jax.numpy as jnp
  from benchmarks import profile_step
  f = jax.jit(lambda a, b: (jnp.tanh(a @ b), jnp.concatenate([a, b]).sum(0)))
  x = jnp.ones((8, 8))
  hlo = profile_step.parse_hlo(f.lower(x, x).compile().as_text())
  cats = {profile_step.category(n, hlo) for n in hlo['instructions']}
  assert 'gemm' in cats
  assert profile_step.layer('jit(f)/transpose(jvp(ISTANet))/blocks.3/proj/0/dot_general') == \
      'blocks.*/proj/0'
  assert profile_step.layer('jit(f)/jvp(ISTANet)/embed/0/conv') == 'embed'


_STAND_IN_MODEL = '''
import torch


class Model(torch.nn.Module):
  """Stands in for the reference's model/ISTANet.py: same constructor arguments, (N, C, T, V, M)."""

  def __init__(self, num_classes, num_channels, num_frames, num_joints, num_persons, **unused):
    super().__init__()
    # A Conv3d and a 4-D parameter, as the reference has (channels_last_3d must handle both).
    self.embed = torch.nn.Conv3d(num_channels, num_channels, 1)
    self.alpha = torch.nn.Parameter(torch.ones(1, 1, 1, 1))
    self.fc = torch.nn.Linear(num_channels * num_frames * num_joints * num_persons, num_classes)

  def forward(self, x):
    return self.fc(self.embed(x).flatten(1)) * self.alpha.flatten()
'''

_STAND_IN_LOSS = '''
import torch


class LabelSmoothingCrossEntropy(torch.nn.Module):
  def __init__(self, smoothing, temperature):
    super().__init__()
    self.smoothing = smoothing

  def forward(self, logits, target):
    return torch.nn.functional.cross_entropy(logits.float(), target, label_smoothing=self.smoothing)
'''


def test_reference_steps_are_timed_in_their_process():
  """A step of the reference's process counts the seconds it measured there, not the pipe's
  round trip around it; a plain call counts its wall time."""
  from benchmarks import compare_reference
  times = []
  # pylint: disable=protected-access
  compare_reference._time_calls(lambda: compare_reference._Timed(0.25), times, 2)
  compare_reference._time_calls(lambda: None, times, 1)
  assert times[:2] == [0.25, 0.25] and 0 <= times[2] < 0.25


def test_compare_reference_alternates_both_sides(tmp_path, capsys):
  """The side-by-side harness, with a stand-in for the reference checkout (tests never need the
  real one): ours in bf16, the stand-in under autocast, one ratio row per measurement."""
  from benchmarks import compare_reference
  for path, text in (('model/ISTANet.py', _STAND_IN_MODEL), ('utils/loss.py', _STAND_IN_LOSS)):
    (tmp_path / 'ref' / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / 'ref' / path).write_text(text)
  out = tmp_path / 'cmp.json'
  compare_reference.main(['--reference_dir', str(tmp_path / 'ref'), '--model', 'small',
                          '--batch', '2', '--eval_batches', '2', '--steps', '1', '--warmup', '0',
                          '--dtype', 'bfloat16', '--reference_autocast', '--alternate', 'rows',
                          '--out', str(out)])
  capsys.readouterr()
  report = json.loads(out.read_text())
  assert report['jax']['dtype'] == 'bfloat16' and report['reference']['autocast'] == 'bfloat16'
  assert {(r['kind'], r['batch']) for r in report['comparison']} == {('train', 2), ('eval', 2)}
  for row in report['comparison']:
    assert row['throughput_ratio'] == pytest.approx(
        row['jax_samples_per_s'] / row['torch_samples_per_s'])
  # On the CPU the reference runs on torch's CPU device with main.py's cuDNN settings, in a
  # process of its own (its memory apart from ours).
  assert report['reference']['device'] == 'cpu' and report['reference']['cudnn'] == 'main_py'
  assert report['reference']['process'] == 'separate' and report['reference']['threads'] >= 1
  assert report['reference']['alternate'] == 'rows'
  # The reference's process has the host settings with one malloc arena (its faster setting).
  assert report['reference']['host_defaults']['malloc_arena_max'] == '1'
  assert report['jax']['environment']['host_defaults']['malloc_arena_max'] is None
  assert all(r['steps'] == 1 for side in ('jax', 'reference') for r in report[side]['results'])
  with pytest.raises(SystemExit, match='no model/ISTANet.py'):
    compare_reference.main(['--reference_dir', str(tmp_path), '--model', 'small'])


def test_compare_reference_channels_last_and_mfu(tmp_path, capsys):
  """What a PyTorch user tuning for speed sets (channels_last_3d, autotuned cuDNN), and MFU of
  both sides from our step's FLOPs (the same model)."""
  import torch
  from benchmarks import compare_reference
  for path, text in (('model/ISTANet.py', _STAND_IN_MODEL), ('utils/loss.py', _STAND_IN_LOSS)):
    (tmp_path / 'ref' / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / 'ref' / path).write_text(text)
  calls = compare_reference.reference_callers(
      str(tmp_path / 'ref'), 'small', train_batch=2, eval_batches=[1], threads=1,
      channels_last=True, cudnn='benchmark', device='cpu')
  assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
  assert calls[('eval', 1)]().shape == (1, 26) and float(calls[('train', 2)]()) > 0
  out = tmp_path / 'cmp.json'
  compare_reference.main(['--reference_dir', str(tmp_path / 'ref'), '--model', 'small',
                          '--batch', '2', '--eval_batches', '2,1', '--steps', '1',
                          '--warmup', '0', '--reference_channels_last', '--reference_cudnn',
                          'benchmark', '--peak_tflops', '1', '--reference_process', 'same',
                          '--out', str(out)])
  capsys.readouterr()
  report = json.loads(out.read_text())
  assert report['reference']['channels_last'] and report['reference']['cudnn'] == 'benchmark'
  assert report['reference']['process'] == 'same'
  assert len(report['comparison']) == 3
  for row in report['comparison']:  # each row's two MFUs are of its own measurement
    assert row['jax_mfu'] / row['torch_mfu'] == pytest.approx(row['throughput_ratio'])


def _records(train_s, eval_s, starts, n_train=100, n_eval=50):
  """metrics.jsonl records of epochs whose training starts at `starts` (wall clock)."""
  out = []
  for e, (t, v, s) in enumerate(zip(train_s, eval_s, starts), 1):
    out.append({'epoch': e, 'time': s + t, 'train/seconds': t,
                'train/samples_per_second': n_train / t})
    out.append({'epoch': e, 'time': s + t + v, 'eval/seconds': v,
                'eval/samples_per_second': n_eval / v})
  return out


def test_full_training_projection_arithmetic():
  from benchmarks import full_training as ft
  # Epoch 1 compiles (10 s of training); then 2 s train, 1 s eval, 0.5 s rest per epoch.
  records = _records([10.0, 2.0, 2.0, 2.0], [4.0, 1.0, 1.0, 1.0], [0.0, 14.5, 18.0, 21.5])
  epochs = ft.epoch_timings(records)
  assert [e['wall_s'] for e in epochs] == [14.5, 3.5, 3.5, None]
  assert [e['rest_s'] for e in epochs[:3]] == [0.5, 0.5, 0.5]
  p = ft.project(epochs, setup_s=3.0, num_epoch=110, eval_interval=2, train_samples=1000,
                 eval_samples=500)
  assert (p['train_samples_per_s'], p['eval_samples_per_s']) == (50.0, 50.0)
  assert p['evaluations'] == 55 and p['first_epoch_extra_s'] == 11.0
  # setup + first-epoch extra + 110 * (1000 / 50 + 0.5) + 55 * 500 / 50
  assert p['projected_total_s'] == pytest.approx(3.0 + 11.0 + 110 * 20.5 + 55 * 10.0)
  assert ft.evaluations(5, 2) == 3 and ft.evaluations(4, 1) == 4  # the last epoch evaluates
  with pytest.raises(ValueError, match='at least 3 epochs'):
    ft.project(ft.epoch_timings(records[:4]), setup_s=0, num_epoch=3, eval_interval=1, train_samples=1,
               eval_samples=1)


def test_input_pipeline_benchmark_times_both_back_ends(tmp_path, capsys):
  """benchmarks/input_pipeline.py prepares the config's synthetic tree in both formats and
  times each back end's train iterator on it."""
  from benchmarks import input_pipeline as bench
  out = tmp_path / 'pipeline.json'
  bench.main(['--config', 'configs/demo.py:runlocal', '--num_per_class', '2', '--batch', '4',
              '--seconds', '0.2', '--workdir', str(tmp_path / 'run'), '--out', str(out)])
  capsys.readouterr()
  report = json.loads(out.read_text())
  rows = report['results']
  assert [r['backend'] for r in rows] == ['grain', 'tf']
  for r in rows:
    assert r['batch'] == 4 and r['samples'] > 0 and r['samples'] % 4 == 0
    assert r['samples_per_s'] == pytest.approx(r['samples'] / r['seconds'], rel=1e-2)
    assert r['skeleton_shape'][0] == 4 and r['examples'] == rows[0]['examples']
  assert sorted(os.listdir(tmp_path / 'run')) == ['data_array_record', 'data_tfrecord', 'raw']
  with pytest.raises(SystemExit, match='--backends'):
    bench.main(['--config', 'configs/demo.py:runlocal', '--backends', 'torch'])


def test_full_training_runs_the_real_loop(tmp_path, capsys):
  """The benchmark drives train_and_evaluate on a synthetic tree of the config's dataset; the
  config and its overrides come as for istanet_jax.train."""
  from benchmarks import full_training as ft
  from configs import demo
  out = tmp_path / 'full.json'
  ft.main(['--config', 'configs/demo.py:runlocal', '--workdir', str(tmp_path / 'run'),
           '--epochs', '3', '--num_per_class', '2', '--train_samples', '1000',
           '--eval_samples', '500', '--config.batch_size=16', '--config.num_epoch=4',
           '--out', str(out)])
  capsys.readouterr()
  report = json.loads(out.read_text())
  assert report['batch_size'] == 16 and report['compilations_after_first_epoch'] == 0
  assert report['train_step_compilations'] == 1
  assert [e['epoch'] for e in report['epochs']] == [1, 2, 3]
  p = report['projection']
  assert p['num_epoch'] == 4 and p['train_samples'] == 1000  # the config's, not the 3 run
  assert p['projected_total_s'] == pytest.approx(
      p['setup_s'] + p['first_epoch_extra_s'] + p['train_total_s'] + 4 * p['rest_of_epoch_s']
      + p['eval_total_s'])
  assert p['train_samples_per_s'] > 0 and p['eval_samples_per_s'] > 0
  config = demo.get_config('runlocal')
  config.unlock()
  with pytest.raises(ValueError, match='epochs'):  # more than the config trains
    ft.run(config, str(tmp_path / 'other'), epochs=3, num_per_class=2, train_samples=1,
           eval_samples=1)
  with pytest.raises(SystemExit, match='not empty'):
    ft.main(['--config', 'configs/demo.py:runlocal', '--workdir', str(tmp_path / 'run'),
             '--train_samples', '1', '--eval_samples', '1'])
  with pytest.raises(SystemExit, match='no_such_field'):
    ft.main(['--config', 'configs/demo.py', '--config.no_such_field=1'])
  with pytest.raises(SystemExit, match='no split sizes known'):
    ft.main(['--config', 'configs/demo.py'])
  assert ft.synthetic_kind('ntu_mutual26/xsub') == 'ntu'


def test_logits_agreement_on_a_parity_case():
  """compare_reference --check_logits's measure on stored reference outputs (pad_odd: odd
  padding on every axis): float32 within the parity tolerance, bf16 within its documented one."""
  import numpy as np
  from benchmarks import compare_reference
  from parity_cases import Case
  case = Case('pad_odd')
  state_dict = {k: np.asarray(v, np.float32) if np.issubdtype(np.asarray(v).dtype, np.floating)
                else v for k, v in case.state_dict().items()}
  f32 = compare_reference.logits_agreement(case.model_args, 'float32', state_dict, case.x,
                                           case.arrays['logits_eval'])
  bf16 = compare_reference.logits_agreement(case.model_args, 'bfloat16', state_dict, case.x,
                                            case.arrays['logits_eval'])
  assert f32['max_abs_diff_over_max_abs'] < 1e-5 and f32['relative_l2'] < 1e-5
  assert 1e-5 < bf16['max_abs_diff_over_max_abs'] < 5e-2
  # Logits of other inputs (the batch reversed) are far off: the measure can fail.
  wrong = compare_reference.logits_agreement(case.model_args, 'float32', state_dict,
                                             case.x[::-1].copy(), case.arrays['logits_eval'])
  assert wrong['max_abs_diff_over_max_abs'] > 1e-2


def test_gpu_suite_script_runs_a_part(tmp_path):
  """benchmarks/gpu_suite.sh (what a GPU session runs) on a small model on the CPU: its
  arguments reach the benchmark, and it ends with the summary lines a device reply shows.
  Run as `all` runs it: a failing part before it does not stop it."""
  import os
  import pathlib
  import subprocess
  repo = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ, OUT=str(tmp_path), MODEL='small', PEAK='1', SWEEP='2', SWEEP_XLA='2',
             EVAL='2', STEPS='1', PARTS='nonsense sweep sweep_xla')
  env.pop('XLA_FLAGS', None)  # one CPU device, as a plain process has
  proc = subprocess.run(['bash', str(repo / 'benchmarks' / 'gpu_suite.sh'), 'all'], cwd=repo,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert '== all: nonsense stopped (exit 2)' in proc.stdout
  assert 'unknown part nonsense' in (tmp_path / 'nonsense.log').read_text()
  report = json.loads((tmp_path / 'gpu_small_bf16_sweep_matmul.json').read_text())
  assert report['dtype'] == 'bfloat16' and report['peak_tflops'] == 1.0
  assert [(r['kind'], r['batch']) for r in report['results']] == [('train', 2), ('eval', 2)]
  # On the CPU bf16 matmuls take bf16 and give float32 (the matrix units' form), none gives
  # bf16; a few small ones stay float32 (the classifier, the 3-channel embedding).
  ops = report['results'][0]['matmul_ops']
  assert next(iter(ops)) == 'dot bf16,bf16->f32' and not [k for k in ops if k.endswith('bf16')]
  assert ops['dot bf16,bf16->f32'] > 3 * ops.get('dot f32,f32->f32', 0), ops
  lines = proc.stdout.strip().splitlines()
  at = lines.index('== gpu_small_bf16_sweep_matmul.json')
  assert lines[at + 1].startswith('train b2')
  assert lines[at + 3].startswith('train matmuls: ') and 'dot bf16,bf16->f32' in lines[at + 3]
  assert (tmp_path / 'sweep.log').exists() and (tmp_path / 'sweep_xla.log').exists()
  # sweep_xla: the same sweep with the 1-D convolutions as XLA convolutions, at SWEEP_XLA.
  xla = json.loads((tmp_path / 'gpu_small_bf16_sweep_xla.json').read_text())
  assert xla['conv_algorithm'] == 'xla' and report['conv_algorithm'] == 'matmul'
  assert [(r['kind'], r['batch']) for r in xla['results']] == [('train', 2), ('eval', 2)]
  assert lines[-4] == '== gpu_small_bf16_sweep_xla.json' and lines[-3].startswith('train b2')
  # profile: where the train step's time goes, one file per conv_algorithm, summarised.
  prof = subprocess.run(['bash', str(repo / 'benchmarks' / 'gpu_suite.sh'), 'all'], cwd=repo,
                        env=dict(env, OUT=str(tmp_path / 'profile'), PARTS='profile',
                                 PROFILE_BATCH='2', PROFILE_ALGORITHMS='xla'),
                        capture_output=True, text=True, timeout=300)
  assert prof.returncode == 0, prof.stdout[-2000:] + prof.stderr[-2000:]
  report = json.loads((tmp_path / 'profile' / 'gpu_small_profile_train_b2_xla.json').read_text())
  assert (report['conv_algorithm'], report['dtype'], report['batch']) == ('xla', 'bfloat16', 2)
  lines = prof.stdout.strip().splitlines()
  assert lines[-3] == '== gpu_small_profile_train_b2_xla.json'
  assert lines[-2].startswith('train b2 xla: span ') and 'gemm' in lines[-2]
  # On an H100 or H200 the profile carries its projection's comparison: summarised too.
  from benchmarks import profile_step
  report['vs_projection'] = profile_step.compare_with_projection(report, {'results': [
      {'kind': 'train', 'batch': 2, 'roofline': {'roofline_s': 2e-3, 'by_layer': {
          layer: {'seconds': 1e-3} for layer in report['by_layer']}}}]}, 'h100_x.json')
  (tmp_path / 'vs').mkdir()
  (tmp_path / 'vs' / 'gpu_small_profile_train_b2_xla.json').write_text(json.dumps(report))
  vs = subprocess.run(['bash', str(repo / 'benchmarks' / 'gpu_suite.sh'), 'all'], cwd=repo,
                      env=dict(env, OUT=str(tmp_path / 'vs'), PARTS='nonsense'),
                      capture_output=True, text=True, timeout=120)
  last = vs.stdout.strip().splitlines()[-1]
  assert last.startswith('  vs h100_x.json: kernels ') and 'roofline 2.0 ms' in last, last
  bad = subprocess.run(['bash', str(repo / 'benchmarks' / 'gpu_suite.sh'), 'nonsense'],
                       cwd=repo, env=env, capture_output=True, text=True, timeout=120)
  assert bad.returncode != 0 and 'unknown part nonsense' in bad.stdout + bad.stderr
  # Out of budget: the parts are skipped, not started.
  late = subprocess.run(['bash', str(repo / 'benchmarks' / 'gpu_suite.sh'), 'all'], cwd=repo,
                        env=dict(env, BUDGET_S='30', PARTS='reference sweep'),
                        capture_output=True, text=True, timeout=120)
  assert late.returncode == 0, late.stdout[-2000:] + late.stderr[-2000:]
  lines = [line for line in late.stdout.splitlines() if line.startswith('== all:')]
  assert [line.split(' s of ')[0].rsplit(',', 1)[0] for line in lines] == [
      '== all: reference skipped', '== all: sweep skipped'], lines


def test_conv_grads_times_each_part(tmp_path, capsys):
  from benchmarks import conv_grads
  out = tmp_path / 'conv.json'
  conv_grads.main(['--batch', '1', '--repeats', '1', '--convs', 'TA', '--dtypes', 'float32',
                   '--out', str(out)])
  capsys.readouterr()
  report = json.loads(out.read_text())
  assert [(r['conv'], r['conv_algorithm']) for r in report['results']] == [
      ('TA', 'winograd'), ('TA', 'matmul'), ('TA', 'xla')]
  for r in report['results']:
    for op in ('forward', 'input_grad', 'weight_grad'):
      assert r[op]['seconds'] > 0 and r[op]['gflops_per_s'] > 0


def test_first_step_times_the_training_entry_points_step(tmp_path, capsys):
  """benchmarks/first_step.py compiles and runs train.jit_steps' step on a synthetic batch, the
  compilation beside the state's initialisation as training does, or after it (--sequential):
  one compilation of the step either way, and the same first step."""
  import math
  from benchmarks import first_step
  reports = {}
  for mode in ('overlapped', 'sequential'):
    out = tmp_path / f'{mode}.json'
    first_step.main(['--config', 'configs/demo.py:runlocal', '--batch', '8', '--microbatches',
                     '1', '--out', str(out)] + (['--sequential', '--compile_trace',
                                                  str(tmp_path / 'trace')]
                                                 if mode == 'sequential' else []))
    capsys.readouterr()
    reports[mode] = report = json.loads(out.read_text())
    assert report['batch_size'] == 8 and report['microbatches'] == 1
    assert report['sequential'] == (mode == 'sequential')
    assert report['train_step_compilations'] == 1
    assert report['from_process_start_s'] > report['first_step_incl_compile_s'] > 0
    assert report['init_state_s'] > 0 and report['second_call_s'] > 0
    assert report['trace_and_lower_s'] > 0 and report['compile_s'] > 0
    assert math.isfinite(report['loss']) and report['peak_rss_gb'] > 0
  overlapped, sequential = reports['overlapped'], reports['sequential']
  assert overlapped['first_step_incl_compile_s'] == pytest.approx(
      overlapped['step_ready_s'] + overlapped['first_call_s'], abs=2e-3)
  assert overlapped['step_ready_s'] >= max(overlapped['init_state_s'],
                                           overlapped['trace_and_lower_s'])
  assert sequential['first_step_incl_compile_s'] == pytest.approx(
      sequential['trace_and_lower_s'] + sequential['compile_s'] + sequential['first_call_s'],
      abs=2e-3)
  assert sequential['step_ready_s'] >= sequential['init_state_s'] + sequential['compile_s']
  # --compile_trace: XLA's compile events by summed time, the compilation among them.
  events = sequential['compile_events']
  assert 'compile_events' not in overlapped and 0 < len(events) <= 40
  assert [e['seconds'] for e in events] == sorted((e['seconds'] for e in events), reverse=True)
  assert not any(e['name'].startswith('$') for e in events)
  assert any('compile' in e['name'].lower() for e in events)
  assert overlapped['loss'] == sequential['loss']


def test_documents_name_results_files_that_exist():
  """Every figure in the docs points at a results file: a name that is not in
  benchmarks/results/ (a renamed or deleted file) leaves a figure without its evidence."""
  import pathlib
  import re
  repo = pathlib.Path(__file__).resolve().parents[1]
  results = repo / 'benchmarks' / 'results'
  named = 0
  for doc in ('README.md', 'benchmarks/README.md', 'benchmarks/PERFORMANCE.md'):
    text = (repo / doc).read_text()
    for name in set(re.findall(r'results/([A-Za-z0-9_.-]+\.json)', text)):
      assert (results / name).is_file(), f'{doc} names benchmarks/results/{name}, which is missing'
      named += 1
    for target in re.findall(r'\]\(([^)#:]+)\)', text):  # relative markdown links
      assert (repo / pathlib.Path(doc).parent / target).exists(), f'{doc} links to {target}'
  assert named > 20  # the pattern still finds the names
