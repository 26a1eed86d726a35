r"""A config's first train step as `istanet_jax.train` runs it, timed from a fresh process.

  python -m benchmarks.first_step --config configs/ntu26.py:xsub --batch 16 --microbatches 4 \
      --out benchmarks/results/cpu_epyc_ntu26_first_step_entry_microbatches4_run1.json

Builds the mesh, model, optimiser, state initialiser and steps with `train.jit_steps` (what
`train.train_and_evaluate` runs: on-device augmentation, loss masks, the non-finite guard, the
learning-rate schedule, gradient accumulation where `--microbatches` / the config asks), feeds
one synthetic batch of the input pipeline's shapes (raw (B, max_frames, V, M, C) skeletons,
labels, indices, mask) and times, as training does, the state's initialisation (compile and
run) on this thread while `train.compile_first_step` traces, lowers and compiles the train step
on another (`step_ready_s`: until both are done; the two threads' own times beside it), then
the step's first call (with the kernel time it spends, mostly the first touch of its memory)
and a second call. `first_step_incl_compile_s` is `step_ready_s` plus the first call: the
state's initialisation runs inside it. `--sequential` initialises the state first and then
compiles the step (`first_step_incl_compile_s`: the step's trace, lowering, compilation and
first call, the initialisation before it). `from_process_start_s` runs from the interpreter's
start (imports and initialisation included) to the end of the first step. Each phase's
`_cpu_s` and `_kernel_s` are the whole process's CPU seconds over the phase (XLA's threads
included), so without `--sequential` the state initialisation's include the compiling thread's.
Start each measurement in a fresh process: a warm process has compiled and touched it all.
`--compile_trace DIR` records the initialisation and the step's compilation with jax.profiler
and adds `compile_events` to the report: XLA's own trace events (HLO pass pipelines and passes,
the verifier, codegen, LLVM) summed by name, the longest first (nested events each count their
own span); the profiler slows the compilation, so time the phases without it.
Needs ml_collections (the configs) but no TensorFlow.
"""

from __future__ import annotations

import time

_PROCESS_START = time.perf_counter()

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import os
import resource
import sys

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cpu_seconds() -> tuple[float, float]:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime, usage.ru_stime


def synthetic_batch(config, batch: int, seed: int = 0) -> dict:
  """One host batch of the shapes and dtypes the input pipeline feeds `config`'s train step."""
  import numpy as np
  from istanet_jax import train
  m = config.model
  rng = np.random.default_rng(seed)
  return train.as_batch_dtypes(dict(
      skeleton=rng.normal(size=(batch, config.max_frames, m.num_joints, m.num_persons,
                                m.num_channels)),
      label=rng.integers(0, m.num_classes, batch), index=np.arange(batch),
      mask=np.ones(batch, bool)))


def compile_events(trace_dir: str, top: int = 40) -> list[dict]:
  """The `top` event names of the newest jax.profiler trace in trace_dir by summed duration,
  [{name, seconds, count, threads}], Python frames (named '$file:line ...') left out."""
  import collections
  from benchmarks import profile_step
  seconds, count = collections.Counter(), collections.Counter()
  threads = collections.defaultdict(set)
  for e in profile_step.read_trace(trace_dir)[0]:
    if e.get('ph') == 'X' and not e['name'].startswith('$'):
      seconds[e['name']] += e['dur'] / 1e6
      count[e['name']] += 1
      threads[e['name']].add((e.get('pid'), e.get('tid')))
  return [dict(name=n, seconds=round(t, 3), count=count[n], threads=len(threads[n]))
          for n, t in seconds.most_common(top)]


