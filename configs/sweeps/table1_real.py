"""Table I on the real scans at CPU size: PSR (light), 3DCNN, X2CT-GAN, CVAA-GAN (cvaa and add).

  python -m cvaa_jax.sweep --config=configs/sweeps/table1_real.py --workdir=runs/table1_real

Every run is configs/real64.py:cpu32 (32^3 x 8 mm, few-CT augmentation, 15 % phantoms in training)
on ../shared/data/ct (its 8 usable patients; one abdomen and one chest held out as the test
split, the same two for every method and seed, where the seeded split would change them with the
seed) with one model field changed, for 300 steps (a seventh of
the shipped recipe's 2000: the table compares methods at equal, short training). X2CT-GAN is the
published architecture (models/x2ct.py, its own widths): about 5 s a step at 32^3 on 2 CPU cores,
25 min a run, 78 of the sweep's 113 minutes (benchmarks/RESULTS.md). Override data.ct_dir for
another collection.
"""

import pathlib

CT_DIR = str(pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ct")
METHODS = (
    {"model.name": "psr_light"},
    {"model.name": "3dcnn"},
    {"model.name": "x2ct_gan"},
    {"model.name": "cvaa_gan", "model.fusion": "add"},
    {"model.name": "cvaa_gan", "model.fusion": "cvaa"},
)
SEEDS = (0, 1, 2)


def get_sweep():
  return {
      "base": "configs/real64.py:cpu32",
      "overrides": {"data.ct_dir": CT_DIR, "data.test_cases": ("abdomen_totalseg", "chest_lidc"),
                    "data.split": (1.0, 0.0, 0.0),
                    "train.num_steps": 300, "train.eval_every": 300,
                    "train.checkpoint_every": 150, "preview": False},
      "runs": [{**m, "seed": s} for s in SEEDS for m in METHODS],
  }
