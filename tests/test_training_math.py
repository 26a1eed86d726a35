"""Loss, learning-rate rule and optimisers against values computed by hand from the PyTorch
formulas (torch.optim.SGD / Adam / AdamW docs, `utils/loss.py`, `main.py: adjust_learning_rate`)."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from istanet_jax import losses, optim

NTU = dict(base_lr=0.1, warm_up_epoch=5, step=[35, 60, 80, 95], lr_decay_rate=0.1)


def test_reference_lr_rule():
  expected = {0: 0.02, 1: 0.04, 4: 0.1, 5: 0.1, 34: 0.1, 35: 0.01, 59: 0.01, 60: 1e-3,
              80: 1e-4, 94: 1e-4, 95: 1e-5, 109: 1e-5}
  for epoch, lr in expected.items():
    assert optim.reference_lr(epoch, **NTU) == pytest.approx(lr, rel=1e-12), epoch


def test_lr_schedule_is_constant_within_an_epoch():
  schedule = optim.lr_schedule(steps_per_epoch=3, **NTU)
  got = [float(schedule(c)) for c in (0, 1, 2, 3, 14, 15, 104, 105, 300)]
  np.testing.assert_allclose(got, [0.02, 0.02, 0.02, 0.04, 0.1, 0.1, 0.1, 0.01, 1e-5], rtol=1e-6)
  no_warmup = optim.lr_schedule(base_lr=0.05, steps_per_epoch=2, warm_up_epoch=0, step=[1],
                                lr_decay_rate=0.5)
  np.testing.assert_allclose([float(no_warmup(c)) for c in (0, 1, 2)], [0.05, 0.05, 0.025])


def _log_softmax(row):
  top = max(row)
  z = math.log(sum(math.exp(v - top) for v in row)) + top
  return [v - z for v in row]


def test_label_smoothing_cross_entropy_by_hand():
  logits = [[1.0, 2.0, 3.0, -1.0], [0.5, -0.5, 2.5, 0.0]]
  labels = [2, 0]
  smoothing, temperature = 0.1, 2.0
  per_example = []
  for row, label in zip(logits, labels):
    logp = _log_softmax([v / temperature for v in row])
    per_example.append((1 - smoothing) * -logp[label] + smoothing * -sum(logp) / len(logp))
  got = losses.label_smoothing_cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                                             smoothing=smoothing, temperature=temperature)
  np.testing.assert_allclose(got, per_example, rtol=1e-6)
  plain = losses.loss_from_config('CrossEntropy')(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(plain, [-_log_softmax(r)[l] for r, l in zip(logits, labels)], rtol=1e-6)
  with pytest.raises(ValueError, match='unknown loss'):
    losses.loss_from_config('Focal')


def test_topk_correct():
  logits = jnp.asarray([[0.1, 0.5, 0.4], [0.9, 0.04, 0.06]])
  np.testing.assert_array_equal(losses.topk_correct(logits, jnp.asarray([2, 1]), 1), [0, 0])
  np.testing.assert_array_equal(losses.topk_correct(logits, jnp.asarray([2, 1]), 2), [1, 0])
  np.testing.assert_array_equal(losses.topk_correct(logits, jnp.asarray([2, 1]), 5), [1, 1])


P0 = np.array([0.5, -1.0, 2.0])
GRADS = [np.array([0.1, -0.2, 0.3]), np.array([-0.05, 0.4, 0.1]), np.array([0.2, 0.2, -0.3])]


def _run(tx, lrs=None):
  params = jnp.asarray(P0)
  state = tx.init(params)
  out = []
  for g in GRADS:
    updates, state = tx.update(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, updates)
    out.append(np.asarray(params))
  return out


def test_sgd_nesterov_coupled_decay_by_hand():
  lr, wd, mom = 0.1, 4e-4, 0.9
  p, buf, expected = P0.copy(), None, []
  for g in GRADS:
    d = g + wd * p
    buf = d if buf is None else mom * buf + d
    p = p - lr * (d + mom * buf)
    expected.append(p)
  got = _run(optim.make_optimizer('SGD', lr, weight_decay=wd, nesterov=True))
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def _adam_by_hand(lrs, wd, decoupled, b1=0.9, b2=0.999, eps=1e-8):
  p, m, v, expected = P0.copy(), 0.0, 0.0, []
  for t, (g, lr) in enumerate(zip(GRADS, lrs), start=1):
    if decoupled:
      p = p * (1 - lr * wd)
    else:
      g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    expected.append(p)
  return expected


def test_adamw_by_hand_with_the_epoch_schedule():
  # Two steps per epoch, warm-up over 2 epochs: lr 0.0005, 0.0005, then 0.001.
  schedule = optim.lr_schedule(base_lr=1e-3, steps_per_epoch=2, warm_up_epoch=2, step=[10],
                               lr_decay_rate=0.1)
  got = _run(optim.make_optimizer('AdamW', schedule, weight_decay=0.05))
  np.testing.assert_allclose(got, _adam_by_hand([5e-4, 5e-4, 1e-3], 0.05, decoupled=True), rtol=1e-6)


def test_adam_coupled_decay_by_hand():
  got = _run(optim.make_optimizer('Adam', 1e-2, weight_decay=1e-3))
  np.testing.assert_allclose(got, _adam_by_hand([1e-2] * 3, 1e-3, decoupled=False), rtol=1e-6)


def test_unknown_optimizer():
  with pytest.raises(ValueError, match="unknown optimizer 'RMSprop'"):
    optim.make_optimizer('RMSprop', 0.1, weight_decay=0.0)
