"""Orbax checkpoints: the train state, the Grain iterator and the config, saved together.

Two managers under the workdir:
  checkpoints/  the latest `keep` steps (async saves), what a restart resumes from;
  best/         the single best step by the validation metric (lower is better).
Resume order: the workdir's latest checkpoint, else a fresh start. Saves are atomic (Orbax writes a
temporary folder and renames it; unfinished ones are removed on restart), so a run killed mid-write
resumes from the previous checkpoint. `best/` can then hold a step newer than the resume point
(validation runs more often than checkpoints): such steps come from the part of the run that is
replayed, so `drop_best_after` removes them and the replay writes them again, bit for bit.
"""

from __future__ import annotations

import pathlib
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  def __init__(self, workdir: pathlib.Path, keep: int, best_metric: str = "val/mae"):
    self.best_metric = best_metric
    self.latest = ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                             cleanup_tmp_directories=True, create=True))
    self.best = ocp.CheckpointManager(
        (workdir / "best").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m[best_metric],
                                             best_mode="min", enable_async_checkpointing=True,
                                             cleanup_tmp_directories=True, create=True))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state: Any, data_iter, config: dict) -> None:
    self.latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter),
        config=ocp.args.JsonSave(config)), force=True)

  def drop_best_after(self, step: int) -> list[int]:
    """Deletes best/ steps newer than `step` (the resume point); returns them."""
    dropped = [s for s in self.best.all_steps() if s > step]
    for s in dropped:
      self.best.delete(s)
    return dropped

  def save_best(self, step: int, state: Any, config: dict, metrics: dict) -> None:
    if step in self.best.all_steps():
      return  # written by an earlier attempt at this very step: the replay is identical
    self.best.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config)),
        metrics={k: float(v) for k, v in metrics.items()}, force=True)

  def restore(self, step: int, abstract_state: Any, data_iter) -> Any:
    restored = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iter)))
    return restored.state

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def abstract_like(tree: Any, sharding=None) -> Any:
  """ShapeDtypeStructs (with a sharding) describing `tree`, the target Orbax restores into."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
