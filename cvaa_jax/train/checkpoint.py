"""Orbax checkpoints: the train state, the Grain iterator and the config, saved together.

Two managers under the workdir:
  checkpoints/  the latest `keep` steps (async saves), what a restart resumes from;
  best/         the single best step by the validation metric (lower is better).
Resume order: the workdir's newest intact checkpoint, else a fresh start. Saves are atomic (Orbax
writes a temporary folder and renames it; unfinished ones are removed on restart), so a run killed
mid-write resumes from the previous checkpoint. A finished checkpoint damaged afterwards (a file
truncated or removed by a full disk, a copy, a user) is found before or during its restore, moved
to `<workdir>/damaged/` (never deleted) and the next older one is used, with one warning line. `best/` can then hold a step newer than the resume point
(validation runs more often than checkpoints): such steps come from the part of the run that is
replayed, so `drop_best_after` removes them and the replay writes them again, bit for bit.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from cvaa_jax.errors import CvaaError
from cvaa_jax.train.abandoned import quiet_abandoned_orbax_tasks

NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class DiskFullError(CvaaError):
  """The workdir cannot take the next checkpoint (full, over quota or read-only)."""

  hard_exit = True  # the command line exits without teardown (cli.fail)


def free_bytes(path: pathlib.Path) -> int:
  """Free space where `path` lives (tests fake it with CVAA_FAULT_DISK_FREE_BYTES)."""
  fake = os.environ.get("CVAA_FAULT_DISK_FREE_BYTES")
  return int(fake) if fake else shutil.disk_usage(path).free


def disk_full_cause(e: BaseException) -> str | None:
  """A short cause when `e` (or what it wraps) says the disk is full: an OSError with a no-space
  errno, or tensorstore's RESOURCE_EXHAUSTED (a ValueError, how Orbax's array writes report
  ENOSPC); None otherwise."""
  from cvaa_jax import cli  # pylint: disable=g-import-not-at-top
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in NO_SPACE:
      return os.strerror(e.errno)
    if cli.is_disk_full_text(str(e)):
      return "No space left on device" if "RESOURCE_EXHAUSTED" in str(e) else str(e)[:120]
    e = e.__cause__ or e.__context__
  return None


class Checkpointer:
  def __init__(self, workdir: pathlib.Path, keep: int, best_metric: str = "val/mae",
               reader: bool = False):
    """`reader`: for evaluate / reconstruct / export, which may run while a training writes to
    the same workdir: nothing is created, and unfinished (temporary) checkpoints are left alone,
    where a writer deletes them on start (they would be the running training's write in flight)."""
    workdir = pathlib.Path(workdir)
    self.workdir = workdir
    self.best_metric = best_metric
    writer = not reader
    self.latest = ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                             cleanup_tmp_directories=writer, create=writer))
    self.best = ocp.CheckpointManager(
        (workdir / "best").absolute(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m[best_metric], best_mode="min",
            enable_async_checkpointing=True, cleanup_tmp_directories=writer, create=writer,
            # Its own barrier names: both managers may write the same step at once, and in a
            # multi-process run their cross-process barriers are keyed by the step.
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix="best")))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def _no_space(self, needed: int | None, cause: str) -> DiskFullError:
    # A write in flight counts as a step until it finishes (or fails): wait, then read the disk.
    for mgr in (self.latest, self.best):
      try:
        mgr.wait_until_finished()
      except Exception:  # pylint: disable=broad-except  # it failed: the disk says what is left
        pass
      mgr.reload()
    last = self.latest.latest_step()
    kept = (f"the last complete checkpoint (step {last}) is intact" if last is not None else
            "no checkpoint was completed yet")
    need = f", a checkpoint needs about {needed / 1e6:.1f} MB" if needed else ""
    return DiskFullError(f"{self.workdir}: cannot write the next checkpoint ({cause}{need}); "
                         f"{kept}. Free space (or give more quota) and rerun the same command: it "
                         "resumes from there.")

  def check_space(self, state: Any) -> None:
    """Refuses to start a checkpoint that cannot fit: it would fail mid-write in the background."""
    needed = int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state)) * 1.2
                 + 4e6)
    free = free_bytes(self.workdir)
    if free < needed:
      raise self._no_space(needed, f"{free / 1e6:.1f} MB free")

  def no_space(self, cause: str) -> DiskFullError:
    return self._no_space(None, cause)

  def _guarded(self, fn, *args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except Exception as e:  # pylint: disable=broad-except
      cause = disk_full_cause(e)
      if cause is None:
        raise
      raise self._no_space(None, cause) from None

  def save(self, step: int, state: Any, data_iter, config: dict) -> None:
    self.check_space(state)
    self._guarded(self.latest.save, step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter),
        config=ocp.args.JsonSave(config)), force=True)

  def drop_best_after(self, step: int) -> list[int]:
    """Deletes best/ steps newer than `step` (the resume point); returns them."""
    dropped = [s for s in self.best.all_steps() if s > step]
    for s in dropped:
      self.best.delete(s)
    return dropped

  def save_best(self, step: int, state: Any, config: dict, metrics: dict) -> None:
    # No step newer than the resume point survives `drop_best_after`, so every process makes the
    # same decision here (a save is a collective in a multi-process run).
    self.check_space(state)
    self._guarded(self.best.save, step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config)),
        metrics={k: float(v) for k, v in metrics.items()}, force=True)

  def restore(self, step: int, abstract_state: Any, data_iter) -> Any:
    restored = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iter)))
    return restored.state

  def restore_newest_intact(self, abstract_state: Any, data_iter
                            ) -> tuple[Any, int | None, list[tuple[int, str, pathlib.Path]]]:
    """(state, step) of the newest checkpoint that restores, and the damaged ones set aside
    [(step, problem, where it went)]; (None, None, ...) when none is left (a fresh start)."""
    set_aside = []
    quiet_abandoned_orbax_tasks()  # a damaged checkpoint's restore leaves reads behind
    for step in sorted(self.latest.all_steps(), reverse=True):
      step_dir = pathlib.Path(self.latest.directory) / str(step)
      problem = damage(step_dir, ("state", "data"))
      if problem is None:
        try:
          return self.restore(step, abstract_state, data_iter), step, set_aside
        except Exception as e:  # pylint: disable=broad-except  # any failure: the files are bad
          if disk_full_cause(e) is not None:
            raise self._no_space(None, "reading the checkpoint failed") from None
          problem = _short(e)
      set_aside.append((step, problem, self._set_aside(step_dir, "checkpoints")))
      self.latest.reload()
    return None, None, set_aside

  def set_aside_best(self) -> list[tuple[int, str, pathlib.Path]]:
    """Moves damaged best/ steps to damaged/ (a later validation writes best/ again)."""
    out = []
    for step in self.best.all_steps():
      step_dir = pathlib.Path(self.best.directory) / str(step)
      problem = damage(step_dir, ("state",))
      if problem is not None:
        out.append((step, problem, self._set_aside(step_dir, "best")))
    if out:
      self.best.reload()
    return out

  def _set_aside(self, step_dir: pathlib.Path, kind: str) -> pathlib.Path:
    dest_root = self.workdir / "damaged"
    dest_root.mkdir(exist_ok=True)
    dest = dest_root / f"{kind}-{step_dir.name}"
    k = 1
    while dest.exists():
      k += 1
      dest = dest_root / f"{kind}-{step_dir.name}-{k}"
    os.replace(step_dir, dest)
    return dest

  def wait(self) -> None:
    self._guarded(self.latest.wait_until_finished)
    self._guarded(self.best.wait_until_finished)

  def close(self) -> None:
    self.latest.close()
    self.best.close()


