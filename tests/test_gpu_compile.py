"""benchmarks/gpu_compile.py: the HLO roofline on CPU-compiled steps and on a stored XLA:GPU
module (CI has no CUDA plugin), and the tool end to end for `--target cpu`."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import gpu_compile  # pylint: disable=wrong-import-position  (no JAX import)

# tests/data/gpu_hlo_small.txt is `gpu_fixture_function` compiled deviceless for the H100 (run
# this file under the plugin's venv to rewrite it): a bf16 matmul A @ B, the forward and both
# gradients of a 'SAME' 5x1 convolution of X (NHWC) with W (HWIO), and loop fusions; six
# outputs, so that the ENTRY header carries an /*index=5*/ comment.
FIXTURE = os.path.join(os.path.dirname(__file__), 'data', 'gpu_hlo_small.txt')
A, B, X, W = (64, 128), (128, 96), (4, 32, 8, 16), (5, 1, 16, 24)


def gpu_fixture_function(a, b, x, w):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  def loss(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.sum(jnp.tanh(y.astype(jnp.float32)))
  dx, dw = jax.grad(loss, argnums=(0, 1))(x, w)
  return jnp.tanh(a @ b) * 2, dx, dw, a.sum(), b.max(), x.mean(0)


def write_gpu_fixture(path: str = FIXTURE) -> None:
  """Needs the CUDA plugin and `gpu_compile.configure_environment('h100')` before JAX starts."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  sharding = jax.sharding.NamedSharding(gpu_compile.deviceless_mesh('h100'),
                                        jax.sharding.PartitionSpec())
  specs = [jax.ShapeDtypeStruct(s, jnp.bfloat16, sharding=sharding) for s in (A, B, X, W)]
  with open(path, 'w') as f:
    f.write(jax.jit(gpu_fixture_function).lower(*specs).compile().as_text())


def _cpu_roofline(fn, *args, bandwidth=1e12, peak=1e11):
  import jax  # pylint: disable=import-outside-toplevel
  compiled = jax.jit(fn).lower(*args).compile()
  return gpu_compile.hlo_roofline(compiled.as_text(), bandwidth, {'f32': peak}, batch=1,
                                  compute_dtype='f32'), compiled


def test_one_cpu_matmul_is_one_kernel_of_exact_flops_and_bytes():
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  a, b = jnp.ones((64, 128)), jnp.ones((128, 32))
  flops, nbytes = 2 * 64 * 128 * 32, (64 * 128 + 128 * 32 + 64 * 32) * 4
  # 5.2 us of compute against 0.06 us of memory traffic.
  roofline, _ = _cpu_roofline(lambda a, b: a @ b, a, b, bandwidth=1e12, peak=1e11)
  assert roofline['kernels'] == 1 and list(roofline['by_kind']) == ['gemm']
  assert roofline['flops_per_sample'] == flops and roofline['bytes_per_sample'] == nbytes
  assert roofline['memory_bound_share'] == 0 and roofline['mfu_bound'] == 1.0
  assert roofline['roofline_s'] == pytest.approx(flops / 1e11, rel=1e-3)
  # 0.52 us of compute against 0.57 us of memory traffic.
  roofline, _ = _cpu_roofline(lambda a, b: a @ b, a, b, bandwidth=1e11, peak=1e12)
  assert roofline['memory_bound_share'] == 1.0
  assert roofline['roofline_s'] == pytest.approx(nbytes / 1e11, rel=1e-3)
  assert roofline['mfu_bound'] == pytest.approx(flops / nbytes * 1e11 / 1e12, abs=1e-4)


def test_a_while_loop_counts_its_body_trip_count_times():
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  a, b = jnp.ones((64, 128)), jnp.ones((128, 128))
  roofline, compiled = _cpu_roofline(
      lambda a, b: jax.lax.fori_loop(0, 4, lambda i, c: jnp.tanh(c @ b), a), a, b)
  gemms = [k for k in roofline['top_kernels'] if k['kind'] == 'gemm']
  assert [k['times'] for k in gemms] == [4]
  assert roofline['flops_per_sample'] == 4 * 2 * 64 * 128 * 128
  assert roofline['unknown_trip_count_loops'] == []
  # XLA's own count takes the body once: this is what the parser adds.
  assert compiled.cost_analysis()['flops'] < 2 * 2 * 64 * 128 * 128


