"""What must survive a kill: Orbax checkpoints of the training state and the run's bookkeeping.

`workdir/checkpoints/<step>` holds the last few epochs, `workdir/best/<step>` the epoch with
the best eval top-1 (as the reference keeps its best `.pt`). Each checkpoint has two items:
`state` (the train-state pytree) and `meta` (JSON: epoch, best top-1, data position, ...).
Orbax writes into a temporary directory and renames it when complete, so a killed save never
looks finished; a checkpoint that is complete but damaged makes restore raise, and
`restore_latest` then falls back to the previous one, saying which and why. `meta` also records
the state's layout (`state_layout`), so that a checkpoint of another config (a changed model,
optimiser or clipping) is reported as such and left in place, not taken for a damaged one.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class LayoutMismatch(ValueError):
  """The checkpoint holds a state of another layout than the one asked for (another config)."""


def state_layout(state: Any) -> list:
  """'path shape dtype' of every leaf of a state (arrays or ShapeDtypeStructs)."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  return [f'{jax.tree_util.keystr(path)} {tuple(a.shape)} {a.dtype}' for path, a in leaves]


class Checkpointer:
  """An Orbax CheckpointManager for one directory, with corrupt-checkpoint fallback."""

  def __init__(self, directory: str, *, max_to_keep: Optional[int] = 2, use_async: bool = True):
    self.directory = os.path.abspath(directory)
    # Several hosts: each manager's background commit waits at a barrier named by the step.
    # `checkpoints/` and `best/` save the same step in an epoch that improves the best, and two
    # barriers of one name collide ("already ongoing"); the prefix keeps them apart.
    multiprocessing = ocp.options.MultiprocessingOptions(
        barrier_sync_key_prefix=os.path.basename(self.directory))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=use_async,
                                             multiprocessing_options=multiprocessing),
        item_names=('state', 'meta'))

  def save(self, step: int, state: Any, meta: dict) -> None:
    meta = dict(meta, state_layout=state_layout(state))
    self.manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def set_aside(self, step: int, reason: str) -> str:
    """Renames `step`'s directory to `<step>.<reason>-<time>`, which Orbax ignores (kept for
    inspection; the step can be saved anew), then every process rereads the directory."""
    path = os.path.join(self.directory, str(step))
    aside = f'{path}.{reason}-{int(time.time())}'
    if jax.process_index() == 0:
      os.replace(path, aside)
    if jax.process_count() > 1:  # no process lists the step after this
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'istanet_jax set aside {path}')
    self.manager.reload()
    return aside

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def steps(self) -> list:
    return sorted(self.manager.all_steps())

  def restore(self, step: int, abstract_state: Any):
    restored = self.manager.restore(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    meta = dict(restored['meta'])
    meta.pop('state_layout', None)
    return restored['state'], meta

  def check_layout(self, step: int, abstract_state: Any) -> None:
    """Raises LayoutMismatch where `step`'s recorded layout differs from `abstract_state`'s
    (checkpoints written before the layout was recorded pass); reading errors propagate."""
    meta = self.manager.restore(int(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    saved = meta['meta'].get('state_layout')
    wanted = state_layout(abstract_state)
    if saved is None or list(saved) == wanted:
      return
    saved_set, wanted_set = set(saved), set(wanted)
    only_saved = [s for s in saved if s not in wanted_set]
    only_wanted = [w for w in wanted if w not in saved_set]
    raise LayoutMismatch(
        f'{os.path.join(self.directory, str(step))} holds a state of another layout than this '
        f'config makes ({len(only_saved)} leaves only there, e.g. '
        f'{only_saved[0] if only_saved else "none"}; {len(only_wanted)} only here, e.g. '
        f'{only_wanted[0] if only_wanted else "none"}): it was trained with another config. Rerun '
        f'with that config, or use a new --workdir; nothing was moved.')

  def restore_latest(self, abstract_state: Any):
    """(state, meta, step) of the newest checkpoint that restores, or None if none does.
    LayoutMismatch where the newest readable one is of another config."""
    for step in reversed(self.steps()):
      try:
        self.check_layout(step, abstract_state)
      except LayoutMismatch:
        raise
      except Exception:  # pylint: disable=broad-except
        pass  # an unreadable meta: the restore below fails too, and says why
      try:
        state, meta = self.restore(step, abstract_state)
        return state, meta, step
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        aside = self.set_aside(step, 'corrupt')
        msg = (f'checkpoint {os.path.join(self.directory, str(step))} is corrupt or incomplete '
               f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}); moved to '
               f'{aside}, falling back to the previous checkpoint')
        log.warning(msg)
        if jax.process_index() == 0:
          print(f'WARNING: {msg}', flush=True)
    return None

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(state: Any) -> Any:
  """ShapeDtypeStructs (with shardings) that tell Orbax how to lay the restored arrays out."""
  return jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, 'sharding', None)), state)