REQUIRED = {"state": ("_METADATA", "manifest.ocdbt"), "data": ()}


def _short(e: BaseException) -> str:
  """One line for an exception: its innermost cause (tensorstore's own message names the file)."""
  while (e.__cause__ or e.__context__) is not None:
    e = e.__cause__ or e.__context__
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def damage(step_dir: pathlib.Path, items: tuple[str, ...]) -> str | None:
  """What is missing or unreadable in a finished checkpoint folder, before any array is read:
  each item's folder and its index files, the grain iterator's state (JSON), and the array data
  files' sizes against what the OCDBT manifest expects is checked by the restore itself."""
  for item in items:
    d = step_dir / item
    if not d.is_dir():
      return f"{item}/ is missing"
    for name in REQUIRED.get(item, ()):
      if not (d / name).is_file() or (d / name).stat().st_size == 0:
        return f"{item}/{name} is missing or empty"
    if item == "data":
      files = list(d.glob("process_*.json"))
      if not files:
        return "data/process_*.json (the data iterator's position) is missing"
      for f in files:
        try:
          json.loads(f.read_text())
        except (OSError, ValueError):
          return f"data/{f.name} is not readable JSON"
  if "state" in items:
    try:
      meta = json.loads((step_dir / "state" / "_METADATA").read_text())
      if not isinstance(meta, dict):
        raise ValueError("not an object")
    except (OSError, ValueError) as e:
      return f"state/_METADATA is not readable ({e})"
  return None


def _path_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def first_mismatch(step_dir: pathlib.Path, abstract_state: Any) -> str | None:
  """The first leaf whose saved shape or dtype differs from `abstract_state`'s (or that one side
  lacks), as text; None when they agree or the saved metadata cannot be read.

  Checked from the checkpoint's metadata before restoring: a restore that fails part-way leaves
  Orbax's array reads running, which print 'Event loop is closed' tracebacks at exit under the
  clear error."""
  try:
    meta = ocp.PyTreeCheckpointHandler().metadata(pathlib.Path(step_dir) / "state")
    meta = getattr(meta, "tree", meta)
    saved = {_path_names(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(meta)[0]}
  except Exception:  # pylint: disable=broad-except  # no metadata: let the restore decide
    return None
  wanted = {_path_names(p): leaf
            for p, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
  for name, leaf in wanted.items():
    got = saved.get(name)
    label = "/".join(name)
    if got is None:
      return f"{label} is missing from the checkpoint"
    if tuple(got.shape) != tuple(leaf.shape) or np.dtype(got.dtype) != np.dtype(leaf.dtype):
      return (f"{label} is {np.dtype(got.dtype).name}{list(got.shape)} in the checkpoint, "
              f"{np.dtype(leaf.dtype).name}{list(leaf.shape)} for this config")
  extra = sorted(set(saved) - set(wanted))
  return f"{'/'.join(extra[0])} is in the checkpoint but not in this config's model" if extra \
      else None


def abstract_like(tree: Any, sharding=None) -> Any:
  """ShapeDtypeStructs (with a sharding) describing `tree`, the target Orbax restores into."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
