r"""Forward, input gradient and weight gradient of the model's two 1-D convolutions, timed apart.

  python -m benchmarks.conv_grads --batch 16 --out benchmarks/results/cpu_conv_grads.json

The token conv `proj` (kernel 5 along the tokens, 3*256 -> 256 channels) and the temporal conv
`TA` (kernel 3 along the window's frames, 256 -> 256) of the NTU model's last blocks, on
(batch, 150 tokens, 20 frames, 2 entities, channels) activations: each of forward, input
gradient and weight gradient jitted alone (XLA drops the parts a function does not return),
for every `conv_algorithm` (istanet_jax/model.py CONV_ALGORITHMS; 'winograd' in float32 only,
as the model runs it) and each dtype. GFLOP/s counts the direct convolution's 2 * rows * k * in
* out per operation, also for Winograd (which does fewer), so the figures compare times.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from istanet_jax import model as model_lib

# name: (axis, kernel, in, out) on (N, U=150, Tw=20, JE=2, C) activations.
CONVS = {'proj': (1, 5, 3 * 256, 256), 'TA': (2, 3, 256, 256)}
TOKENS, FRAMES, ENTITIES = 150, 20, 2


def _time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure(name: str, *, batch: int, dtype, algorithm: str, repeats: int) -> dict:
  axis, k, cin, cout = CONVS[name]
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, TOKENS, FRAMES, ENTITIES, cin)), dtype)
  w = jnp.asarray(rng.normal(size=(k, cin, cout)) / np.sqrt(k * cin), dtype)
  # pylint: disable=protected-access
  # The products the model takes on this platform (float32 on the CPU, bf16 on a GPU).
  acc = model_lib._accumulation(dtype, model_lib.resolve_matmul_outputs('auto'))
  dy = jnp.asarray(rng.normal(size=(batch, TOKENS, FRAMES, ENTITIES, cout)), acc or dtype)
  if algorithm == 'winograd':
    conv = lambda x, w: model_lib._winograd_conv(x, w, axis, None)
  else:
    conv = lambda x, w: model_lib._conv_along(x, w, axis, None, algorithm, acc)
  # pylint: enable=protected-access
  grads = lambda x, w, dy: jax.vjp(conv, x, w)[1](dy)
  ops = {'forward': (jax.jit(conv), (x, w)),
         'input_grad': (jax.jit(lambda x, w, dy: grads(x, w, dy)[0]), (x, w, dy)),
         'weight_grad': (jax.jit(lambda x, w, dy: grads(x, w, dy)[1]), (x, w, dy))}
  flops = 2 * batch * TOKENS * FRAMES * ENTITIES * k * cin * cout
  out = {}
  for op, (fn, args) in ops.items():
    seconds = _time(fn, *args, repeats=repeats)
    out[op] = {'seconds': seconds, 'gflops_per_s': flops / seconds / 1e9}
  return out


def main(argv=None):
  from benchmarks import throughput  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--convs', default='proj,TA')
  parser.add_argument('--dtypes', default='float32,bfloat16')
  parser.add_argument('--algorithms', default=','.join(model_lib.CONV_ALGORITHMS))
  parser.add_argument('--out', default=None)
  throughput.add_host_flag(parser)
  args = parser.parse_args(argv)
  throughput.configure_host(args)
  results = []
  for name in args.convs.split(','):
    for dtype in args.dtypes.split(','):
      for algorithm in args.algorithms.split(','):
        if algorithm == 'winograd' and dtype != 'float32':
          continue  # the model computes 16-bit convolutions directly
        r = measure(name, batch=args.batch, dtype=jnp.dtype(dtype), algorithm=algorithm,
                    repeats=args.repeats)
        results.append(dict(conv=name, dtype=dtype, conv_algorithm=algorithm, **r))
        print(f'{name:4s} {dtype:8s} {algorithm:8s} ' + '  '.join(
            f'{op} {v["seconds"]*1e3:8.1f} ms {v["gflops_per_s"]:6.1f} GFLOP/s'
            for op, v in r.items()), flush=True)
  throughput.write_report(dict(batch=args.batch, results=results,
                               environment=throughput.environment()), args.out)


if __name__ == '__main__':
  main()
