r"""Train-step and eval throughput of the Flax ISTA-Net on whatever devices JAX sees.

  python -m benchmarks.throughput --model ntu26 --batch 16 --eval_batches 16,1 \
      --dtype float32 --steps 3 --warmup 1 --out /tmp/ntu26_jax.json

The train step is what the reference's training loop does per batch, without data loading or
augmentation: forward in train mode (BatchNorm on batch statistics, running statistics
updated), label-smoothing loss, backward, SGD with Nesterov momentum and weight decay. The
eval step is the forward in eval mode. Inputs are random (N, T, V, M, C) arrays, made once.

Reported per measurement: median step time over `--steps` calls after `--warmup` calls,
samples/s, the time to trace and compile (`compile_s`, ahead of time), the first call after it
(`first_call_s`) and their sum (`first_step_incl_compile_s`: a fresh process's first step),
the matmuls' and convolutions' FLOPs per sample (`flops_per_sample`, read from the compiled
program as `gpu_compile` counts them: MFU's numerator) beside XLA's count of all FLOPs
(`xla_flops_per_sample`, `cost_analysis()`: elementwise work, reductions and the optimiser
too; files before 2026-12-07 hold that count as `flops_per_sample`), MFU against
`--peak_tflops` when given (a number, or `auto` for a known GPU's dense peak in the compute
dtype: bf16's, or TF32's for float32), the algorithm the 1-D convolutions ran
(`conv_algorithm_run`: bf16 takes `matmul` for `winograd`), and
peak memory (the device's `peak_bytes_in_use`, or the process's peak RSS on CPU where devices
report none). Runs on the default device; no multi-device sharding.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

# The model_args of configs/<name>.py (the reference's YAMLs), copied for machines without
# ml_collections; where it is installed the configs themselves are used.
_BIG = [[64, 64, 16], [64, 64, 16], [64, 128, 32], [128, 128, 32], [128, 256, 64],
        [256, 256, 64], [256, 256, 64], [256, 256, 64]]
MODEL_ARGS = {
    'ntu26': dict(window_size=[20, 1, 2], num_frames=120, num_joints=25, num_persons=2,
                  num_channels=3, num_classes=26, num_heads=3, kernel_size=[3, 5], use_pes=True,
                  config=_BIG, att_drop=0.0, dropout=0.0),
    'sbu': dict(window_size=[20, 5, 2], num_frames=40, num_joints=15, num_persons=2,
                num_channels=3, num_classes=8, num_heads=3, kernel_size=[5, 5], use_pes=True,
                config=_BIG[:6], att_drop=0.1, dropout=0.1),
    'h2o': dict(window_size=[20, 1, 3], num_frames=120, num_joints=21, num_persons=3,
                num_channels=3, num_classes=36, num_heads=3, kernel_size=[3, 5], use_pes=True,
                config=_BIG, att_drop=0.0, dropout=0.0),
    'assembly101': dict(window_size=[20, 1, 2], num_frames=120, num_joints=21, num_persons=2,
                        num_channels=3, num_classes=1380, num_heads=3, kernel_size=[5, 5],
                        use_pes=True, config=_BIG[:2] + [[64, 64, 16]] + _BIG[2:],
                        att_drop=0.0, dropout=0.0),
    # The small model of the speed issue (an earlier configs/demo.py model).
    'small': dict(window_size=[8, 5, 2], num_frames=32, num_joints=25, num_persons=2,
                 num_channels=3, num_classes=26, num_heads=2, kernel_size=[3, 3], use_pes=True,
                 config=[[32, 32, 8], [32, 64, 16]], att_drop=0.0, dropout=0.0),
}


def _model_args(name: str) -> dict:
  """configs/<name>.py's model where ml_collections is installed, else the copy above."""
  if name not in MODEL_ARGS:
    raise ValueError(f'unknown model {name!r}: one of {sorted(MODEL_ARGS)}')
  if name == 'small':
    return MODEL_ARGS[name]
  try:
    import importlib
    config = importlib.import_module(f'configs.{name}').get_config().model.to_dict()
  except ImportError:
    return MODEL_ARGS[name]
  return json.loads(json.dumps(config))  # tuples -> lists, as the reference's YAML gives


COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}  # --dtype -> the model's dtype