def measure(config, *, steps_per_epoch: int = 100, sequential: bool = False,
            compile_trace: str | None = None) -> dict:
  """The phases' seconds (see the module docstring) for `config` on every local device."""
  import contextlib
  import jax
  from istanet_jax import steps, train
  timings = {'sequential': sequential}
  compiled_before = train.compilations(train.TRAIN_STEP)

  def timed(name, fn):
    start, (user, system) = time.perf_counter(), _cpu_seconds()
    out = fn()
    timings[name + '_s'] = round(time.perf_counter() - start, 3)
    user2, system2 = _cpu_seconds()
    timings[name + '_cpu_s'] = round(user2 - user + system2 - system, 3)
    timings[name + '_kernel_s'] = round(system2 - system, 3)
    return out

  mesh = train.make_mesh()
  model = steps.model_from_config(config)
  tx = steps.make_optimizer(config, steps_per_epoch)
  init_state, train_step, _ = train.jit_steps(config, model, tx, mesh)
  key = jax.random.key(config.seed)
  batch = train.to_global(synthetic_batch(config, config.batch_size),
                          jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data')))

  def ready():
    compiling = None if sequential else train.compile_first_step(
        train_step, jax.eval_shape(init_state, key), batch, key)
    state = timed('init_state', lambda: jax.block_until_ready(init_state(key)))
    compiling = compiling or train.compile_first_step(train_step, state, batch, key)
    return state, compiling.result()

  tracing = contextlib.nullcontext()
  if compile_trace:
    # XLA's events only: Python's would be most of the trace, and writing them out took
    # longer than the compilation.
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level, options.enable_hlo_proto = 0, False
    tracing = jax.profiler.trace(compile_trace, profiler_options=options)
  with tracing:
    state, phases = timed('step_ready', ready)
  if compile_trace:
    timings['compile_events'] = compile_events(compile_trace)
  timings.update({k: round(v, 3) for k, v in phases.items()})
  state, metrics = timed('first_call', lambda: jax.block_until_ready(train_step(state, batch, key)))
  first_step_end = time.perf_counter()
  timed('second_call', lambda: jax.block_until_ready(train_step(state, batch, key)))
  if sequential:
    timings['first_step_incl_compile_s'] = round(
        timings['trace_and_lower_s'] + timings['compile_s'] + timings['first_call_s'], 3)
  else:
    timings['first_step_incl_compile_s'] = round(
        timings['step_ready_s'] + timings['first_call_s'], 3)
  timings['train_step_compilations'] = train.compilations(train.TRAIN_STEP) - compiled_before
  timings['from_process_start_s'] = round(first_step_end - _PROCESS_START, 3)
  timings['loss'] = float(metrics['loss_sum'] / metrics['count'])
  timings['peak_rss_gb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
  return timings


def main(argv=None):
  from benchmarks import throughput
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', required=True, help='configs/<name>.py[:arg]')
  parser.add_argument('--batch', type=int, default=None, help='batch_size (default: the config)')
  parser.add_argument('--microbatches', type=int, default=None,
                      help='gradient accumulation (default: the config)')
  parser.add_argument('--sequential', action='store_true',
                      help='initialise the state, then compile the step (training overlaps them)')
  parser.add_argument('--compile_trace', default=None, metavar='DIR',
                      help='trace the initialisation and compilation with jax.profiler into DIR '
                           'and report XLA\'s compile events by name (slows the compilation)')
  parser.add_argument('--out', default=None)
  throughput.add_host_flag(parser)
  args = parser.parse_args(argv)
  throughput.configure_host(args)
  from istanet_jax import viz  # pylint: disable=g-import-not-at-top
  config = viz.load_config(args.config)
  if args.batch is not None:
    config.batch_size = args.batch
  if args.microbatches is not None:
    config.microbatches = args.microbatches
  report = dict(config=args.config, batch_size=config.batch_size,
                microbatches=config.get('microbatches', 1),
                bn_group_size=config.get('bn_group_size'),
                **measure(config, sequential=args.sequential,
                          compile_trace=args.compile_trace),
                environment=throughput.environment())
  throughput.write_report(report, args.out)


if __name__ == '__main__':
  main()