def test_a_conditional_counts_its_costliest_branch():
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  a, b = jnp.ones((64, 128)), jnp.ones((128, 128))
  roofline, _ = _cpu_roofline(
      lambda p, a, b: jax.lax.cond(p, lambda: jnp.tanh(a @ b), lambda: a + 1), True, a, b)
  assert roofline['flops_per_sample'] == 2 * 64 * 128 * 128
  assert 'conditional' not in roofline['by_kind']


def test_slices_and_in_place_updates_move_only_their_part():
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  big, part, i = jnp.ones((1024, 128)), jnp.ones((8, 128)), jnp.int32(3)
  part_bytes = 8 * 128 * 4  # a 512 KiB buffer, 4 KiB of it used
  sliced, _ = _cpu_roofline(lambda b: b[8:16] * 2, big)
  assert sliced['bytes_per_sample'] == 2 * part_bytes
  picked, _ = _cpu_roofline(lambda b, i: jax.lax.dynamic_slice(b, (i, 0), (8, 128)) * 2, big, i)
  assert picked['bytes_per_sample'] == 2 * part_bytes + 4  # and the s32 index
  compiled = jax.jit(lambda b, u, i: jax.lax.dynamic_update_slice(b, u * 2, (i, 0)),
                     donate_argnums=0).lower(big, part, i).compile()
  updated = gpu_compile.hlo_roofline(compiled.as_text(), 1e12, {'f32': 1e11}, batch=1)
  assert updated['kernels'] == 1 and updated['bytes_per_sample'] == 2 * part_bytes + 4


# A loop fusion as XLA:GPU left the first value of a BatchNorm input per channel: a convert and
# a bias add of the whole array, then a slice at the root; and a reduction over the same input.
_SLICE_AT_ROOT_HLO = """HloModule slice_at_root

%fused_slice (p0: bf16[1024,128], p1: f32[128]) -> f32[1,128] {
  %p0 = bf16[1024,128]{1,0} parameter(0)
  %c = f32[1024,128]{1,0} convert(%p0)
  %p1 = f32[128]{0} parameter(1)
  %b = f32[1024,128]{1,0} broadcast(%p1), dimensions={1}
  %a = f32[1024,128]{1,0} add(%c, %b)
  ROOT %s = f32[1,128]{1,0} slice(%a), slice={[0:1], [0:128]}
}

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

%fused_reduce (q0: bf16[1024,128]) -> f32[128] {
  %q0 = bf16[1024,128]{1,0} parameter(0)
  %qc = f32[1024,128]{1,0} convert(%q0)
  %zero = f32[] constant(0)
  ROOT %r = f32[128]{0} reduce(%qc, %zero), dimensions={0}, to_apply=%add
}

ENTRY %main (x: bf16[1024,128], y: f32[128]) -> (f32[1,128], f32[128]) {
  %x = bf16[1024,128]{1,0} parameter(0)
  %y = f32[128]{0} parameter(1)
  %first = f32[1,128]{1,0} fusion(%x, %y), kind=kLoop, calls=%fused_slice
  %total = f32[128]{0} fusion(%x), kind=kInput, calls=%fused_reduce
  ROOT %t = (f32[1,128]{1,0}, f32[128]{0}) tuple(%first, %total)
}
"""


def test_a_fusion_of_elementwise_ops_reads_at_most_what_it_writes():
  from benchmarks import profile_step  # pylint: disable=import-outside-toplevel
  hlo = profile_step.parse_hlo(_SLICE_AT_ROOT_HLO)
  # 128 values of each operand (bf16, f32) for the 128 it writes, not the whole 256 KiB input
  # (the charge that once made one-pass BatchNorm statistics look no cheaper).
  assert gpu_compile.kernel_bytes('first', hlo) == 128 * 2 + 128 * 4 + 128 * 4
  # A reduction reads every element it sums.
  assert gpu_compile.kernel_bytes('total', hlo) == 1024 * 128 * 2 + 128 * 4