def add_conv_algorithm_flag(parser) -> None:
  """--conv_algorithm and --matmul_outputs: the model's options for how it multiplies."""
  from istanet_jax import model as model_lib
  parser.add_argument('--conv_algorithm', default='winograd', choices=model_lib.CONV_ALGORITHMS,
                      help='how the 1-D convolutions run (istanet_jax/model.py CONV_ALGORITHMS)')
  parser.add_argument('--matmul_outputs', default='auto', choices=model_lib.MATMUL_OUTPUTS,
                      help='bf16 products in float32 or the compute dtype (auto: by platform; '
                      'istanet_jax/model.py resolve_matmul_outputs)')


def make_model(name: str, dtype: str = 'float32', conv_algorithm: str = 'winograd',
               bn_group_size: Optional[int] = None, matmul_outputs: Optional[str] = None):
  """The named model; `matmul_outputs` None keeps the model's default ('auto')."""
  from istanet_jax import torch_compat
  extra = {} if matmul_outputs is None else dict(matmul_outputs=matmul_outputs)
  return torch_compat.model_from_reference_args(_model_args(name), dtype=COMPUTE_DTYPES[dtype],
                                                conv_algorithm=conv_algorithm,
                                                bn_group_size=bn_group_size, **extra)


def make_steps(model, batch: int, *, lr: float = 0.1, weight_decay: float = 4e-4, seed: int = 0,
               microbatches: int = 1):
  """(variables, opt_state, x, y, train_step, eval_step) with the steps jitted, not yet compiled.

  train_step(variables, opt_state, x, y) -> (variables, opt_state, loss); eval_step(variables, x)
  -> logits. x is channels-last (N, T, V, M, C) as the input pipeline feeds it. `microbatches`
  accumulates the gradient as the project's train step does (istanet_jax/steps.py).
  """
  from istanet_jax import losses, optim, steps
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=model.input_shape(batch)), jnp.float32)
  y = jnp.asarray(rng.integers(0, model.num_classes, batch), jnp.int32)
  variables = jax.jit(functools.partial(steps.init_variables, model))(jax.random.key(seed))
  tx = optim.make_optimizer('SGD', lr, weight_decay=weight_decay, nesterov=True)
  opt_state = tx.init(variables['params'])

  def train_step(variables, opt_state, x, y):
    def loss_fn(params, part, key):
      logits, updates = model.apply({**variables, 'params': params}, part[0], train=True,
                                    rngs={'dropout': key}, mutable=['batch_stats'])
      loss = losses.label_smoothing_cross_entropy(logits, part[1]).sum() / batch
      return loss, ((), updates['batch_stats'])
    (loss, (_, batch_stats)), grads = steps.accumulate_gradients(
        jax.value_and_grad(loss_fn, has_aux=True), variables['params'], (x, y),
        jax.random.key(seed), microbatches=microbatches, bn_group_size=model.bn_group_size,
        batch_stats=variables['batch_stats'])
    deltas, opt_state = tx.update(grads, opt_state, variables['params'])
    params = jax.tree_util.tree_map(jnp.add, variables['params'], deltas)
    return {**variables, 'batch_stats': batch_stats, 'params': params}, opt_state, loss

  def eval_step(variables, x):
    return model.apply(variables, x, train=False)

  return (variables, opt_state, x, y, jax.jit(train_step, donate_argnums=(0, 1)),
          jax.jit(eval_step))


_MATMUL_TARGETS = re.compile(r'gemm|matmul|conv|cublas|cudnn', re.I)


def matmul_ops(hlo_text: str) -> dict[str, int]:
  """How many matmuls and convolutions of each kind a compiled program has, by operand and
  result dtypes: 'dot bf16,bf16->f32', 'custom-call __cudnn$convForward bf16,bf16->bf16', ...
  Tells whether a bf16 step really multiplies in bf16 (on a GPU: the cuBLAS / cuDNN calls)."""
  from benchmarks import profile_step  # pylint: disable=import-outside-toplevel
  instructions = profile_step.parse_hlo(hlo_text)['instructions']
  counts: dict[str, int] = {}
  for ins in instructions.values():
    if ins.opcode in ('dot', 'convolution'):
      op = ins.opcode
    elif ins.opcode == 'custom-call' and _MATMUL_TARGETS.search(ins.target):
      op = f'custom-call {ins.target}'
    else:
      continue
    operands = [instructions[o].dtype if o in instructions else '?' for o in ins.operands]
    key = f'{op} {",".join(operands)}->{ins.dtype}'
    counts[key] = counts.get(key, 0) + 1
  return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _compile(jitted, *args, loop_trips: int = 1) -> tuple[Optional[dict], float, dict]:
  """({'model': FLOPs of one call's matmuls and convolutions, 'xla': XLA's count of all its
  FLOPs} or None, seconds to lower and compile, `matmul_ops`). MFU takes the model's: XLA's
  also counts elementwise work, reductions and the optimiser, which `gpu_compile`'s bound does
  not. `loop_trips`: the trip count of the call's loop (gradient accumulation), by which XLA's
  count, made of the loop's body once, is scaled; the model's counts each trip where the
  program records it."""
  from benchmarks import gpu_compile, profile_step  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - start
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  text = compiled.as_text()
  found, unknown = gpu_compile.kernels(profile_step.parse_hlo(text), lambda kernel: 0.0)
  model = sum(k['flops'] * k['times'] for k in found) * (loop_trips if unknown else 1)
  xla = float(cost['flops']) * loop_trips if cost and 'flops' in cost else None
  flops = None if xla is None and not model else dict(model=float(model), xla=xla)
  return flops, seconds, matmul_ops(text)


