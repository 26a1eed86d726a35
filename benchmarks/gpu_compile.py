r"""What a train or eval step will need on an NVIDIA H100 or H200, from a compile without one.

  python3 -m venv --system-site-packages /tmp/venvgpu
  V=$(python -c 'import jax; print(jax.__version__)')
  /tmp/venvgpu/bin/pip install --no-deps jax-cuda12-plugin==$V jax-cuda12-pjrt==$V
  /tmp/venvgpu/bin/python -m benchmarks.gpu_compile --target h100 --model ntu26 \
      --dtype bfloat16 --kind train --batch 128,256 --conv_algorithm xla --out /tmp/h100.json

XLA:GPU compiles ahead of time for a described GPU ("deviceless": the CUDA plugin's topology
for `TARGETS[...].target_config`), so the step's compiled HLO and XLA's memory plan exist before
any GPU session. The plugin goes into a separate virtual environment without its CUDA libraries
(`--no-deps`): it compiles but cannot run, and installed into the main Python every JAX process
would try to load CUDA. `--target cpu` compiles for this machine's CPU instead (no plugin; give
its `--bandwidth_gbs` and `--peak_tflops`), which is how the tests run the whole tool.

This module owns the roofline of compiled HLO (`hlo_roofline`): every kernel the step launches
(a while loop's body counted its known trip count times), its FLOPs (cuBLAS and cuDNN calls,
or dots and convolutions, fused or not) and its memory traffic (operands read once and results
written once; a sliced operand only as far as its slices, a buffer updated in place only by its
update, a library call's scratch workspace not at all), and its least time, max(bytes /
bandwidth, FLOPs / dense peak at its operands' dtype). The sum over kernels (`roofline_s`)
bounds the step time from below and `mfu_bound` the MFU from above; the report gives them per
sample and by kernel kind and model layer. FLOPs are those the compiled kernels run: XLA:GPU
pads 16-bit matmul dimensions to multiples of 8 (150 tokens to 152), and the model picks other
forms per platform, so a CPU compile of the same step counts other FLOPs.

A projection, not a measurement: nothing ran and nothing was autotuned; real kernels reach
neither peak (cuBLAS / cuDNN efficiency at these shapes, launch gaps, cache misses). Matmuls
compile as cuBLAS calls (`--gemm cublas`, the default: `--xla_gpu_enable_triton_gemm=false`),
for which XLA pads 16-bit operands to multiples of 8 in copies of their own, or as Triton GEMM
fusions with XLA's default tiles (`--gemm triton`: `--xla_gpu_autotune_level=0`; without a GPU
there is nothing to autotune on), which take sizes as they are and read some operands through
fused slices and transposes. On a GPU XLA's autotuner picks between the two per matmul, so the
GPU's program lies between these; XLA_FLAGS naming either flag overrides `--gemm`. XLA's
`cost_analysis()` is empty for a deviceless executable, hence the parser.

`--devices N` compiles for N GPUs of one host, the batch split along 'data': the program is one
device's, and its collectives are charged a latency plus their ring traffic at the GPU's link
rate, apart from the kernels (`hlo_roofline`). `--config` compiles the step training runs for a
config (`istanet_jax.train.jit_steps`) instead of `benchmarks.throughput`'s.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import importlib.metadata
import json
import math
import os
import re
import sys
import time
from typing import Callable, Optional

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import profile_step  # pylint: disable=wrong-import-position  (no JAX import)

NOTE = ('A roofline projection from compiling without the device, not a measurement: each '
        'kernel is charged max(bytes / bandwidth, FLOPs / dense peak), with no autotuning, '
        'library (cuBLAS/cuDNN) efficiency, launch overhead or cache effects, so the step '
        'time is >= roofline_s and MFU <= mfu_bound. Matmuls are cuBLAS calls or Triton GEMM '
        'fusions with default tiles (`gemm`); a GPU autotunes between the two per matmul.')


@dataclasses.dataclass(frozen=True)
class Target:
  """A device to compile for. For a GPU, the fields XLA's cost model reads from the device
  (`target_config`); `device_kind` is what the device calls itself (the key into
  `benchmarks.throughput.PEAK_TFLOPS`)."""
  platform: str  # 'cuda' or 'cpu'
  device_kind: str = ''
  bandwidth: Optional[float] = None  # HBM bytes/s
  memory_bytes: Optional[int] = None
  sms: int = 0
  clock_ghz: float = 0.0
  l2_bytes: int = 0
  # float32 matmuls run on the tensor cores as TF32 at XLA:GPU's default precision.
  tf32_tflops: Optional[float] = None
  # What one device sends per second to its peers (NVLink 4 of an SXM board: 18 links x
  # 25 GB/s each way), the rate of a ring collective's every step.
  link_bandwidth: Optional[float] = None

  @property
  def target_config(self) -> str:
    """The xla.GpuTargetConfigProto text a deviceless compile takes (Hopper, sm_90)."""
    return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: {self.sms}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {int(self.bandwidth)}
  l2_cache_size: {self.l2_bytes}
  clock_rate_ghz: {self.clock_ghz}
  device_memory_size: {self.memory_bytes}
  shared_memory_per_block_optin: 232448
  cuda_compute_capability {{
    major: 9
  }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{
  major: 9
  minor: 8
}}
runtime_version {{
  major: 12
  minor: 8
}}
device_description_str: "{self.device_kind}"
"""