# Collectives as XLA:GPU writes them for a ('data',) mesh of 8: the gradients' all-reduce over
# all 8 (mesh-style groups, an async pair) and a BatchNorm statistic's over pairs (iota groups).
_COLLECTIVES_HLO = """HloModule collectives

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

ENTRY %main (g: f32[1000000], s: f32[256]) -> (f32[1000000], f32[256]) {
  %g = f32[1000000]{0} parameter(0)
  %s = f32[256]{0} parameter(1)
  %start = f32[1000000]{0} all-reduce-start(%g), channel_id=1, replica_groups=mesh['axis_0'=8,'axis_1'=1] {'axis_0'}, use_global_device_ids=true, to_apply=%add
  %done = f32[1000000]{0} all-reduce-done(%start)
  %pairs = f32[256]{0} all-reduce(%s), channel_id=2, replica_groups=[4,2]<=[8], use_global_device_ids=true, to_apply=%add
  ROOT %t = (f32[1000000]{0}, f32[256]{0}) tuple(%done, %pairs)
}
"""


def test_collectives_are_charged_their_ring_traffic_apart_from_the_kernels():
  report = gpu_compile.hlo_roofline(_COLLECTIVES_HLO, 1e12, {'f32': 1e12}, batch=4, devices=8,
                                    link_bytes_s=100e9, collective_latency_s=1e-5)
  assert report['kernels'] == 0 and report['roofline_s'] == 0
  collectives = report['collectives']
  assert collectives['count'] == 2 and collectives['bytes'] == 4e6 + 1024
  assert collectives['by_op']['all-reduce']['count'] == 2
  # Ring all-reduce: each device sends 2 (n - 1) / n of the payload, n = 8 and 2.
  gradients = 1e-5 + 2 * 7 / 8 * 4e6 / 100e9
  statistic = 1e-5 + 2 * 1 / 2 * 1024 / 100e9
  assert collectives['seconds'] == pytest.approx(gradients + statistic, rel=1e-3)
  assert report['roofline_with_collectives_s'] == pytest.approx(gradients + statistic, rel=1e-3)
  assert gpu_compile.group_size("replica_groups={{0,1,2,3},{4,5,6,7}}", 8) == 4
  assert gpu_compile.group_size('replica_groups={}', 8) == 8
  with pytest.raises(ValueError, match='link_bytes_s'):
    gpu_compile.hlo_roofline(_COLLECTIVES_HLO, 1e12, {'f32': 1e12}, batch=4, devices=8)


def test_stored_gpu_module_library_calls_and_fusions():
  from benchmarks import profile_step  # pylint: disable=import-outside-toplevel
  with open(FIXTURE) as f:
    text = f.read()
  entry = next(line for line in text.splitlines() if line.startswith('ENTRY'))
  assert '/*index=5*/' in entry
  assert profile_step.parse_hlo(text)['entry'] is not None
  roofline = gpu_compile.hlo_roofline(text, 3.35e12, {'bf16': 989.4e12}, batch=1)
  found = roofline['top_kernels']
  assert len(found) == roofline['kernel_instructions'] == roofline['kernels']
  by_target = {k['target']: k for k in found if k['target']}
  assert set(by_target) == {'__cublas$lt$matmul', '__cudnn$convForward',
                            '__cudnn$convBackwardInput', '__cudnn$convBackwardFilter'}
  gemm = by_target.pop('__cublas$lt$matmul')
  assert gemm['flops'] == 2 * A[0] * A[1] * B[1]
  # Operands and result in bf16; the s8 cuBLAS workspace (4 MiB) is not memory traffic.
  assert gemm['bytes'] == (A[0] * A[1] + B[0] * B[1] + A[0] * B[1]) * 2
  # 'SAME': every output element of the forward convolution is a dot over the 5x1 window and
  # the 16 input channels; the two gradients cost as much.
  n, h, w_, c = X
  conv_flops = 2 * (n * h * w_ * W[3]) * (W[0] * W[1] * W[2])
  assert {t: k['flops'] for t, k in by_target.items()} == dict.fromkeys(by_target, conv_flops)
  assert all(k['kind'] == 'conv' and k['dtype'] == 'bf16' for k in by_target.values())
  assert by_target['__cudnn$convForward']['bytes'] == (
      n * h * w_ * c + W[0] * W[1] * W[2] * W[3] + n * h * w_ * W[3]) * 2
  fusions = [k for k in found if k['opcode'] == 'fusion']
  assert fusions and all(k['flops'] == 0 and k['bytes'] > 0 for k in fusions)
  assert roofline['flops_per_sample'] == gemm['flops'] + 3 * conv_flops
  assert roofline['matmul_ops']['custom-call __cublas$lt$matmul bf16,bf16->bf16'] == 1
  assert 0 < roofline['mfu_bound'] < 1 and 0 < roofline['memory_bound_share'] <= 1


