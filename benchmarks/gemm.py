r"""Float32 matmul throughput on the NTU model's shapes: XLA:CPU's backends, PyTorch, NumPy.

  python -m benchmarks.gemm --out benchmarks/results/cpu_gemm.json

Most of a train step's FLOPs are matmuls of these shapes (batch 16, 6,000 positions a sample,
widths of the last blocks), so their speed bounds the step's: this is where the CPU gap to
the reference comes from. Each backend runs in its own process (XLA reads its flags once);
the figure is the best of `--repeats` calls, in GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROWS = 16 * 6000


def shapes(rows: int = ROWS) -> dict:
  """name: (m, k, n) of an (m, k) @ (k, n) product; `rows` positions (16 samples: 96,000)."""
  return {'ffn_1x1_conv': (rows, 256, 256),
          'proj_input_grad': (rows, 5 * 256, 3 * 256),
          'proj_weight_grad': (5 * 256, rows, 3 * 256),
          'proj_forward_as_matmul': (rows, 5 * 3 * 256, 256)}
XLA_BACKENDS = {
    'xla_eigen': '--xla_cpu_use_xnnpack=false',
    'xla_xnnpack': '--xla_cpu_use_xnnpack=true',
    'xla_onednn': '--xla_cpu_use_xnnpack=false --xla_cpu_use_onednn=true',
}


def _measure(backend: str, repeats: int, rows: int) -> dict:
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  out = {}
  for name, (m, k, n) in shapes(rows).items():
    a = rng.random((m, k), np.float32)
    b = rng.random((k, n), np.float32)
    if backend == 'torch':
      import torch  # pylint: disable=import-outside-toplevel
      torch.set_num_threads(len(os.sched_getaffinity(0)))
      ta, tb = torch.from_numpy(a), torch.from_numpy(b)
      call = lambda: torch.mm(ta, tb)
    elif backend == 'numpy':
      call = lambda: np.matmul(a, b)  # a fresh output, as the others allocate theirs
    else:
      import jax  # pylint: disable=import-outside-toplevel
      ja, jb = jax.device_put(a), jax.device_put(b)
      f = jax.jit(lambda x, y: x @ y)
      call = lambda: f(ja, jb).block_until_ready()
    call()
    best = min(_seconds(call) for _ in range(repeats))
    out[name] = round(2 * m * k * n / best / 1e9, 1)
  return out


def _seconds(call) -> float:
  start = time.perf_counter()
  call()
  return time.perf_counter() - start


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=4)
  parser.add_argument('--rows', type=int, default=ROWS, help='matmul rows (positions)')
  parser.add_argument('--out', default=None)
  parser.add_argument('--backend', default=None, help=argparse.SUPPRESS)  # one child process
  args = parser.parse_args(argv)
  if args.backend:
    print(json.dumps(_measure(args.backend, args.repeats, args.rows)))
    return
  results = {}
  for backend in [*XLA_BACKENDS, 'torch', 'numpy']:
    env = dict(os.environ, XLA_FLAGS=XLA_BACKENDS.get(backend, ''), ISTANET_HOST_DEFAULTS='0')
    done = subprocess.run([sys.executable, '-m', 'benchmarks.gemm', '--backend', backend,
                           '--repeats', str(args.repeats), '--rows', str(args.rows)], env=env, capture_output=True,
                          text=True, check=False)
    results[backend] = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0
                        else {'error': done.stderr.strip().splitlines()[-1:]})
  from benchmarks import gpu_compile, throughput  # pylint: disable=import-outside-toplevel
  versions = {p: gpu_compile.package_version(p) for p in ('numpy', 'torch')}
  report = dict(unit='GFLOP/s, float32, best of repeats', shapes=shapes(args.rows), results=results,
                load_average=throughput.load_average(), versions=versions,
                environment=throughput.environment())
  throughput.write_report(report, args.out)


if __name__ == '__main__':
  main()
