"""The paper's fusion ablation at demo size: add / concat / vaa / cvaa, one field changed per run.

  python -m cvaa_jax.sweep --config=configs/sweeps/fusion.py --workdir=runs/sweep_fusion

Four runs of configs/demo.py (300 steps each, about 8 minutes per run on 2 CPU cores). Add seeds
(`grid: {"model.fusion": [...], "seed": [0, 1, 2]}`) for a mean over seeds.
"""


def get_sweep():
  return {
      "base": "configs/demo.py",
      "overrides": {},
      "grid": {"model.fusion": ["add", "concat", "vaa", "cvaa"]},
  }
