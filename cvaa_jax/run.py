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
from cvaa_jax import viz
from cvaa_jax.data import dataset


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Validates `config`, prepares the data under `workdir`, trains, evaluates; returns a summary."""
  config_lib.validate(config)
  if config.train.distributed:
    jax.distributed.initialize()  # coordinator, process count and id from the environment
  work = config_lib.prepare_workdir(workdir)
  logging.info("devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
               jax.process_count())
  (work / "config.json").write_text(config.to_json_best_effort(indent=1))
  cases = dataset.prepare(config.data.to_dict(), work / "data", seed=config.seed,
                          log=logging.info)
  counts = {s: sum(c.split == s for c in cases) for s in ("train", "val", "test")}
  logging.info("data: %d cases, split %s", len(cases), counts)
  summary = {"cases": len(cases), "split": counts}
  if config.preview:
    shown = {c.case_id: np.asarray(c.load()) for c in cases[:4]}
    png = viz.save_slices_png(shown, work / "preview" / "data.png",
                              title=f"prepared data (window {config.data.hu_min:g}..."
                                    f"{config.data.hu_max:g} HU -> [0, 1])", vmax=0.35)
    logging.info("preview: %s", png)
    summary["preview"] = str(png)
  from cvaa_jax.train import loop  # pylint: disable=g-import-not-at-top
  summary["train"] = loop.train_and_evaluate(config, work, cases)
  (work / "summary.json").write_text(json.dumps(summary, indent=1))
  return summary