TARGETS = {
    'h100': Target('cuda', 'NVIDIA H100 80GB HBM3', bandwidth=3.35e12, memory_bytes=80 << 30,
                   sms=132, clock_ghz=1.98, l2_bytes=50 << 20, tf32_tflops=494.7,
                   link_bandwidth=450e9),
    'h200': Target('cuda', 'NVIDIA H200', bandwidth=4.8e12, memory_bytes=141 * 10**9,
                   sms=132, clock_ghz=1.98, l2_bytes=50 << 20, tf32_tflops=494.7,
                   link_bandwidth=450e9),
    'cpu': Target('cpu'),  # bandwidth and peak from the flags; memory: this machine's RAM
}

_INSTALL = ('--target {target} compiles for a GPU without one and needs the CUDA PJRT plugin '
            '(without CUDA: --no-deps) in a separate virtual environment:\n'
            '  python3 -m venv --system-site-packages /tmp/venvgpu\n'
            '  /tmp/venvgpu/bin/pip install --no-deps jax-cuda12-plugin=={jax} '
            'jax-cuda12-pjrt=={jax}\n'
            '  /tmp/venvgpu/bin/python -m benchmarks.gpu_compile ...')
_PLUGINS = ('jax-cuda12-plugin', 'jax-cuda12-pjrt')
JAX_MEM_FRACTION = 0.75
# How matmuls compile (--gemm): XLA_FLAGS for each. Without a GPU, Triton GEMM fusions compile
# only with autotuning off (level 0: XLA's default tiles).
GEMM_FLAGS = {'cublas': '--xla_gpu_enable_triton_gemm=false',
              'triton': '--xla_gpu_autotune_level=0'}


def package_version(package: str) -> Optional[str]:
  """The installed version of `package`, or None where it is not installed."""
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def plugin_versions() -> dict:
  return {p: package_version(p) for p in _PLUGINS}


