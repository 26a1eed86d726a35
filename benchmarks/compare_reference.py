r"""The official PyTorch ISTA-Net and the Flax one timed side by side on the same shapes and threads.

  python -m benchmarks.compare_reference --reference_dir /tmp/ista_ref --model ntu26 \
      --batch 16 --eval_batches 16,1 --out benchmarks/results/cpu_ntu26.json

The reference side is `model/ISTANet.py` imported from a checkout of
github.com/Necolizer/ISTA-Net, with the reference's per-batch training work: forward in train
mode, `LabelSmoothingCrossEntropy`, backward, `torch.optim.SGD(momentum=0.9, nesterov=True,
weight_decay=...)` step; eval is the forward under `torch.no_grad()` in eval mode. Torch and
XLA use `--threads` threads each (default: the cores this process may run on). The two never
run at once, but their timed steps alternate, so that both see the same background load on a
shared machine. `--dtype bfloat16` runs ours in bf16 (float32 parameters and statistics)
against the reference in float32, as it trains; `--reference_autocast` runs the reference
under `torch.autocast(dtype=torch.bfloat16)` (the quick bf16 a PyTorch user gets). Ratios are
ours over the reference's samples/s (>1: we are faster) and our latency over theirs (<1: we
are faster). The reference runs in a child process (`--reference_process same`: in this one,
as results before 2026-12 were measured), so the peak RSS reported is ours alone.

On a GPU (`--reference_device cuda`, the default where torch sees one) the reference runs with
its `main.py`'s cuDNN settings (deterministic, no autotuning) unless `--reference_cudnn
benchmark` (autotuned, what a PyTorch user tuning for speed sets), and `--reference_channels_last`
stores its Conv3d weights and input as `torch.channels_last_3d`. `--peak_tflops` (a number, or
`auto` for the bf16 dense peak of a known GPU) adds both sides' model FLOPs utilisation, counted
with XLA's FLOPs of our step (the same model).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import time
from typing import Optional

from benchmarks import throughput


def _reference_model(reference_dir: str, model_args: dict):
  import torch  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.abspath(reference_dir))
  try:
    from model.ISTANet import Model  # pylint: disable=import-outside-toplevel
    from utils.loss import LabelSmoothingCrossEntropy  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  torch.manual_seed(0)
  return Model(**model_args), LabelSmoothingCrossEntropy(smoothing=0.1, temperature=1.0)


def _summary(kind, batch, first, times):
  median = statistics.median(times)
  return dict(kind=kind, batch=batch, first_call_s=first, median_step_s=median,
              min_step_s=min(times), samples_per_s=batch / median, steps=len(times))


def default_reference_device() -> str:
  import torch  # pylint: disable=import-outside-toplevel
  return 'cuda' if torch.cuda.is_available() else 'cpu'


def reference_callers(reference_dir: str, model_name: str, *, train_batch: Optional[int],
                      eval_batches: list[int], threads: int, lr: float = 0.1,
                      weight_decay: float = 4e-4, autocast: bool = False, device: str = 'cpu',
                      channels_last: bool = False, cudnn: str = 'main_py') -> dict:
  """{(kind, batch): call} for the reference on `device`; each call runs one step and waits
  for it (bf16 autocast with `autocast`; channels_last_3d weights and inputs with
  `channels_last`; cuDNN as the reference's main.py sets it, or autotuned with 'benchmark')."""
  import contextlib  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  if cudnn not in ('main_py', 'benchmark'):
    raise ValueError(f"cudnn must be 'main_py' or 'benchmark', got {cudnn!r}")
  # main.py: cudnn.deterministic = True, cudnn.benchmark = False.
  torch.backends.cudnn.deterministic = cudnn == 'main_py'
  torch.backends.cudnn.benchmark = cudnn == 'benchmark'
  amp = ((lambda: torch.autocast(device.split(':')[0], dtype=torch.bfloat16)) if autocast
         else contextlib.nullcontext)
  torch.set_num_threads(threads)
  args = dict(throughput._model_args(model_name))  # pylint: disable=protected-access
  model, loss_fn = _reference_model(reference_dir, args)
  layout = torch.channels_last_3d if channels_last else torch.contiguous_format
  model = model.to(device)
  # Module.to(memory_format=channels_last_3d) fails on the model's 4-D parameters (alpha, M):
  # the Conv3d weights are what matters.
  for module in model.modules():
    if isinstance(module, torch.nn.Conv3d):
      module.weight.data = module.weight.data.contiguous(memory_format=layout)
  rng = np.random.default_rng(0)
  shape = lambda b: (b, args['num_channels'], args['num_frames'], args['num_joints'],
                     args['num_persons'])
  as_input = lambda a: torch.from_numpy(a).to(device, memory_format=layout)
  calls = {}
  if train_batch:
    x = as_input(rng.normal(size=shape(train_batch)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, args['num_classes'], train_batch)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=weight_decay)

    def train_step():
      model.train()
      opt.zero_grad()
      with amp():
        loss = loss_fn(model(x), y)
      loss.backward()
      opt.step()
      return loss.item()
    calls[('train', train_batch)] = train_step
  for b in eval_batches:
    xe = as_input(rng.normal(size=shape(b)).astype(np.float32))

    def eval_step(xe=xe):
      model.eval()
      with torch.no_grad(), amp():
        return model(xe).float().cpu().numpy()
    calls[('eval', b)] = eval_step
  return calls


def logits_agreement(model_args: dict, dtype: str, state_dict: dict, x, reference_logits
                     ) -> dict:
  """Our eval logits with the reference's weights (`state_dict`) on its input `x` (N, C, T, V, M),
  against its logits, on JAX's default device: the largest difference over the largest |logit|
  (the parity tests' measure) and the relative L2 error."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from istanet_jax import torch_compat  # pylint: disable=import-outside-toplevel
  model = torch_compat.model_from_reference_args(model_args,
                                                dtype=throughput.COMPUTE_DTYPES[dtype])
  variables = torch_compat.variables_from_state_dict(state_dict, model_args)
  x = np.transpose(np.asarray(x, np.float32), (0, 2, 3, 4, 1))  # -> (N, T, V, M, C)
  ours = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x),
                    np.float64)
  ref = np.asarray(reference_logits, np.float64)
  return dict(dtype=dtype, device=str(jax.devices()[0].device_kind),
              max_abs_diff_over_max_abs=float(np.abs(ours - ref).max() / np.abs(ref).max()),
              relative_l2=float(np.linalg.norm(ours - ref) / np.linalg.norm(ref)))


def check_logits(reference_dir: str, model_name: str, dtype: str, device: str,
                 batch: int = 4) -> dict:
  """`logits_agreement` of ours in `dtype` with the reference in float32 on `device` (its own
  initial weights, BatchNorm running statistics perturbed so that they matter)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  args = dict(throughput._model_args(model_name))  # pylint: disable=protected-access
  model, _ = _reference_model(reference_dir, args)
  generator = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, buf in model.named_buffers():
      if name.endswith('running_mean'):
        buf.copy_(0.1 * torch.randn(buf.shape, generator=generator))
      elif name.endswith('running_var'):
        buf.copy_(0.5 + torch.rand(buf.shape, generator=generator))
  model = model.to(device).eval()
  x = np.random.default_rng(1).normal(size=(batch, args['num_channels'], args['num_frames'],
                                            args['num_joints'], args['num_persons']))
  x = x.astype(np.float32)
  with torch.no_grad():
    logits = model(torch.from_numpy(x).to(device)).cpu().numpy()
  state_dict = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
  return dict(logits_agreement(args, dtype, state_dict, x, logits), reference_device=device,
              batch=batch)


def run_interleaved(reference_dir: str, model_name: str, *, train_batch: Optional[int],
                    eval_batches: list[int], steps: int, warmup: int, threads: int,
                    dtype: str = 'float32', reference_autocast: bool = False,
                    reference_device: str = 'cpu', reference_channels_last: bool = False,
                    reference_cudnn: str = 'main_py', peak_tflops: Optional[float] = None,
                    conv_algorithm: str = 'winograd', reference_process: str = 'separate',
                    alternate: str = 'steps', matmul_outputs: str = 'auto') -> tuple:
  """(ours, reference) reports; each timed step of one alternates with one of the other.

  On a shared machine both then see the same background load, so the ratios hold even when
  the absolute times do not (`alternate='rows'`: all our steps of a measurement, then the
  reference's, for when the two steps' memory does not fit at once). With
  `reference_process='separate'` the reference runs in a child process that takes one step
  per request (`ReferenceProcess`): the two frameworks' memory then never adds up in one
  address space (with the host settings glibc keeps every freed block, and the NTU train step
  of both in one process peaked at 21-24 GB of 24).
  """
  import torch  # pylint: disable=import-outside-toplevel
  from istanet_jax import host  # pylint: disable=import-outside-toplevel
  if alternate not in ('steps', 'rows'):
    raise ValueError(f"alternate must be 'steps' or 'rows', got {alternate!r}")
  if reference_process not in ('same', 'separate'):
    raise ValueError(f"reference_process must be 'same' or 'separate', got {reference_process!r}")
  ref_kwargs = dict(train_batch=train_batch, eval_batches=eval_batches, threads=threads,
                    autocast=reference_autocast, device=reference_device,
                    channels_last=reference_channels_last, cudnn=reference_cudnn)
  from istanet_jax import model as model_lib  # pylint: disable=import-outside-toplevel
  model = throughput.make_model(model_name, dtype, conv_algorithm, matmul_outputs=matmul_outputs)
  ours, ref = [], []
  with contextlib.ExitStack() as stack:
    if reference_process == 'separate':
      ref_calls = stack.enter_context(ReferenceProcess(reference_dir, model_name, ref_kwargs))
      ref_threads, ref_host = ref_calls.threads, ref_calls.host_defaults
    else:
      ref_calls = reference_callers(reference_dir, model_name, **ref_kwargs)
      ref_threads, ref_host = torch.get_num_threads(), throughput._HOST_DEFAULTS[0]  # pylint: disable=protected-access
    for (kind, batch), ref_call in ref_calls.items():
      caller = throughput.train_caller if kind == 'train' else throughput.eval_caller
      our_call, flops, compile_s, ops = caller(model, batch)
      sides = ((our_call, [], []), (ref_call, [], []))  # (call, first call s, timed steps s)
      if alternate == 'rows':
        # All of our steps, then the reference's, with our freed memory handed back in
        # between: for steps whose memory does not fit twice (the reference in its own process).
        for call, first, times in sides:
          _time_calls(call, first, 1)
          _time_calls(call, [], warmup)
          _time_calls(call, times, steps)
          if call is our_call:
            host.release_freed_memory()
      else:
        for call, first, _ in sides:
          _time_calls(call, first, 1)
        for _ in range(warmup):
          for call, _, _ in sides:
            call()
        for _ in range(steps):
          for call, _, times in sides:
            _time_calls(call, times, 1)
      (_, (our_first,), our_times), (_, (ref_first,), ref_times) = sides
      ours.append(dict(throughput._summary(  # pylint: disable=protected-access
          kind, batch, our_first, our_times, flops, compile_s, peak_tflops), matmul_ops=ops))
      ref.append(_summary(kind, batch, ref_first, ref_times))
      if flops is not None and peak_tflops:
        # Our program's matmul FLOPs: the reference's own where ours convolves directly
        # (`conv_algorithm_run` matmul or xla, as bf16 always does); Winograd's are fewer.
        ref[-1]['mfu'] = flops['model'] / ref[-1]['median_step_s'] / (peak_tflops * 1e12)
  ours_report = dict(framework='jax', model=model_name, dtype=dtype,
                     conv_algorithm=conv_algorithm,
                     conv_algorithm_run=model_lib.conv_algorithm_run(conv_algorithm, dtype),
                     matmul_outputs=model_lib.resolve_matmul_outputs(matmul_outputs), results=ours,
                     memory=throughput._peak_memory(),  # pylint: disable=protected-access
                     environment=throughput.environment())
  ref_report = dict(framework='pytorch', torch=torch.__version__, process=reference_process,
                    alternate=alternate, autocast='bfloat16' if reference_autocast else None,
                    device=reference_device, channels_last=reference_channels_last,
                    cudnn=reference_cudnn, peak_tflops=peak_tflops, threads=ref_threads,
                    host_defaults=ref_host, model=model_name, results=ref)
  return ours_report, ref_report


class _Timed(float):
  """A step's seconds as the process that ran it measured them (`ReferenceProcess`): without
  the pipe's round trip (~60 us), which our steps do not pay."""


def _time_calls(call, times: list, n: int) -> None:
  """Runs `call` n times, appending each call's seconds to `times` (its own where it says)."""
  for _ in range(n):
    start = time.perf_counter()
    result = call()
    elapsed = time.perf_counter() - start
    times.append(float(result) if isinstance(result, _Timed) else elapsed)


def _serve_reference(conn, reference_dir: str, model_name: str, kwargs: dict,
                     host_settings: bool) -> None:
  """The child of `ReferenceProcess`: builds `reference_callers`, then runs the step each
  request names and answers with the step's seconds, until it is sent None."""
  applied = None
  if host_settings:
    # One malloc arena unless told otherwise: PyTorch's NTU batch-16 train step ran 21.25 s
    # with it, 22.85 s with glibc's default arenas (ours 16.27 / 16.38 s; ours only compiles
    # slower with one), so each side runs with its faster setting.
    os.environ.setdefault('ISTANET_MALLOC_ARENA_MAX', '1')
    from istanet_jax import host  # pylint: disable=import-outside-toplevel
    applied = host.configure()
  import torch  # pylint: disable=import-outside-toplevel
  calls = reference_callers(reference_dir, model_name, **kwargs)
  conn.send((sorted(calls), torch.get_num_threads(), applied))
  while (key := conn.recv()) is not None:
    start = time.perf_counter()
    calls[key]()  # returns when the step is done (`reference_callers`)
    conn.send(time.perf_counter() - start)


class ReferenceProcess(dict):
  """`reference_callers`' {(kind, batch): call} served by a child process (spawned, so it
  shares nothing with JAX's threads); each call runs one step there and waits for it. The
  child gets the host settings (`istanet_jax.host`) where this process has them, with one
  malloc arena (`_serve_reference`)."""

  def __init__(self, reference_dir: str, model_name: str, kwargs: dict):
    import multiprocessing  # pylint: disable=import-outside-toplevel
    context = multiprocessing.get_context('spawn')
    self._conn, child = context.Pipe()
    host_settings = any((throughput._HOST_DEFAULTS[0] or {}).values())  # pylint: disable=protected-access
    self._process = context.Process(
        target=_serve_reference, args=(child, reference_dir, model_name, kwargs, host_settings),
        daemon=True)
    self._process.start()
    child.close()
    try:
      keys, self.threads, self.host_defaults = self._conn.recv()
    except EOFError:
      raise RuntimeError(f'the reference process exited ({self._process.exitcode}) before '
                         'it was ready; see its output above') from None
    super().__init__({tuple(key): functools.partial(self._step, tuple(key)) for key in keys})

  def _step(self, key) -> _Timed:
    self._conn.send(key)
    return _Timed(self._conn.recv())

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    try:
      self._conn.send(None)
    except (BrokenPipeError, OSError):  # the child has died; its output says why
      pass
    self._process.join(timeout=60)
    if self._process.is_alive():
      self._process.kill()


def compare(ours: dict, ref: dict) -> list[dict]:
  rows = []
  for a in ours['results']:
    for b in ref['results']:
      if (a['kind'], a['batch']) == (b['kind'], b['batch']):
        rows.append(dict(kind=a['kind'], batch=a['batch'],
                         jax_samples_per_s=a['samples_per_s'],
                         torch_samples_per_s=b['samples_per_s'],
                         throughput_ratio=a['samples_per_s'] / b['samples_per_s'],
                         jax_step_s=a['median_step_s'], torch_step_s=b['median_step_s'],
                         latency_ratio=a['median_step_s'] / b['median_step_s'],
                         jax_first_step_incl_compile_s=a['first_step_incl_compile_s'],
                         torch_first_call_s=b['first_call_s']))
        for side, report in (('jax', a), ('torch', b)):
          if 'mfu' in report:
            rows[-1][f'{side}_mfu'] = report['mfu']
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--reference_dir', required=True,
                      help='checkout of github.com/Necolizer/ISTA-Net (holds model/ISTANet.py)')
  parser.add_argument('--model', default='small', choices=sorted(throughput.MODEL_ARGS))
  parser.add_argument('--batch', type=int, default=16, help='train batch; 0 skips training')
  parser.add_argument('--eval_batches', default='16,1')
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'],
                      help='our compute dtype; the reference always runs float32')
  parser.add_argument('--reference_autocast', action='store_true',
                      help='run the reference under torch.autocast(dtype=torch.bfloat16)')
  parser.add_argument('--check_logits', action='store_true',
                      help='first compare our eval logits (in --dtype) with the reference\'s '
                      '(float32) on its weights and input')
  parser.add_argument('--reference_device', default=None,
                      help='torch device of the reference (default: cuda where available)')
  parser.add_argument('--reference_channels_last', action='store_true',
                      help='the reference\'s weights and inputs as torch.channels_last_3d')
  parser.add_argument('--reference_cudnn', default='main_py', choices=['main_py', 'benchmark'],
                      help='main_py: deterministic, no autotuning (the reference\'s main.py); '
                      'benchmark: cudnn.benchmark = True')
  throughput.add_peak_flag(parser)
  throughput.add_conv_algorithm_flag(parser)
  parser.add_argument('--reference_process', default='separate', choices=['separate', 'same'],
                      help='the reference in a child process (its memory apart from ours) or in '
                           'this one (as results before 2026-12 were measured)')
  parser.add_argument('--alternate', default='steps', choices=['steps', 'rows'],
                      help='alternate single steps (same background load for both), or time '
                           'all of our steps of a measurement, release our freed memory, then '
                           "the reference's (when the two train steps do not fit in memory at "
                           'once: NTU batch 16 in 24 GB)')
  parser.add_argument('--out', default=None)
  throughput.add_host_flag(parser)
  args = parser.parse_args(argv)
  throughput.configure_host(args)
  # Both frameworks share the GPU: JAX takes what it needs, not 75% of it up front.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  if not os.path.isfile(os.path.join(args.reference_dir, 'model', 'ISTANet.py')):
    raise SystemExit(f'--reference_dir {args.reference_dir}: no model/ISTANet.py there')
  # XLA:CPU sizes its thread pool from the affinity mask; pin both frameworks to `threads`.
  if args.threads < len(os.sched_getaffinity(0)):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
  eval_batches = throughput.parse_batches(args.eval_batches)
  reference_device = args.reference_device or default_reference_device()
  logits = (check_logits(args.reference_dir, args.model, args.dtype, reference_device)
            if args.check_logits else None)
  load_before = throughput.load_average()
  ours, ref = run_interleaved(args.reference_dir, args.model, train_batch=args.batch,
                              eval_batches=eval_batches, steps=args.steps, warmup=args.warmup,
                              threads=args.threads, dtype=args.dtype,
                              reference_autocast=args.reference_autocast,
                              reference_device=reference_device,
                              reference_channels_last=args.reference_channels_last,
                              reference_cudnn=args.reference_cudnn,
                              peak_tflops=throughput.resolve_peak(args.peak_tflops, args.dtype),
                              conv_algorithm=args.conv_algorithm,
                              matmul_outputs=args.matmul_outputs,
                              reference_process=args.reference_process,
                              alternate=args.alternate)
  # Other jobs on a shared machine slow both sides alike (their steps alternate), not the ratios.
  report = dict(model=args.model, threads=args.threads, comparison=compare(ours, ref),
                logits_check=logits,
                load_average=dict(before=load_before, after=throughput.load_average()),
                jax=ours, reference=ref)
  throughput.write_report(report, args.out)


if __name__ == '__main__':
  main()
