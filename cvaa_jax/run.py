"""`run(config, workdir)`: everything `launch.py` does, importable from notebooks.

Validate the config, prepare the dataset (cached deterministic preprocessing and the patient
split), write a preview figure, then train and evaluate (`train.loop.train_and_evaluate`).
"""

from __future__ import annotations

import json

import jax
import ml_collections
import numpy as np
from absl import logging

from cvaa_jax import config as config_lib
from cvaa_jax import distributed
from cvaa_jax import viz
from cvaa_jax.data import augment, dataset


# Fields a resumed run may change: they extend or reschedule training, or only change how it is
# logged, fed or computed (remat and micro-batches give the same update, e.g. to resume on a
# smaller card); every other field is part of the run's identity (model, data, split, losses,
# optimiser, geometry), and changing it in an existing workdir is refused.
RESCHEDULE_FIELDS = ("train.num_steps", "train.num_epochs", "train.log_every", "train.eval_every",
                     "train.checkpoint_every", "train.keep_checkpoints", "train.num_workers",
                     "train.eval_batch_size", "train.distributed", "train.remat",
                     "train.microbatch", "preview",
                     "train.coordinator_address", "train.num_processes", "train.process_id",
                     "train.init_timeout_s", "train.heartbeat_timeout_s")


def check_identity(config: ml_collections.ConfigDict, workdir) -> list[str]:
  """Compares `config` with the one saved in an existing `workdir` before anything is written.

  Returns the changed reschedule fields (allowed); raises ConfigError naming the fields that make it
  another run."""
  import pathlib  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(workdir).expanduser() / "config.json"
  if not path.exists() and not (path.parent / "checkpoints").is_dir():
    return []
  raw, source = config_lib.saved_run_config(path.parent)
  if raw is None:
    if not path.exists():
      return []  # a folder with no record yet (e.g. a kill before the first write)
    raise config_lib.ConfigError(f"{source}, and no checkpoint holds a copy; this workdir's record "
                                 "is damaged: use a new --workdir.")
  if source != str(path):
    logging.warning("%s: damaged; its config recovered from checkpoint %s", path, source)
  saved = dict(config_lib._walk(ml_collections.ConfigDict(raw)))  # pylint: disable=protected-access
  new = dict(config_lib._walk(config))  # pylint: disable=protected-access
  # A field newer than the saved run counts as unchanged while it keeps its default.
  defaults = dict(config_lib._walk(config_lib.base_config()))  # pylint: disable=protected-access
  saved = {**{k: defaults[k] for k in new if k not in saved and k in defaults}, **saved}
  norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v
  changed = sorted(k for k in set(saved) | set(new) if norm(saved.get(k)) != norm(new.get(k)))
  identity = [k for k in changed if k not in RESCHEDULE_FIELDS]
  if identity:
    shown = ", ".join(f"{k} ({saved.get(k)!r} -> {new.get(k)!r})" for k in identity[:4])
    more = f" and {len(identity) - 4} more" if len(identity) > 4 else ""
    raise config_lib.ConfigError(
        f"--workdir={workdir} holds another run: {shown}{more} differ from its config.json; use a "
        "new --workdir for a new run (only training length, logging, checkpoint and worker fields "
        "may change when resuming).")
  return [k for k in changed if k in RESCHEDULE_FIELDS]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Validates `config`, prepares the data under `workdir`, trains, evaluates; returns a summary."""
  config_lib.validate(config)
  rescheduled = check_identity(config, workdir)
  if config.train.distributed:
    distributed.initialize(config.train)
  primary = distributed.is_primary()
  work = config_lib.prepare_workdir(workdir, probe=f".write_test_{jax.process_index()}")
  if rescheduled:
    logging.info("resuming %s with changed %s", work, ", ".join(rescheduled))
  logging.info("devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
               jax.process_count())
  if primary:  # one writer for the shared files; the others wait for them
    config_lib.write_run_config(work, config.to_json_best_effort(indent=1))
    cases = dataset.prepare(config.data.to_dict(), work / "data", seed=config.seed,
                            log=logging.info, keep_scans=augment.keeps_scans(config))
  distributed.barrier("data prepared")
  if not primary:
    cases = dataset.load_index(work / "data")
  counts = {s: sum(c.split == s for c in cases) for s in ("train", "val", "test")}
  logging.info("data: %d cases, split %s", len(cases), counts)
  if not counts["val"] and not counts["test"]:
    real = [c for c in cases if not c.is_phantom] or cases
    logging.warning("data: all %d case(s) used for training: no validation, no best/ checkpoint "
                    "and no held-out report (add cases, or set config.data.split / test_cases)",
                    len(real))
  summary = {"cases": len(cases), "split": counts}
  if config.preview and primary:
    shown = {c.case_id: np.asarray(c.load()) for c in cases[:4]}
    png = viz.save_slices_png(shown, work / "preview" / "data.png",
                              title=f"prepared data (window {config.data.hu_min:g}..."
                                    f"{config.data.hu_max:g} HU -> [0, 1])", vmax=0.35)
    logging.info("preview: %s", png)
    summary["preview"] = str(png)
  from cvaa_jax.train import loop  # pylint: disable=g-import-not-at-top
  summary["train"] = loop.train_and_evaluate(config, work, cases)
  if primary:
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
  return summary