def _peak_memory() -> dict:
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return {'device_peak_bytes': int(stats['peak_bytes_in_use'])}
  # ru_maxrss is in KiB on Linux.
  return {'process_peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _time(fn, steps: int, warmup: int) -> tuple[float, list[float], dict]:
  """(first call s, timed step s, {minor page faults per timed step, the first call's kernel
  CPU seconds}).

  The faults are the process's, so on CPU mostly the steps' fresh temporaries (see
  istanet_jax/host.py). The first call's kernel time is mostly its first touch of the memory
  the step needs (on a virtual machine that can cost seconds per GB).
  """
  usage = resource.getrusage(resource.RUSAGE_SELF)
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  first_kernel_s = resource.getrusage(resource.RUSAGE_SELF).ru_stime - usage.ru_stime
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return first, times, dict(
      minor_page_faults_per_step=(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
      / steps, first_call_kernel_s=first_kernel_s)


def _summary(kind: str, batch: int, first: float, times: list[float], flops: Optional[dict],
             compile_s: float, peak_tflops: Optional[float], host: Optional[dict] = None
             ) -> dict:
  median = statistics.median(times)
  out = dict(kind=kind, batch=batch, compile_s=compile_s, first_call_s=first,
             first_step_incl_compile_s=compile_s + first, median_step_s=median,
             min_step_s=min(times), samples_per_s=batch / median, steps=len(times))
  out.update(host or {})
  if flops is not None:
    # The matmuls' and convolutions' FLOPs (MFU's numerator, as `gpu_compile`'s bound counts
    # them), and XLA's count of everything beside.
    out['flops_per_sample'] = flops['model'] / batch
    if flops['xla'] is not None:
      out['xla_flops_per_sample'] = flops['xla'] / batch
    if peak_tflops:
      out['mfu'] = flops['model'] / median / (peak_tflops * 1e12)
  return out


def train_caller(model, batch: int, microbatches: int = 1):
  """(call, flops, compile_s, matmul_ops): call() runs one train step (state kept inside) and
  waits for it."""
  variables, opt_state, x, y, train_step, _ = make_steps(model, batch, microbatches=microbatches)
  # The optimiser's update outside the microbatch loop is ~1e-5 of the step's XLA FLOPs.
  flops, compile_s, ops = _compile(train_step, variables, opt_state, x, y,
                                   loop_trips=microbatches)
  state = [variables, opt_state]

  def call():
    state[0], state[1], loss = train_step(state[0], state[1], x, y)
    return jax.block_until_ready(loss)
  return call, flops, compile_s, ops


def eval_caller(model, batch: int):
  """(call, flops, compile_s, matmul_ops) for the eval forward."""
  variables, _, x, _, _, eval_step = make_steps(model, batch)
  flops, compile_s, ops = _compile(eval_step, variables, x)
  return lambda: jax.block_until_ready(eval_step(variables, x)), flops, compile_s, ops


def bench_train(model, batch: int, *, steps: int = 10, warmup: int = 2,
                peak_tflops: Optional[float] = None, microbatches: int = 1) -> dict:
  call, flops, compile_s, ops = train_caller(model, batch, microbatches)
  first, times, host_stats = _time(call, steps, warmup)
  return dict(_summary('train', batch, first, times, flops, compile_s, peak_tflops, host_stats),
              microbatches=microbatches, matmul_ops=ops)


def bench_eval(model, batch: int, *, steps: int = 10, warmup: int = 2,
               peak_tflops: Optional[float] = None) -> dict:
  call, flops, compile_s, ops = eval_caller(model, batch)
  first, times, host_stats = _time(call, steps, warmup)
  return dict(_summary('eval', batch, first, times, flops, compile_s, peak_tflops, host_stats),
              matmul_ops=ops)


def load_average() -> list[float]:
  """The 1, 5 and 15 minute load averages: how busy the (shared) machine was."""
  return [round(x, 2) for x in os.getloadavg()]


def _git_state() -> dict:
  """The commit timed, and which files of the timed package differ from it."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  git = lambda *a: subprocess.run(['git', *a], cwd=repo, capture_output=True, text=True,
                                  timeout=30).stdout
  try:
    return dict(commit=git('rev-parse', 'HEAD').strip(),
                modified=[l[3:] for l in git('status', '--porcelain', '--',
                                             'istanet_jax').splitlines()])
  except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
    return {}


def _cpu_model() -> str:
  """/proc/cpuinfo's model name and its matrix/vector units (platform.processor() is empty on
  Linux): results from different machines must say which."""
  try:
    with open('/proc/cpuinfo') as f:
      info = f.read()
  except OSError:
    return ''
  name = next((l.split(':', 1)[1].strip() for l in info.splitlines()
               if l.startswith('model name')), '')
  flags = set(next((l.split(':', 1)[1].split() for l in info.splitlines()
                    if l.startswith('flags')), []))
  units = [f for f in ('avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16') if f in flags]
  return f"{name} ({' '.join(units)})" if units else name


_CACHE_HITS = [0]


def _count_cache_hit(event: str, **_) -> None:
  if event == '/jax/compilation_cache/cache_hits':
    _CACHE_HITS[0] += 1


jax.monitoring.register_event_listener(_count_cache_hit)


def environment() -> dict:
  """Versions, device, host and command; with the persistent compilation cache on, how many of
  this process's compilations were loads from it (their `compile_s` is no compilation)."""
  import flax
  devices = jax.devices()
  return dict(
      compilation_cache_dir=jax.config.jax_compilation_cache_dir or None,
      compilation_cache_hits=_CACHE_HITS[0],
      jax=jax.__version__, jaxlib=jax.lib.__version__ if hasattr(jax.lib, '__version__') else
      __import__('jaxlib').__version__, flax=flax.__version__, backend=jax.default_backend(),
      device_kind=devices[0].device_kind, device_count=len(devices),
      cpu_count=os.cpu_count(), affinity=len(os.sched_getaffinity(0)),
      platform=platform.platform(), processor=platform.processor() or _cpu_model(),
      xla_flags=os.environ.get('XLA_FLAGS', ''), command=' '.join(sys.argv), git=_git_state(),
      host_defaults=_HOST_DEFAULTS[0])


_HOST_DEFAULTS = [None]


def add_host_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--no_host_defaults', action='store_true',
                      help='skip istanet_jax.host.configure() (XNNPACK, glibc allocator, '
                      'GC threshold)')