def configure_environment(target: str, gemm: str = 'cublas', devices: int = 1) -> None:
  """For a GPU target: the CUDA plugin is checked and the deviceless settings made, matmuls
  as `gemm` (GEMM_FLAGS). For 'cpu' with several `devices`: as many host devices. Must run
  before JAX is first imported (JAX reads JAX_PLATFORMS then, XLA_FLAGS when its first backend
  starts); exits with the install commands where the plugin is missing or of another version."""
  if TARGETS[target].platform != 'cuda':
    flags = os.environ.get('XLA_FLAGS', '')
    if devices > 1 and 'xla_force_host_platform_device_count' not in flags:
      os.environ['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count={devices}'.strip()
    return
  jax_version, versions = package_version('jax'), plugin_versions()
  if any(v != jax_version for v in versions.values()):
    raise SystemExit(_INSTALL.format(target=target, jax=jax_version)
                     + f'\n(found {versions}, jax {jax_version})')
  os.environ.setdefault('JAX_PLATFORMS', 'cpu,cuda')
  os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')  # no CUDA libraries to check
  flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_gpu_enable_triton_gemm' not in flags and 'xla_gpu_autotune_level' not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {GEMM_FLAGS[gemm]}'.strip()


def deviceless_mesh(target: str, devices: int = 1):
  """A ('data',) mesh of `devices` devices of the target: for a GPU the plugin's topology of
  that many described GPUs on one host (no device needed), for 'cpu' this machine's first CPU
  devices."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  spec = TARGETS[target]
  if spec.platform == 'cpu':
    found = jax.devices('cpu')[:devices]
    if len(found) < devices:
      raise SystemExit(f'--devices {devices}: JAX sees {len(found)} CPU devices (XLA_FLAGS '
                       f'--xla_force_host_platform_device_count={devices} before JAX starts)')
    return jax.sharding.Mesh(np.array(found), ('data',))
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  try:
    topology = topologies.get_topology_desc(platform='cuda', target_config=spec.target_config,
                                            topology=f'1x1x{devices}')
  except Exception as e:  # pylint: disable=broad-except  (the plugin's errors have no type)
    raise SystemExit(f'no deviceless CUDA topology ({e}); run in a fresh process with the '
                     'plugin installed: ' + _INSTALL.format(target=target, jax=jax.__version__)
                     ) from e
  return topologies.make_mesh(topology, (devices,), ('data',))


def peaks_flops_s(target: str, peak_tflops: Optional[float] = None) -> dict:
  """{HLO operand dtype: dense FLOP/s}: the GPU's tensor-core peaks (bf16 and f16 alike, f32 as
  TF32), or `peak_tflops` for every dtype where given (required for 'cpu')."""
  if peak_tflops is not None:
    return {d: peak_tflops * 1e12 for d in ('bf16', 'f16', 'f32')}
  spec = TARGETS[target]
  if spec.platform == 'cpu':
    raise SystemExit('--target cpu needs --peak_tflops (this CPU\'s dense matmul peak)')
  from benchmarks import throughput  # pylint: disable=import-outside-toplevel
  peaks = next(p for name, p in throughput.PEAK_TFLOPS if name in spec.device_kind)
  return {'bf16': peaks['bfloat16'] * 1e12, 'f16': peaks['bfloat16'] * 1e12,
          'f32': spec.tf32_tflops * 1e12}


def memory_bytes(target: str) -> int:
  spec = TARGETS[target]
  if spec.memory_bytes is not None:
    return spec.memory_bytes
  return os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


def compile_step(model_name: str, kind: str, batch: int, dtype: str = 'bfloat16',
                 conv_algorithm: str = 'xla', matmul_outputs: Optional[str] = None,
                 microbatches: int = 1, target: str = 'h100',
                 bn_group_size: Optional[int] = None, devices: int = 1,
                 config=None) -> tuple[str, dict, float]:
  """(compiled HLO text, XLA's memory plan in bytes, seconds to lower and compile) of
  `benchmarks.throughput`'s train step (variables, opt_state, x, y) or eval step (variables, x)
  for `target`. The concrete variables are made on the CPU; the step is lowered for abstract
  arrays placed on the target's mesh, so nothing is put on the target. On several `devices`
  the batch (x, y) is split along the mesh's 'data' axis and the rest replicated, as
  `istanet_jax.train` places them; the program and memory plan are then one device's. With a
  `config` (its model and recipe, the arguments above already set in it) the step is the one
  training runs instead (`_config_step`)."""
  import jax  # pylint: disable=import-outside-toplevel
  from benchmarks import throughput  # pylint: disable=import-outside-toplevel
  replicated, split = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec('data')
  mesh = deviceless_mesh(target, devices)
  if config is not None:
    jitted, args, specs = _config_step(config, kind, batch, mesh)
  else:
    model = throughput.make_model(model_name, dtype, conv_algorithm, bn_group_size,
                                  matmul_outputs=matmul_outputs)
    with jax.default_device(jax.devices('cpu')[0]):
      variables, opt_state, x, y, train_step, eval_step = throughput.make_steps(
          model, batch, microbatches=microbatches)
    jitted, args, specs = ((train_step, (variables, opt_state, x, y),
                            (replicated, replicated, split, split)) if kind == 'train'
                           else (eval_step, (variables, x), (replicated, split)))

  def placed(arg, spec):  # abstract arrays on the target's mesh: nothing is put on it
    sharding = jax.sharding.NamedSharding(mesh, spec)
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), arg)
  abstract = [placed(arg, spec) for arg, spec in zip(args, specs)]
  start = time.perf_counter()
  compiled = jitted.lower(*abstract).compile()
  seconds = time.perf_counter() - start
  return compiled.as_text(), _memory_plan(compiled), seconds


def _config_step(config, kind: str, batch: int, mesh):
  """(jitted step, its arguments, their PartitionSpecs) for `compile_step`: the train or eval
  step of `istanet_jax.train.jit_steps`, what training runs for `config` (augmentation, loss
  masks, the non-finite guard, the schedule, gradient accumulation), on abstract state and a
  synthetic batch of `batch` samples; or ('init') its state initialiser."""
  import jax  # pylint: disable=import-outside-toplevel
  from benchmarks import first_step  # pylint: disable=import-outside-toplevel
  from istanet_jax import steps, train  # pylint: disable=import-outside-toplevel
  replicated, split = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec('data')
  model = steps.model_from_config(config)
  tx = steps.make_optimizer(config, steps_per_epoch=100)
  init_state, train_step, eval_step = train.jit_steps(config, model, tx, mesh)
  with jax.default_device(jax.devices('cpu')[0]):
    key = jax.random.key(config.seed)
    if kind == 'init':  # for its compile time: a fresh run compiles it beside the first step
      return init_state, (key,), (replicated,)
    state = jax.eval_shape(lambda k: steps.create_state(model, tx, k), key)
  data = first_step.synthetic_batch(config, batch)
  if kind == 'train':
    return train_step, (state, data, key), (replicated, split, replicated)
  return eval_step, (state, data), (replicated, split)


def _memory_plan(compiled) -> dict:
  plan = compiled.memory_analysis()
  memory = {k: int(getattr(plan, f'{k}_size_in_bytes')) for k in
            ('argument', 'output', 'alias', 'temp', 'generated_code')}
  # Donated state is aliased to the outputs: it is held once.
  memory['peak'] = memory['argument'] + memory['output'] - memory['alias'] + memory['temp']
  return memory


# --- the roofline of compiled HLO -------------------------------------------------------------

_ARRAY = re.compile(r'\b([a-z][a-z0-9]*)\[([0-9,]*)\]')
_BITS = re.compile(r'\d+')
_CONTRACTING = re.compile(r'lhs_contracting_dims=\{([0-9,]*)\}')
_DIM_LABELS = re.compile(r'dim_labels=(\w+)_(\w+)->(\w+)')
_COMPUTATION_ARG = {key: re.compile(key + r'=%?([\w.\-]+)')
                    for key in ('body', 'condition', 'to_apply')}
_BRANCHES = re.compile(r'(?:branch_computations=\{([^}]*)\}|(?:true|false)_computation=%?'
                       r'([\w.\-]+))')
# Instructions that launch nothing: views, bookkeeping, and the halves of async pairs whose
# start is counted.
_FREE = frozenset({'parameter', 'constant', 'get-tuple-element', 'tuple', 'bitcast',
                   'after-all', 'opt-barrier', 'partition-id', 'replica-id', 'add-dependency',
                   'domain', 'async-done', 'async-update', 'copy-done', 'all-reduce-done',
                   'all-gather-done', 'collective-permute-done'})
# Collectives (sync, or the start of an async pair): what one device sends of a payload of S
# bytes (the larger of operands and results) in a ring over a group of n devices, in units of
# S: all-reduce 2(n-1)/n (a reduce-scatter and an all-gather), the others (n-1)/n, a permute 1.
_COLLECTIVES = {
    'all-reduce': lambda n: 2 * (n - 1) / n, 'all-reduce-start': lambda n: 2 * (n - 1) / n,
    'all-gather': lambda n: (n - 1) / n, 'all-gather-start': lambda n: (n - 1) / n,
    'reduce-scatter': lambda n: (n - 1) / n, 'all-to-all': lambda n: (n - 1) / n,
    'collective-permute': lambda n: 1.0, 'collective-permute-start': lambda n: 1.0}
_GROUPS_LIST = re.compile(r'replica_groups=\{\{([0-9,]*)\}')
_GROUPS_MESH = re.compile(r'replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}')
_GROUPS_IOTA = re.compile(r'replica_groups=\[(\d+),(\d+)\]')
_SLICES = frozenset({'slice', 'dynamic-slice'})
# Ops by which one output element of a loop fusion can depend on many elements of an operand;
# a fusion of none of them reads at most one element of each operand per element it writes.
_GATHERING = frozenset({'reduce', 'reduce-window', 'dot', 'convolution', 'scatter', 'sort',
                        'select-and-scatter', 'fusion', 'call', 'while', 'custom-call',
                        'map', 'fft', 'triangular-solve', 'cholesky'})


def _arrays(shape: str) -> list[tuple[str, list[int]]]:
  return [(dtype, [int(d) for d in dims.split(',') if d]) for dtype, dims in _ARRAY.findall(shape)]


def _itemsize(dtype: str) -> float:
  if dtype == 'token':
    return 0
  bits = _BITS.search(dtype)  # f32, bf16, s8, f8e4m3fn, c64, s4; pred is a byte
  return int(bits.group()) / 8 if bits else 1


def nbytes(shape: str, workspace: bool = False) -> int:
  """Bytes of an HLO type; `workspace`: a library call's tuple result, whose last element
  (s8 / u8) is its scratch space, not data it writes."""
  arrays = _arrays(shape)
  if workspace and len(arrays) > 1 and arrays[-1][0] in ('s8', 'u8'):
    arrays = arrays[:-1]
  return int(sum(_itemsize(d) * math.prod(dims) for d, dims in arrays))


def _backend_config(attributes: str) -> dict:
  start = attributes.find('backend_config=')
  if start < 0 or attributes[start + len('backend_config='):][:1] != '{':
    return {}
  try:
    return json.JSONDecoder().raw_decode(attributes, start + len('backend_config='))[0]
  except ValueError:
    return {}


def _matmuls(name: str, hlo: dict) -> list[tuple[int, str]]:
  """[(FLOPs, operand dtype)] of the matmuls and convolutions `name` runs: itself, or those
  inside the computations it calls (a fusion's)."""
  ins = hlo['instructions'][name]
  shape_of = lambda operand: hlo['instructions'][operand].shape
  operand_dtype = hlo['instructions'][ins.operands[0]].dtype if ins.operands else ''
  if ins.opcode == 'dot':
    lhs = _arrays(shape_of(ins.operands[0]))[0][1]
    contracting = _CONTRACTING.search(ins.attributes).group(1)
    k = math.prod(lhs[int(i)] for i in contracting.split(',') if i)
    return [(2 * math.prod(_arrays(ins.shape)[0][1]) * k, operand_dtype)]
  if 'cublas' in ins.target:
    numbers = _backend_config(ins.attributes)['gemm_backend_config']['dot_dimension_numbers']
    lhs = _arrays(shape_of(ins.operands[0]))[0][1]
    k = math.prod(lhs[int(i)] for i in numbers['lhs_contracting_dimensions'])
    return [(2 * math.prod(_arrays(ins.shape)[0][1]) * k, operand_dtype)]
  if ins.opcode == 'convolution' or 'cudnn$conv' in ins.target:
    # Every output element of the forward convolution is a dot over the window and the
    # kernel's input features: 2 * |y| * |w| / (output features). The backward calls cost as
    # much as their forward; which operand is y or w depends on the call.
    kernel_labels = _DIM_LABELS.search(ins.attributes).group(2)
    result = _arrays(ins.shape)[0][1]
    operands = [_arrays(shape_of(o))[0][1] for o in ins.operands[:2]]
    if 'BackwardInput' in ins.target:
      y, w = operands
    elif 'BackwardFilter' in ins.target:
      y, w = operands[1], result
    else:
      y, w = result, operands[1]
    flops = 2 * math.prod(y) * math.prod(w) // w[kernel_labels.index('o')]
    return [(flops, operand_dtype)]
  return [m for computation in ins.calls for member in hlo['members'].get(computation, [])
          for m in _matmuls(member, hlo)]


def _users(computation: str, hlo: dict) -> dict:
  users = collections.defaultdict(list)
  for member in hlo['members'].get(computation, []):
    for operand in hlo['instructions'][member].operands:
      users[operand].append(hlo['instructions'][member])
  return users


def kernel_bytes(name: str, hlo: dict) -> int:
  """Bytes a kernel reads and writes in device memory: its operands and results, except that a
  sliced operand is read only as far as its slices go, a buffer updated in place
  (dynamic-update-slice) costs only its update, read and written, and a fusion of elementwise,
  layout and slicing ops (none of _GATHERING) reads of each operand at most one element per
  element it writes (e.g. a slice at its root, after a convert)."""
  ins = hlo['instructions'][name]
  shape_of = lambda operand: hlo['instructions'][operand].shape
  if ins.opcode in _SLICES:
    return 2 * nbytes(ins.shape)
  if ins.opcode == 'dynamic-update-slice':
    return 2 * nbytes(shape_of(ins.operands[1]))
  written = nbytes(ins.shape, workspace=bool(ins.target))
  if ins.opcode != 'fusion' or not ins.calls:
    return sum(nbytes(shape_of(o)) for o in ins.operands) + written
  fused = ins.calls[0]
  members = [hlo['instructions'][m] for m in hlo['members'].get(fused, [])]
  parameters = {m.parameter: n for n, m in zip(hlo['members'].get(fused, []), members)
                if m.opcode == 'parameter'}
  users = _users(fused, hlo)
  root = hlo['instructions'].get(hlo['roots'].get(fused, ''))
  outputs = ([] if root is None else [hlo['instructions'][o] for o in root.operands]
             if root.opcode == 'tuple' else [root])
  elements = math.inf
  if outputs and not hlo['computations'].get(fused, set()) & _GATHERING:
    elements = sum(math.prod(dims) for o in outputs for _, dims in _arrays(o.shape))
  read = 0
  for i, operand in enumerate(ins.operands):
    uses = users.get(parameters.get(i), [])
    if uses and all(u.opcode in _SLICES for u in uses):
      size = min(nbytes(shape_of(operand)), sum(nbytes(u.shape) for u in uses))
    elif uses and all(u.opcode == 'dynamic-update-slice' and u.operands[0] == parameters[i]
                      for u in uses):
      size = 0  # updated in place: the update is counted as written below
    else:
      size = nbytes(shape_of(operand))
    read += int(min(size, elements * _itemsize(_arrays(shape_of(operand))[0][0])))
  if outputs:
    written = sum(nbytes(shape_of(o.operands[1])) if o.opcode == 'dynamic-update-slice'
                  else nbytes(o.shape) for o in outputs)
  return read + written


def _kind(ins, hlo: dict) -> str:
  inside = set().union(*(hlo['computations'].get(c, set()) for c in ins.calls))
  if 'cublas' in ins.target or ins.opcode == 'dot':
    return 'gemm'
  if 'cudnn$conv' in ins.target or ins.opcode == 'convolution' or 'convolution' in inside:
    return 'conv'
  if 'dot' in inside:
    return 'gemm'
  if ins.opcode in ('copy', 'transpose', 'copy-start'):
    return 'copy'
  if ins.opcode == 'custom-call':
    return f'custom-call {ins.target}'
  return ins.opcode


def group_size(attributes: str, devices: int) -> int:
  """How many devices take part in each group of a collective: its replica_groups' first
  group, all `devices` where the groups are empty."""
  mesh = _GROUPS_MESH.search(attributes)  # mesh['axis_0'=8,'axis_1'=1] {'axis_0'}
  if mesh:
    sizes = {a: int(n) for a, n in re.findall(r"'(\w+)'=(\d+)", mesh.group(1))}
    return math.prod(sizes[a] for a in re.findall(r"'(\w+)'", mesh.group(2)))
  listed = _GROUPS_LIST.search(attributes)
  if listed:
    return len([d for d in listed.group(1).split(',') if d])
  iota = _GROUPS_IOTA.search(attributes)  # [groups, size]<=[devices]
  return int(iota.group(2)) if iota else devices


def kernels(hlo: dict, seconds: Callable[[dict], float],
            devices: int = 1) -> tuple[list[dict], list[str]]:
  """(kernels, while loops without a known trip count). Each kernel: the instruction's figures
  for one launch and `times`, how often a step launches it (loops: the known trip count; the
  condition runs once more). A conditional counts its costliest branch by `seconds(kernel)`,
  each kernel's time at one launch. Collectives are kind 'collective', `bytes` their payload,
  with the `group_size` of `devices` they run over."""
  unknown = []

  def walk(computation: str, times: int) -> list[dict]:
    out = []
    for name in hlo['members'].get(computation, []):
      ins = hlo['instructions'][name]
      if ins.opcode in _FREE:
        continue
      if ins.opcode == 'while':
        trips = _backend_config(ins.attributes).get('known_trip_count', {}).get('n')
        if trips is None:
          unknown.append(name)
        trips = int(trips or 1)
        out += walk(_COMPUTATION_ARG['body'].search(ins.attributes).group(1), times * trips)
        out += walk(_COMPUTATION_ARG['condition'].search(ins.attributes).group(1),
                    times * (trips + 1))
      elif ins.opcode == 'conditional':
        branches = [re.findall(r'%?([\w.\-]+)', group or single)
                    for group, single in _BRANCHES.findall(ins.attributes)]
        walked = [walk(b, times) for names in branches for b in names]
        out += max(walked, key=lambda ks: sum(k['seconds'] * k['times'] for k in ks),
                   default=[])
      elif ins.opcode == 'call' or ins.opcode == 'async-start':
        called = _COMPUTATION_ARG['to_apply'].search(ins.attributes)
        for c in ([called.group(1)] if called else ins.calls):
          out += walk(c, times)
      elif ins.opcode in _COLLECTIVES:
        payload = max(nbytes(ins.shape), sum(nbytes(hlo['instructions'][o].shape)
                                             for o in ins.operands))
        kernel = dict(name=name, opcode=ins.opcode, kind='collective', target='',
                      dtype=ins.dtype, bytes=payload, flops=0, matmuls=[],
                      group_size=group_size(ins.attributes, devices), op_name=ins.op_name,
                      times=times)
        kernel['seconds'] = seconds(kernel)
        out.append(kernel)
      else:
        matmuls = _matmuls(name, hlo)
        kernel = dict(
            name=name, opcode=ins.opcode, kind=_kind(ins, hlo), target=ins.target,
            dtype=ins.dtype, operand_dtypes=[hlo['instructions'][o].dtype for o in ins.operands],
            bytes=kernel_bytes(name, hlo), flops=sum(f for f, _ in matmuls), matmuls=matmuls,
            op_name=ins.op_name, times=times)
        kernel['seconds'] = seconds(kernel)
        out.append(kernel)
    return out

  return walk(hlo['entry'], 1), unknown


def _sig(x: float, digits: int = 4) -> float:
  return float(f'{x:.{digits}g}')


def hlo_roofline(hlo_text: str, bandwidth_bytes_s: float, peaks_flops_s: dict, batch: int,
                 compute_dtype: str = 'bf16', top: int = 25, devices: int = 1,
                 link_bytes_s: Optional[float] = None,
                 collective_latency_s: float = 10e-6) -> dict:
  """The roofline of a compiled step (module docstring): totals per sample, the least step
  time `roofline_s`, the share of it spent in memory-bound kernels, the MFU bound against
  `peaks_flops_s[compute_dtype]`, time by kernel kind and by model layer, and the costliest
  kernels. A dtype missing from `peaks_flops_s` is charged the highest peak given.

  A program of one of several `devices` (batch: that device's) also has `collectives`: each
  charged `collective_latency_s` plus its ring traffic (`_COLLECTIVES`) at `link_bytes_s`,
  outside `roofline_s` (they may overlap the kernels); `roofline_with_collectives_s` adds them,
  as if nothing overlapped."""
  from benchmarks import throughput  # pylint: disable=import-outside-toplevel
  hlo = profile_step.parse_hlo(hlo_text)
  fastest = max(peaks_flops_s.values())

  def bounds(kernel):
    return (kernel['bytes'] / bandwidth_bytes_s,
            sum(f / peaks_flops_s.get(d, fastest) for f, d in kernel['matmuls']))

  def seconds(kernel):
    if kernel['kind'] != 'collective':
      return max(bounds(kernel))
    if link_bytes_s is None:
      raise ValueError('a program with collectives needs link_bytes_s')
    factor = _COLLECTIVES[kernel['opcode']](kernel['group_size'])
    return collective_latency_s + factor * kernel['bytes'] / link_bytes_s

  found, unknown = kernels(hlo, seconds, devices)
  communication = collections.defaultdict(collections.Counter)
  for k in found:
    if k['kind'] == 'collective':
      communication[k['opcode'].removesuffix('-start')].update(
          count=k['times'], bytes=k['bytes'] * k['times'], seconds=k['seconds'] * k['times'])
  found = [k for k in found if k['kind'] != 'collective']
  total = collections.Counter()
  by_kind = collections.defaultdict(collections.Counter)
  by_layer = collections.Counter()
  for k in found:
    memory_s, compute_s = bounds(k)
    k['bound'] = 'memory' if memory_s >= compute_s else 'compute'
    step_s = k['seconds'] * k['times']
    total.update(seconds=step_s, flops=k['flops'] * k['times'], bytes=k['bytes'] * k['times'],
                 kernels=k['times'],
                 memory_bound_seconds=step_s if k['bound'] == 'memory' else 0)
    by_kind[k['kind']].update(seconds=step_s, kernels=k['times'], flops=k['flops'] * k['times'],
                              bytes=k['bytes'] * k['times'])
    by_layer[profile_step.layer(k['op_name'])] += step_s
  seconds = total['seconds'] or float('nan')
  peak = peaks_flops_s.get(compute_dtype, fastest)
  kinds = {kind: dict(seconds=_sig(c['seconds']), share=round(c['seconds'] / seconds, 4),
                      kernels=c['kernels'], flops_per_sample=c['flops'] / batch,
                      bytes_per_sample=c['bytes'] / batch)
           for kind, c in sorted(by_kind.items(), key=lambda kv: -kv[1]['seconds'])}
  layers = {layer: dict(seconds=_sig(s), share=round(s / seconds, 4))
            for layer, s in by_layer.most_common()}
  costliest = sorted(found, key=lambda k: -k['seconds'] * k['times'])[:top]
  top_kernels = [dict(name=k['name'], opcode=k['opcode'], kind=k['kind'], target=k['target'],
                      dtype=k['dtype'], operand_dtypes=k['operand_dtypes'], bytes=k['bytes'],
                      flops=k['flops'], times=k['times'], bound=k['bound'],
                      seconds=_sig(k['seconds'] * k['times']), op_name=k['op_name'])
                 for k in costliest]
  collective_s = sum(c['seconds'] for c in communication.values())
  collectives = dict(
      count=sum(c['count'] for c in communication.values()),
      bytes=sum(c['bytes'] for c in communication.values()), seconds=_sig(collective_s),
      by_op={op: dict(count=c['count'], bytes=c['bytes'], seconds=_sig(c['seconds']))
             for op, c in sorted(communication.items())},
      devices=devices, link_bytes_s=link_bytes_s, latency_s=collective_latency_s)
  return dict(
      collectives=collectives, roofline_with_collectives_s=_sig(total['seconds'] + collective_s),
      kernels=total['kernels'], kernel_instructions=len(found), flops=total['flops'],
      bytes=total['bytes'], flops_per_sample=total['flops'] / batch,
      bytes_per_sample=total['bytes'] / batch,
      roofline_s=_sig(total['seconds']), roofline_samples_per_s=_sig(batch / seconds),
      memory_bound_share=round(total['memory_bound_seconds'] / seconds, 4),
      mfu_bound=round(total['flops'] / seconds / peak, 4), mfu_peak_dtype=compute_dtype,
      unknown_trip_count_loops=unknown, by_kind=kinds, by_layer=layers, top_kernels=top_kernels,
      matmul_ops=throughput.matmul_ops(hlo_text))


# --- the tool ---------------------------------------------------------------------------------

_COMPUTE_DTYPE = {'bfloat16': 'bf16', 'float32': 'f32'}  # --dtype -> its HLO matmul operands'


def project(model_name: str, kind: str, batch: int, *, target: str, bandwidth: float,
            peaks: dict, dtype: str, conv_algorithm: str, matmul_outputs: Optional[str],
            microbatches: int = 1, bn_group_size: Optional[int] = None, devices: int = 1,
            link_bandwidth: Optional[float] = None, collective_latency_s: float = 10e-6,
            config: Optional[str] = None) -> dict:
  """One row: compile for `target` (on `devices`, `batch` split over them), XLA's memory plan
  against the target's memory, and the roofline, per device and with the collectives. With
  `config` (configs/<name>.py[:arg]) the step is the one training runs for it, batch, dtype,
  conv_algorithm, matmul_outputs, microbatches and bn_group_size (where given) set in it."""
  if batch % devices:
    raise SystemExit(f'batch {batch} does not split over {devices} devices')
  loaded = None
  if config is not None:
    from istanet_jax import viz  # pylint: disable=import-outside-toplevel
    loaded = viz.load_config(config)
    loaded.batch_size = loaded.test_batch_size = batch
    loaded.dtype, loaded.conv_algorithm = dtype, conv_algorithm
    loaded.matmul_outputs, loaded.microbatches = matmul_outputs or 'auto', microbatches
    if bn_group_size is not None:
      loaded.bn_group_size = bn_group_size
  hlo_text, memory, seconds = compile_step(
      model_name, kind, batch, dtype, conv_algorithm, matmul_outputs, microbatches, target,
      bn_group_size=bn_group_size, devices=devices, config=loaded)
  memory['device_bytes'] = memory_bytes(target)
  # JAX lets its GPU allocator take 75% of the device (XLA_PYTHON_CLIENT_MEM_FRACTION's
  # default) whether or not it preallocates: a step needing more fails there.
  memory['jax_usable_bytes'] = int(memory['device_bytes'] * (
      JAX_MEM_FRACTION if TARGETS[target].platform == 'cuda' else 1.0))
  memory['fits'] = memory['peak'] <= memory['jax_usable_bytes']
  roofline = hlo_roofline(hlo_text, bandwidth, peaks, batch // devices,
                          compute_dtype=_COMPUTE_DTYPE[dtype], devices=devices,
                          link_bytes_s=link_bandwidth, collective_latency_s=collective_latency_s)
  row = dict(kind=kind, batch=batch, devices=devices, compile_s=round(seconds, 2),
             memory=memory, roofline=roofline)
  if loaded is not None:
    row['bn_group_size'] = loaded.get('bn_group_size')
  if devices > 1:
    row['samples_per_s_all_devices'] = _sig(batch / roofline['roofline_with_collectives_s'])
  return row


def _parser(targets) -> argparse.ArgumentParser:
  from benchmarks import throughput  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--target', default='h100', choices=targets)
  parser.add_argument('--model', default='ntu26', choices=sorted(throughput.MODEL_ARGS))
  parser.add_argument('--kind', default='train', choices=['train', 'eval', 'init'],
                      help='init: the state\'s initialiser (with --config), for its compile time')
  parser.add_argument('--batch', default='128', help='comma-separated: one compile each')
  parser.add_argument('--dtype', default='bfloat16', choices=sorted(_COMPUTE_DTYPE))
  throughput.add_conv_algorithm_flag(parser)
  parser.add_argument('--microbatches', type=int, default=1)
  parser.add_argument('--bn_group_size', type=int, default=None)
  parser.add_argument('--gemm', default='cublas', choices=sorted(GEMM_FLAGS),
                      help='a GPU\'s matmuls as cuBLAS calls or Triton GEMM fusions with '
                      'default tiles (the module docstring)')
  parser.add_argument('--bandwidth_gbs', type=float, default=None,
                      help='memory bandwidth in GB/s (default: the GPU\'s; needed for cpu)')
  parser.add_argument('--peak_tflops', type=float, default=None,
                      help='dense matmul peak for every dtype (default: the GPU\'s tensor-core '
                      'peaks, float32 as TF32; needed for cpu)')
  parser.add_argument('--config', default=None,
                      help='configs/<name>.py[:arg]: the step training runs for it instead of '
                      '--model\'s benchmark step (needs ml_collections)')
  parser.add_argument('--devices', type=int, default=1,
                      help='devices on one host, the batch split over them (hlo_roofline: '
                      'collectives)')
  parser.add_argument('--link_gbs', type=float, default=None,
                      help='GB/s one device sends to its peers (default: the GPU\'s NVLink; '
                      'needed for cpu with --devices)')
  parser.add_argument('--collective_latency_us', type=float, default=10.0,
                      help='fixed cost of each collective')
  parser.add_argument('--out', default=None, help='JSON path (default: print only)')
  throughput.add_host_flag(parser)
  return parser


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  first = argparse.ArgumentParser(add_help=False)
  first.add_argument('--target', default='h100', choices=sorted(TARGETS))
  first.add_argument('--gemm', default='cublas', choices=sorted(GEMM_FLAGS))
  first.add_argument('--devices', type=int, default=1)
  known = first.parse_known_args(argv)[0]
  target = known.target
  if not {'-h', '--help'} & set(argv):
    # before the imports below bring in JAX
    configure_environment(target, known.gemm, known.devices)
  args = _parser(sorted(TARGETS)).parse_args(argv)
  if args.kind == 'init' and args.config is None:
    raise SystemExit('--kind init needs --config (the initialiser of the state training runs)')
  from benchmarks import throughput  # pylint: disable=import-outside-toplevel
  from istanet_jax import model as model_lib  # pylint: disable=import-outside-toplevel
  throughput.configure_host(args)
  spec = TARGETS[target]
  if args.bandwidth_gbs is None and spec.bandwidth is None:
    raise SystemExit(f'--target {target} needs --bandwidth_gbs (its memory bandwidth)')
  bandwidth = args.bandwidth_gbs * 1e9 if args.bandwidth_gbs is not None else spec.bandwidth
  peaks = peaks_flops_s(target, args.peak_tflops)
  link = args.link_gbs * 1e9 if args.link_gbs is not None else spec.link_bandwidth
  if args.devices > 1 and link is None:
    raise SystemExit(f'--target {target} --devices {args.devices} needs --link_gbs')
  matmul_outputs = model_lib.resolve_matmul_outputs(args.matmul_outputs, spec.platform)
  report = dict(
      projection=True, note=NOTE, target=target, device_kind=spec.device_kind or 'cpu',
      bandwidth_bytes_s=bandwidth, peaks_flops_s=peaks, model=args.model, kind=args.kind,
      dtype=args.dtype, conv_algorithm=args.conv_algorithm, matmul_outputs=matmul_outputs,
      gemm=args.gemm if spec.platform == 'cuda' else None, microbatches=args.microbatches,
      bn_group_size=args.bn_group_size, devices=args.devices, config=args.config, results=[])
  for batch in throughput.parse_batches(args.batch):
    report['results'].append(project(
        args.model, args.kind, batch, target=target, bandwidth=bandwidth, peaks=peaks,
        dtype=args.dtype, conv_algorithm=args.conv_algorithm, matmul_outputs=matmul_outputs,
        microbatches=args.microbatches, bn_group_size=args.bn_group_size,
        devices=args.devices, link_bandwidth=link,
        collective_latency_s=args.collective_latency_us * 1e-6, config=args.config))
  report['environment'] = dict(throughput.environment(), cuda_plugin=plugin_versions())
  report['command'] = ' '.join(['python -m benchmarks.gpu_compile'] + argv)
  throughput.write_report(report, args.out)
  return report


if __name__ == '__main__':
  main()