def test_cpu_target_end_to_end(tmp_path, capsys, monkeypatch):
  import types  # pylint: disable=import-outside-toplevel
  from benchmarks import throughput  # pylint: disable=import-outside-toplevel
  compiled = []  # the executable the tool compiled, for XLA's own cost analysis of it
  make_steps = throughput.make_steps

  def recording_make_steps(*args, **kwargs):
    *state, train_step, eval_step = make_steps(*args, **kwargs)
    record = lambda lowered: types.SimpleNamespace(
        compile=lambda: compiled.append(lowered.compile()) or compiled[-1])
    return (*state, types.SimpleNamespace(lower=lambda *a: record(train_step.lower(*a))),
            eval_step)
  monkeypatch.setattr(throughput, 'make_steps', recording_make_steps)
  out = tmp_path / 'cpu.json'
  gpu_compile.main(['--target', 'cpu', '--model', 'small', '--batch', '2', '--kind', 'train',
                    '--dtype', 'float32', '--bandwidth_gbs', '100', '--peak_tflops', '1',
                    '--out', str(out)])
  capsys.readouterr()
  report = json.loads(out.read_text())
  assert report['projection'] is True and 'roofline' in report['note']
  assert {'target', 'bandwidth_bytes_s', 'peaks_flops_s', 'model', 'kind', 'dtype',
          'conv_algorithm', 'matmul_outputs', 'microbatches', 'environment',
          'command'} <= set(report)
  assert report['bandwidth_bytes_s'] == 100e9 and report['peaks_flops_s']['f32'] == 1e12
  assert report['matmul_outputs'] == 'float32'  # 'auto' on the CPU
  assert {'jax', 'jaxlib', 'git', 'cuda_plugin'} <= set(report['environment'])
  row, = report['results']
  assert row['batch'] == 2 and row['compile_s'] > 0
  memory = row['memory']
  assert memory['temp'] > 0 and memory['argument'] > 0 and memory['fits'] is True
  roofline = row['roofline']
  assert {'kernels', 'flops_per_sample', 'bytes_per_sample', 'roofline_s', 'memory_bound_share',
          'mfu_bound', 'by_kind', 'by_layer', 'top_kernels', 'matmul_ops'} <= set(roofline)
  assert roofline['kernels'] > 10 and roofline['roofline_s'] > 0
  assert 'blocks.*/proj/0' in roofline['by_layer']
  # XLA's count has the elementwise FLOPs too; the matmuls and convolutions are most of it.
  xla_flops = compiled[0].cost_analysis()['flops']
  assert 0.5 * xla_flops / 2 <= roofline['flops_per_sample'] <= xla_flops / 2


@pytest.mark.parametrize('step', ['benchmark', 'config'])
def test_cpu_target_on_two_devices_splits_the_batch(tmp_path, capsys, step):
  """The tests' fake CPU devices as a mesh of 2: one device's program, the batch split, the
  gradients summed by collectives (the benchmark step's, or the one training runs for a
  config)."""
  out = tmp_path / 'two.json'
  which = (['--model', 'small'] if step == 'benchmark'
           else ['--config', 'configs/demo.py', '--bn_group_size', '2'])
  gpu_compile.main(['--target', 'cpu', *which, '--batch', '4', '--kind', 'train',
                    '--dtype', 'float32', '--bandwidth_gbs', '100', '--peak_tflops', '1',
                    '--devices', '2', '--link_gbs', '10', '--out', str(out)])
  capsys.readouterr()
  report = json.loads(out.read_text())
  assert report['devices'] == 2 and report['config'] == (None if step == 'benchmark'
                                                          else 'configs/demo.py')
  row, = report['results']
  assert row['devices'] == 2 and row['batch'] == 4
  roofline, collectives = row['roofline'], row['roofline']['collectives']
  assert collectives['count'] >= 1 and collectives['devices'] == 2
  # At least every parameter's gradient crosses the link once (float32 here).
  assert collectives['bytes'] >= 4 * _parameter_count(step)
  assert collectives['seconds'] > 0
  assert roofline['roofline_with_collectives_s'] > roofline['roofline_s'] > 0
  assert row['samples_per_s_all_devices'] == pytest.approx(
      4 / roofline['roofline_with_collectives_s'], rel=1e-3)
  with pytest.raises(SystemExit, match='does not split over 2 devices'):
    gpu_compile.main(['--target', 'cpu', '--model', 'small', '--batch', '3', '--dtype',
                      'float32', '--bandwidth_gbs', '100', '--peak_tflops', '1', '--devices',
                      '2', '--link_gbs', '10'])
  with pytest.raises(SystemExit, match='needs --link_gbs'):
    gpu_compile.main(['--target', 'cpu', '--model', 'small', '--batch', '4', '--dtype',
                      'float32', '--bandwidth_gbs', '100', '--peak_tflops', '1', '--devices',
                      '2'])