def configure_host(args) -> None:
  """What the project's entry points do first; in this process it applies to torch too."""
  from istanet_jax import host
  _HOST_DEFAULTS[0] = host.nothing_applied() if args.no_host_defaults else host.configure()


def unless_out_of_memory(kind: str, batch: int, measure: Callable[[], dict]) -> dict:
  """measure(), or where the device runs out of memory a row saying so: a sweep's largest
  batch must not end the run, whose eval rows come after it."""
  try:
    return measure()
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    return dict(kind=kind, batch=batch, error=str(e).strip().splitlines()[0][:500])


def run(model_name: str, *, train_batches: list[int], eval_batches: list[int], dtype: str,
        steps: int, warmup: int, peak_tflops: Optional[float],
        conv_algorithm: str = 'winograd', bn_group_size: Optional[int] = None,
        microbatches: int = 1, on_row: Optional[Callable[[dict], None]] = None,
        matmul_outputs: str = 'auto') -> dict:
  """Train rows, then eval rows; `on_row(report so far)` after each, so that a run stopped
  by a time limit (a device call) keeps the rows it finished."""
  from istanet_jax import model as model_lib
  model = make_model(model_name, dtype, conv_algorithm, bn_group_size, matmul_outputs)
  results = []
  report = lambda: dict(framework='jax', model=model_name, dtype=dtype,
                        conv_algorithm=conv_algorithm,
                        conv_algorithm_run=model_lib.conv_algorithm_run(conv_algorithm, dtype),
                        bn_group_size=bn_group_size,
                        matmul_outputs=model_lib.resolve_matmul_outputs(matmul_outputs),
                        peak_tflops=peak_tflops, results=list(results), memory=_peak_memory(),
                        environment=environment())
  rows = [('train', b, lambda b=b: bench_train(model, b, steps=steps, warmup=warmup,
                                               peak_tflops=peak_tflops,
                                               microbatches=microbatches))
          for b in train_batches]
  rows += [('eval', b, lambda b=b: bench_eval(model, b, steps=steps, warmup=warmup,
                                             peak_tflops=peak_tflops))
           for b in eval_batches]
  for kind, b, measure in rows:
    results.append(unless_out_of_memory(kind, b, measure))
    if on_row is not None:
      on_row(report())
  return report()


