r"""Where a train or eval step's time goes, per XLA operation kind and per model layer.

  python -m benchmarks.profile_step --model ntu26 --kind train --batch 16 \
      --out benchmarks/results/cpu_epyc_ntu26_profile_train.json

Runs the step of `benchmarks.throughput` (warm, after compilation) under `jax.profiler`, with
XLA:CPU's per-operation trace events on, and adds up the events' durations by the compiled HLO
instruction each one ran: by category (`gemm`: dot, convolution, and fusions or custom calls
holding one; `elementwise`: other fusions; `copy`: copies and transposes; `concatenate`, `pad`,
`reduce`, ...) and by layer (the `blocks.3/proj` part of the instruction's `op_name`, with the
final path element dropped, so `proj/0` is the conv and `proj/1` its BatchNorm). Also the top
instructions. On the CPU an operation's time is its trace event plus the stretches in which
no operation's event is open that it owns (`attribute_gaps`: XLA:CPU's Eigen matmuls end their
event when the work is handed to the thread pool, whose work fills such a stretch). Times are
summed over threads: where XLA runs operations in parallel the sum exceeds the traced span
(`ops_span_s`).
`wall_s` is the traced call, profiler start and stop included; `idle_s` the stretches in which
no operation's event was open.

On a GPU the events are the kernels on the device's streams (CUPTI), each charged to the HLO
instruction it ran; CUDA graphs are switched off (`--xla_gpu_enable_command_buffer=`) so that
every kernel has an event of its own, which adds launch gaps that a run with graphs partly
hides: they are in `idle_s` only, not in any kernel's time. `--conv_algorithm` and
`--matmul_outputs` pick the model variant, as in `benchmarks.throughput`;
`benchmarks/gpu_suite.sh profile` runs it on a lent GPU. With a `benchmarks.gpu_compile`
projection of the same step (`--projection`; on an H100 or H200 the
committed one is found), `vs_projection` sets each layer's measured time beside its roofline.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_TRACEME_FLAG = '--xla_cpu_enable_xprof_traceme=true'
_NO_COMMAND_BUFFERS = '--xla_gpu_enable_command_buffer='  # a GPU: one event per kernel
_INSTRUCTION = re.compile(
    r'^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][\w\-]*)\((.*)$')
# Long tuples carry these comments; the one in an ENTRY header has an '=' that would make the
# header look like an instruction.
_INDEX_COMMENT = re.compile(r'/\*index=\d+\*/')
_CALLS = re.compile(r'calls=%?([\w.\-]+)')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COMPUTATION = re.compile(r'^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')
_RESULT_DTYPE = re.compile(r'^\(?([a-z]\w*)\[')  # a tuple result: its first element's
_OPERAND = re.compile(r'%([\w.\-]+)')
_TARGET = re.compile(r'custom_call_target="([^"]+)"')
_GEMM_OPS = {'dot', 'convolution'}
_LIBRARY_GEMM = re.compile(r'cublas|cudnn\$conv')
_PASSTHROUGH = {'bitcast', 'get-tuple-element', 'tuple'}

# One instruction of compiled HLO text: operands are instruction names; target is a
# custom call's; shape is the result's type as printed ('f32[8,4]{1,0}', or a tuple's
# '(f32[8]{0}, s8[64]{0})'); attributes is the text after the operand list; parameter is a
# parameter's number (else None).
Instruction = collections.namedtuple(
    'Instruction', 'opcode op_name calls dtype operands target shape attributes parameter',
    defaults=('', '', None))
_UNKNOWN = Instruction('unknown', '', [], '', [], '')


def parse_hlo(text: str) -> dict:
  """{instruction name: Instruction}, {computation: opcodes inside}, {computation: its
  instruction names in order}, {computation: its ROOT's name} and the ENTRY computation's name.

  Instruction names are unique in a module, so one dict serves all computations.
  """
  instructions, computations, current = {}, collections.defaultdict(set), None
  members, roots, entry = collections.defaultdict(list), {}, None
  for line in text.splitlines():
    line = _INDEX_COMMENT.sub('', line)
    header = _COMPUTATION.match(line)
    if header and '=' not in line.split('{')[0]:
      current = header.group(1)
      if line.lstrip().startswith('ENTRY'):
        entry = current
      continue
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    root, name, shape, opcode, rest = m.groups()
    arguments, _, attributes = rest.partition(')')
    op_name, dtype, target = (_OP_NAME.search(attributes), _RESULT_DTYPE.search(shape),
                              _TARGET.search(attributes))
    instructions[name] = Instruction(
        opcode, op_name.group(1) if op_name else '', _CALLS.findall(attributes),
        dtype.group(1) if dtype else '', _OPERAND.findall(arguments),
        target.group(1) if target else '', shape, attributes,
        int(arguments) if opcode == 'parameter' and arguments.strip().isdigit() else None)
    if current:
      computations[current].add(opcode)
      members[current].append(name)
      if root:
        roots[current] = name
  return dict(instructions=instructions, computations=computations, members=dict(members),
              roots=roots, entry=entry)


def category(name: str, hlo: dict) -> str:
  instruction = hlo['instructions'].get(name, _UNKNOWN)
  opcode, calls = instruction.opcode, instruction.calls
  inside = set().union(*(hlo['computations'].get(c, set()) for c in calls)) if calls else set()
  if opcode in _GEMM_OPS or inside & _GEMM_OPS:
    return 'gemm'
  if opcode == 'custom-call':  # on a GPU: cuBLAS matmuls and cuDNN convolutions
    return 'gemm' if _LIBRARY_GEMM.search(instruction.target) else 'custom-call'
  if opcode == 'fusion':
    if inside & {'transpose', 'copy'} and not inside - {'transpose', 'copy', 'bitcast',
                                                       'parameter', 'reshape'}:
      return 'copy'
    if 'concatenate' in inside:
      return 'concatenate'
    if 'pad' in inside:
      return 'pad'
    if 'reduce' in inside:
      return 'reduce'
    return 'elementwise'
  if opcode in ('copy', 'transpose'):
    return 'copy'
  return opcode


def layer(op_name: str) -> str:
  """'jit(f)/.../blocks.3/proj/0/conv...' -> 'blocks.*/proj/0' (blocks pooled), else a stage."""
  parts = [p for p in op_name.split('/') if p]
  for i, part in enumerate(parts):
    if part.startswith('blocks.'):
      inner = [p for p in parts[i + 1:] if not p.startswith(('jvp(', 'transpose(', 'vmap(', 'jit('))]
      return '/'.join(['blocks.*'] + inner[:2]) if inner else 'blocks.*'
    if part in ('embed', 'fc'):
      return part
  if any(p.startswith('transpose(') for p in parts):
    return 'backward (other)'
  return 'other'


def attribute_gaps(events: list[dict], is_async=lambda name: False,
                   consumes=lambda name, other: False) -> list[dict]:
  """Each event's duration plus the idle stretches it owns. A stretch in which no event is open
  goes to the operation still running in the thread pool: the last-started `is_async` event
  (XLA:CPU's Eigen matmuls, whose event ends when their work is handed to the pool) as long
  as no event that `consumes` its result has started since, else to the event that ended
  last. Without the first rule the small independent operations that run while such a matmul
  computes (an optimizer update) were charged its time."""
  events = sorted(events, key=lambda e: e['ts'])
  out = [dict(e) for e in events]
  end, owner, running = None, None, None
  for i, e in enumerate(events):
    if end is not None and e['ts'] > end:
      out[owner if running is None else running]['dur'] += e['ts'] - end
    if running is not None and consumes(e['name'], events[running]['name']):
      running = None
    if is_async(e['name']):
      running = i
    if end is None or e['ts'] + e['dur'] > end:
      end, owner = e['ts'] + e['dur'], i
  return out


def _consumes(hlo: dict):
  """consumes(a, b): instruction a reads b's result, directly or through bitcasts, tuples and
  their elements (which run no kernel)."""
  def operands(name):
    for o in hlo['instructions'].get(name, _UNKNOWN).operands:
      yield o
      if hlo['instructions'].get(o, _UNKNOWN).opcode in _PASSTHROUGH:
        yield from operands(o)
  return lambda a, b: b in set(operands(a))


def summarise(events: list[dict], hlo: dict, top: int = 25, pool_matmuls: bool = True) -> dict:
  """By category, layer and instruction; `pool_matmuls`: matmuls and convolutions may run on in
  a thread pool after their event (XLA:CPU), so idle stretches are charged to the operations
  (`attribute_gaps`); otherwise (a GPU's kernel events are the kernels' run) each operation is
  its events' own time and the stretches (launch gaps) are only in `idle_s`."""
  by_category, by_layer, by_op = (collections.Counter() for _ in range(3))
  span = (max(e['ts'] + e['dur'] for e in events) - min(e['ts'] for e in events)) * 1e-6
  is_async = lambda name: (pool_matmuls and
                           hlo['instructions'].get(name, _UNKNOWN).opcode in _GEMM_OPS)
  attributed = attribute_gaps(events, is_async, _consumes(hlo))
  # attribute_gaps gives every idle stretch to exactly one event: the sum grew by their length.
  idle = (sum(e['dur'] for e in attributed) - sum(e['dur'] for e in events)) * 1e-6
  for e in attributed if pool_matmuls else events:
    name, seconds = e['name'], e['dur'] * 1e-6
    by_category[category(name, hlo)] += seconds
    by_layer[layer(hlo['instructions'].get(name, _UNKNOWN).op_name)] += seconds
    by_op[name] += seconds
  total = sum(by_category.values())
  rows = lambda counter: {k: dict(seconds=round(v, 4), share=round(v / total, 4))
                          for k, v in counter.most_common()}
  ops = {}
  for name, seconds in by_op.most_common(top):
    instruction = hlo['instructions'].get(name, _UNKNOWN)
    opcode, op_name = instruction.opcode, instruction.op_name
    ops[name] = dict(seconds=round(seconds, 4), category=category(name, hlo), opcode=opcode,
                     op_name=op_name)
  return dict(ops_span_s=round(span, 4), op_seconds_total=round(total, 4),
              idle_s=round(idle, 4), by_category=rows(by_category),
              by_layer=rows(by_layer), top_ops=ops)


def read_trace(trace_dir: str) -> tuple[list[dict], str]:
  """The Chrome trace events of the newest jax.profiler trace in trace_dir, and its path."""
  paths = sorted(glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True))
  if not paths:
    raise RuntimeError(f'jax.profiler wrote no trace under {trace_dir}')
  with gzip.open(paths[-1]) as f:
    data = json.load(f)
  return (data['traceEvents'] if isinstance(data, dict) else data), paths[-1]


def trace_events(trace_dir: str) -> list[dict]:
  """The XLA operation events (those naming an `hlo_op`) of the newest trace in trace_dir: on a
  GPU those of the devices' streams (the kernels), not the host's launches."""
  return operation_events(*read_trace(trace_dir))


def operation_events(events: list[dict], path: str = 'the trace') -> list[dict]:
  """`trace_events` from a Chrome trace's event list."""
  names = {(e.get('name'), e.get('pid'), e.get('tid')): e.get('args', {}).get('name', '')
           for e in events if e.get('ph') == 'M'}
  devices = {pid for (kind, pid, _), name in names.items()
             if kind == 'process_name' and '/device:GPU' in name}
  ops = [e for e in events if e.get('ph') == 'X' and 'hlo_op' in e.get('args', {})]
  if devices:
    ops = [e for e in ops if e.get('pid') in devices]
    streams = [e for e in ops
               if names.get(('thread_name', e['pid'], e.get('tid')), '').startswith('Stream')]
    ops = streams or ops
    if not ops:
      raise RuntimeError(f'{path}: no GPU kernel events naming an hlo_op (is CUPTI installed?)')
  return [dict(name=e['args']['hlo_op'], ts=e['ts'], dur=e['dur']) for e in ops]


def profile(model_name: str, kind: str, batch: int, dtype: str = 'float32',
            trace_dir: str | None = None, conv_algorithm: str = 'winograd',
            matmul_outputs: str | None = None) -> dict:
  import jax
  from benchmarks import throughput
  model = throughput.make_model(model_name, dtype, conv_algorithm,
                                matmul_outputs=matmul_outputs)
  variables, opt_state, x, y, train_step, eval_step = throughput.make_steps(model, batch)
  if kind == 'train':
    jitted, args = train_step, (variables, opt_state, x, y)
  else:
    jitted, args = eval_step, (variables, x)
  compiled = jitted.lower(*args).compile()
  hlo = parse_hlo(compiled.as_text())
  if kind == 'train':
    state = list(compiled(*args)[:2])  # the step donates its state: carry it along

    def call():
      state[0], state[1], loss = compiled(state[0], state[1], x, y)
      return loss
  else:
    call = lambda: compiled(variables, x)
  jax.block_until_ready(call())  # warm: allocator, thread pool
  with tempfile.TemporaryDirectory() as tmp:
    trace_dir = trace_dir or tmp
    start = time.perf_counter()
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      out = call()
      jax.block_until_ready(out)
    wall = time.perf_counter() - start
    events = trace_events(trace_dir)
  report = dict(model=model_name, kind=kind, batch=batch, dtype=dtype,
                conv_algorithm=conv_algorithm, matmul_outputs=matmul_outputs or 'auto',
                wall_s=round(wall, 4),
                **summarise(events, hlo, pool_matmuls=jax.default_backend() == 'cpu'),
                environment=throughput.environment())
  return report


def projection_path(model_name: str, dtype: str, conv_algorithm: str, device_kind: str,
                    directory: str = os.path.join(os.path.dirname(__file__), 'results')):
  """The committed `gpu_compile` projection of this train step for this GPU (16-bit products,
  cuBLAS), or None where there is none (other GPUs, an H100 PCIe's bandwidth among them)."""
  from benchmarks import gpu_compile  # pylint: disable=import-outside-toplevel  (it imports us)
  target = next((name for name, spec in gpu_compile.TARGETS.items()
                 if spec.device_kind and spec.device_kind == device_kind), None)
  tag = {'bfloat16': 'bf16'}.get(dtype)
  if target is None or tag is None:
    return None
  path = os.path.join(directory, f'{target}_deviceless_{model_name}_{tag}_train_'
                                 f'{conv_algorithm}_compute.json')
  return path if os.path.exists(path) else None


def compare_with_projection(report: dict, projection: dict, path: str = 'the projection') -> dict:
  """The measured step beside `gpu_compile`'s roofline of the same step and batch: in all
  (`measured_over_roofline`: the kernels' time over the roofline's) and by layer (measured
  seconds, projected seconds, their ratio), the layers in order of measured time."""
  rows = [r for r in projection.get('results', [])
          if r.get('kind') == report['kind'] and r.get('batch') == report['batch']
          and r.get('devices', 1) == 1 and 'roofline' in r]
  if not rows:
    have = sorted({(r.get('kind'), r.get('batch')) for r in projection.get('results', [])})
    raise ValueError(f'{path}: no {report["kind"]} projection at batch {report["batch"]} '
                     f'(it has {have})')
  roofline = rows[0]['roofline']
  projected = {k: v['seconds'] for k, v in roofline['by_layer'].items()}
  measured = {k: v['seconds'] for k, v in report['by_layer'].items()}
  layers = sorted(set(projected) | set(measured), key=lambda k: -measured.get(k, 0))
  # Below a microsecond (less than a kernel launch) nothing was projected to compare with.
  ratio = lambda m, p: round(m / p, 2) if p >= 1e-6 else None
  return dict(
      projection=os.path.basename(path), roofline_s=roofline['roofline_s'],
      measured_ops_s=report['op_seconds_total'], measured_span_s=report['ops_span_s'],
      measured_over_roofline=ratio(report['op_seconds_total'], roofline['roofline_s']),
      by_layer={k: dict(measured_s=round(measured.get(k, 0), 6),
                        projected_s=projected.get(k, 0),
                        ratio=ratio(measured.get(k, 0), projected.get(k, 0)))
                for k in layers})


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='small', choices=sorted(__import__(
      'benchmarks.throughput', fromlist=['MODEL_ARGS']).MODEL_ARGS))
  parser.add_argument('--kind', default='train', choices=['train', 'eval'])
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--out', default=None)
  parser.add_argument('--trace_dir', default=None,
                      help='keep the profiler trace there (TensorBoard / Perfetto)')
  parser.add_argument('--projection', default='auto',
                      help="a benchmarks.gpu_compile JSON of the same step to set the measured "
                      "layers beside; 'auto': the committed one for this GPU and variant, if "
                      "any; '' for none")
  from benchmarks import throughput
  throughput.add_host_flag(parser)
  throughput.add_conv_algorithm_flag(parser)
  args = parser.parse_args(argv)
  flags = os.environ.get('XLA_FLAGS', '')
  for flag in (_TRACEME_FLAG, _NO_COMMAND_BUFFERS):
    if flag.split('=')[0] not in flags:
      flags = f'{flags} {flag}'.strip()
  os.environ['XLA_FLAGS'] = flags
  throughput.configure_host(args)
  report = profile(args.model, args.kind, args.batch, args.dtype, args.trace_dir,
                   args.conv_algorithm, args.matmul_outputs)
  path, auto = args.projection, args.projection == 'auto'
  if auto:
    import jax  # pylint: disable=import-outside-toplevel
    path = (projection_path(args.model, args.dtype, args.conv_algorithm,
                            jax.devices()[0].device_kind)
            if args.kind == 'train' and args.matmul_outputs in ('auto', 'compute') else None)
  if path:
    with open(path) as f:
      projection = json.load(f)
    try:
      report['vs_projection'] = compare_with_projection(report, projection, path)
    except ValueError as e:
      if not auto:
        raise
      report['vs_projection'] = {'error': str(e)}  # the measurement is kept all the same
  report['command'] = ' '.join(['python -m benchmarks.profile_step'] + (argv or sys.argv[1:]))
  throughput.write_report(report, args.out)


if __name__ == '__main__':
  main()
