"""A smoke run of the model: build it from reference model_args, one SGD step, eval logits.

  python -m istanet_jax.smoke [--model ntu26|tiny] [--batch 2]

Prints the parameter count (the reference's `# Parameters`), the loss before and after one
step on random data, and the time each took. The training demo supersedes it as main job.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from istanet_jax import losses, optim, torch_compat
from istanet_jax.model import apply_model

MODEL_ARGS = {
    # config/ntu/ntu26_xsub_joint.yaml of the reference.
    'ntu26': dict(window_size=[20, 1, 2], num_frames=120, num_joints=25, num_persons=2,
                  num_channels=3, num_classes=26, num_heads=3, kernel_size=[3, 5], use_pes=True,
                  config=[[64, 64, 16], [64, 64, 16], [64, 128, 32], [128, 128, 32],
                          [128, 256, 64], [256, 256, 64], [256, 256, 64], [256, 256, 64]]),
    'tiny': dict(window_size=[8, 5, 2], num_frames=32, num_joints=25, num_persons=2,
                 num_channels=3, num_classes=10, num_heads=2, kernel_size=[3, 3], use_pes=True,
                 config=[[16, 16, 8], [16, 32, 8]]),
}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', choices=sorted(MODEL_ARGS), default='tiny')
  parser.add_argument('--batch', type=int, default=4)
  args = parser.parse_args(argv)
  model_args = MODEL_ARGS[args.model]
  model = torch_compat.model_from_reference_args(model_args)
  rng = np.random.default_rng(0)
  shape = (args.batch, model.num_channels, model.num_frames, model.num_joints, model.num_persons)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  y = jnp.asarray(rng.integers(0, model.num_classes, args.batch))
  variables = model.init(jax.random.key(0), jnp.moveaxis(x, 1, -1), train=False)
  count = sum(p.size for p in jax.tree_util.tree_leaves(variables['params']))
  print(f'ISTA-Net ({args.model}): {count:,} parameters, {model.num_tokens} tokens')
  tx = optim.make_optimizer('SGD', 0.1, weight_decay=4e-4, nesterov=True)

  @jax.jit
  def train_step(variables, opt_state):
    def loss_fn(params):
      logits, new_vars = apply_model(model, {**variables, 'params': params}, x, train=True)
      return losses.label_smoothing_cross_entropy(logits, y).mean(), new_vars
    (loss, new_vars), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])
    updates, opt_state = tx.update(grads, opt_state, variables['params'])
    return {**new_vars, 'params': jax.tree_util.tree_map(jnp.add, variables['params'], updates)}, opt_state, loss

  opt_state = tx.init(variables['params'])
  for i in range(2):
    start = time.perf_counter()
    variables, opt_state, loss = train_step(variables, opt_state)
    loss = float(loss)
    print(f'train step {i}: loss {loss:.4f} ({time.perf_counter() - start:.2f} s'
          f'{" incl. compilation" if i == 0 else ""})')
  logits, _ = jax.jit(lambda v: apply_model(model, v, x, train=False))(variables)
  if not np.isfinite(np.asarray(logits)).all():
    raise SystemExit('non-finite logits')
  print(f'eval logits {tuple(logits.shape)}, finite')


if __name__ == '__main__':
  main()
