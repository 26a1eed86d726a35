"""What must survive a kill: Orbax checkpoints of the training state and the run's bookkeeping.

`workdir/checkpoints/<step>` holds the last few epochs, `workdir/best/<step>` the epoch with
the best eval top-1 (as the reference keeps its best `.pt`). Each checkpoint has two items:
`state` (the train-state pytree) and `meta` (JSON: epoch, best top-1, data position, ...).
Orbax writes into a temporary directory and renames it when complete, so a killed save never
looks finished; a checkpoint that is complete but damaged makes restore raise, and
`restore_latest` then falls back to the previous one, saying which and why.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


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
    self.manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def steps(self) -> list:
    return sorted(self.manager.all_steps())

  def restore(self, step: int, abstract_state: Any):
    restored = self.manager.restore(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored['state'], dict(restored['meta'])

  def restore_latest(self, abstract_state: Any):
    """(state, meta, step) of the newest checkpoint that restores, or None if none does."""
    for step in reversed(self.steps()):
      try:
        state, meta = self.restore(step, abstract_state)
        return state, meta, step
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        path = os.path.join(self.directory, str(step))
        # Moved aside, not deleted: it may be worth inspecting, and the step can be saved anew.
        aside = f'{path}.corrupt-{int(time.time())}'
        msg = (f'checkpoint {path} is corrupt or incomplete ({type(e).__name__}: '
               f'{str(e).splitlines()[0] if str(e) else ""}); moved to {aside}, falling back to '
               f'the previous checkpoint')
        log.warning(msg)
        print(f'WARNING: {msg}', flush=True)
        if jax.process_index() == 0:
          os.replace(path, aside)
        self.manager.reload()
    return None

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(state: Any) -> Any:
  """ShapeDtypeStructs (with shardings) that tell Orbax how to lay the restored arrays out."""
  return jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, 'sharding', None)), state)