def test_init_kind_compiles_the_state_initialiser(tmp_path, capsys):
  out = tmp_path / 'init.json'
  gpu_compile.main(['--target', 'cpu', '--config', 'configs/demo.py:runlocal', '--kind', 'init',
                    '--batch', '2', '--dtype', 'float32', '--bandwidth_gbs', '100',
                    '--peak_tflops', '1', '--out', str(out)])
  capsys.readouterr()
  row, = json.loads(out.read_text())['results']
  assert row['kind'] == 'init' and row['compile_s'] > 0
  assert row['roofline']['matmul_ops'] == {}  # an initialiser, not a step
  assert row['memory']['output'] > 4 * _parameter_count('config')  # the state
  with pytest.raises(SystemExit, match='--kind init needs --config'):
    gpu_compile.main(['--target', 'cpu', '--model', 'small', '--kind', 'init', '--batch', '2',
                      '--bandwidth_gbs', '100', '--peak_tflops', '1'])


def _parameter_count(step: str) -> int:
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from benchmarks import throughput  # pylint: disable=import-outside-toplevel
  from istanet_jax import steps, viz  # pylint: disable=import-outside-toplevel
  model = (throughput.make_model('small') if step == 'benchmark'
           else steps.model_from_config(viz.load_config('configs/demo.py')))
  shapes = model.variable_shapes()['params']
  return int(sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(shapes)))


def _unset(monkeypatch, *names):
  for name in names:  # set first, so that the test's end unsets what the code under test sets
    monkeypatch.setenv(name, '')
    monkeypatch.delenv(name)


def test_gpu_target_without_the_plugin_says_how_to_install_it(monkeypatch):
  monkeypatch.setattr(gpu_compile, 'package_version',
                      lambda p: None if p in gpu_compile._PLUGINS else '0.10.2')
  _unset(monkeypatch, 'JAX_PLATFORMS')
  with pytest.raises(SystemExit, match='pip install --no-deps jax-cuda12-plugin==0.10.2'):
    gpu_compile.main(['--target', 'h100', '--model', 'small'])
  assert 'JAX_PLATFORMS' not in os.environ


def test_gpu_environment_is_set_before_jax_starts(monkeypatch):
  monkeypatch.setattr(gpu_compile, 'package_version', lambda p: '0.10.2')
  _unset(monkeypatch, 'JAX_PLATFORMS', 'JAX_SKIP_CUDA_CONSTRAINTS_CHECK')
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
  gpu_compile.configure_environment('h200')
  assert os.environ['JAX_PLATFORMS'] == 'cpu,cuda'
  assert os.environ['XLA_FLAGS'].split() == ['--xla_force_host_platform_device_count=8',
                                             '--xla_gpu_enable_triton_gemm=false']
  monkeypatch.setenv('XLA_FLAGS', '')
  gpu_compile.configure_environment('h100', 'triton')  # Triton GEMM fusions, default tiles
  assert os.environ['XLA_FLAGS'] == '--xla_gpu_autotune_level=0'
  monkeypatch.setenv('XLA_FLAGS', '--xla_gpu_enable_triton_gemm=true')
  gpu_compile.configure_environment('h100')  # the user's choice stands
  assert os.environ['XLA_FLAGS'] == '--xla_gpu_enable_triton_gemm=true'
  config = gpu_compile.TARGETS['h200'].target_config
  assert 'memory_bandwidth: 4800000000000' in config and 'core_count: 132' in config


if __name__ == '__main__':
  gpu_compile.configure_environment('h100')
  write_gpu_fixture()