# Dense (no sparsity) tensor-core peaks in TFLOP/s by compute dtype, from NVIDIA's data
# sheets, for `--peak_tflops auto`: the first device-kind substring that matches wins. float32
# is TF32's: XLA's default precision runs float32 matmuls and convolutions on the tensor cores
# in TF32 (as gpu_compile charges them).
PEAK_TFLOPS = (
    ('H100 PCIe', {'bfloat16': 756.0, 'float32': 378.0}),
    ('H100 NVL', {'bfloat16': 835.5, 'float32': 417.5}),
    ('H100', {'bfloat16': 989.4, 'float32': 494.7}),  # SXM (device kind 'NVIDIA H100 80GB HBM3')
    ('H200', {'bfloat16': 989.4, 'float32': 494.7}),
    ('A100', {'bfloat16': 312.0, 'float32': 156.0}),
)


def resolve_peak(value: Optional[str], dtype: str, device_kind: Optional[str] = None
                 ) -> Optional[float]:
  """`--peak_tflops`: None, a number, or 'auto' (the table above, for JAX's first device)."""
  if value is None or value == '':
    return None
  if value != 'auto':
    return float(value)
  kind = device_kind if device_kind is not None else jax.devices()[0].device_kind
  for name, peaks in PEAK_TFLOPS:
    if name in kind:
      return peaks[dtype]
  raise SystemExit(f'--peak_tflops auto: no known peak for device {kind!r}; give a number')


def add_peak_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--peak_tflops', default=None,
                      help='the device\'s peak TFLOP/s for MFU: a number, or auto (known GPUs: '
                      + ', '.join(name for name, _ in PEAK_TFLOPS) + ')')


def parse_batches(text: str) -> list[int]:
  """'16,64' -> [16, 64]; '' or '0' -> []."""
  try:
    return [b for b in (int(t) for t in text.split(',') if t.strip()) if b > 0]
  except ValueError:
    raise SystemExit(f'batch sizes must be comma-separated integers, got {text!r}') from None


def write_report(report: dict, out: Optional[str]) -> None:
  """Prints the report as JSON and, with `out`, writes it there."""
  print(json.dumps(report, indent=2))
  if out:
    save_report(report, out)


def save_report(report: dict, out: str) -> None:
  """Writes the report to `out` whole or not at all (a reader never sees half a file)."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out + '.tmp', 'w') as f:
    f.write(json.dumps(report, indent=2) + '\n')
  os.replace(out + '.tmp', out)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='small', choices=sorted(MODEL_ARGS))
  parser.add_argument('--batch', default='16',
                      help='train batch, or comma-separated batches (a sweep); 0 skips training')
  parser.add_argument('--eval_batches', default='16,1', help='comma-separated; empty skips eval')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  add_conv_algorithm_flag(parser)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--bn_group_size', type=int, default=None,
                      help='ghost BatchNorm groups, as the configs set (NTU: batch_size / 4); '
                      'default: the whole batch, as the reference computes on one device')
  parser.add_argument('--microbatches', type=int, default=1,
                      help='gradient accumulation (config.microbatches); needs --bn_group_size')
  add_peak_flag(parser)
  parser.add_argument('--out', default=None, help='JSON path (default: print only)')
  add_host_flag(parser)
  args = parser.parse_args(argv)
  configure_host(args)
  load_before = load_average()
  report = run(args.model, train_batches=parse_batches(args.batch),
               eval_batches=parse_batches(args.eval_batches), dtype=args.dtype, steps=args.steps,
               warmup=args.warmup, peak_tflops=resolve_peak(args.peak_tflops, args.dtype),
               conv_algorithm=args.conv_algorithm, bn_group_size=args.bn_group_size,
               microbatches=args.microbatches, matmul_outputs=args.matmul_outputs,
               on_row=(lambda partial: save_report(partial, args.out)) if args.out else None)
  report['load_average'] = dict(before=load_before, after=load_average())
  write_report(report, args.out)


if __name__ == '__main__':
  main()
