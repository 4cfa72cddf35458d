"""`run(config, workdir)`: everything `launch.py` does, importable from notebooks.

Stages so far: validate the config, prepare the dataset (cached deterministic preprocessing and the
patient split), write a preview figure. Later stages (training, evaluation) append here.
"""

from __future__ import annotations

import json
import pathlib

import ml_collections
import numpy as np
from absl import logging

from cvaa_jax import config as config_lib
from cvaa_jax import viz
from cvaa_jax.data import dataset


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Validates `config`, prepares the data under `workdir`, and returns a summary dict."""
  config_lib.validate(config)
  work = config_lib.prepare_workdir(workdir)
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
  (work / "summary.json").write_text(json.dumps(summary, indent=1))
  return summary
