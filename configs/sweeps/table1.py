"""Table I at demo size: PSR (light), 3DCNN, X2CT-GAN (as published), CVAA-GAN with each fusion, 3 seeds.

  python -m cvaa_jax.sweep --config=configs/sweeps/table1.py --workdir=runs/table1

Every run is configs/demo.py (32^3 x 8 mm phantoms) with one model field changed and a seed, for
150 steps (half the demo's: the published X2CT-GAN alone takes about 4 s a step on 2 CPU cores). The seed is the run's whole randomness: phantom patients, initialisation, batch order. Seeds
are the outer loop, so an interrupted sweep holds whole seeds of the table. `results_seeds.md` gives
mean +- std over the seeds of each method's held-out mean. PSR is `psr_light`: the published
network (`psr`, 589 M parameters, models/psr.py) needs volumes of 64^3 or more.
"""

METHODS = (
    {"model.name": "psr_light"},
    {"model.name": "3dcnn"},
    {"model.name": "x2ct_gan"},
    {"model.name": "cvaa_gan", "model.fusion": "add"},
    {"model.name": "cvaa_gan", "model.fusion": "concat"},
    {"model.name": "cvaa_gan", "model.fusion": "vaa"},
    {"model.name": "cvaa_gan", "model.fusion": "cvaa"},
)
SEEDS = (0, 1, 2)


def get_sweep():
  return {
      "base": "configs/demo.py",
      # The same steps for every method; one validation, at the end.
      "overrides": {"train.num_steps": 150, "train.eval_every": 150, "train.checkpoint_every": 75,
                    "preview": False},
      "runs": [{**m, "seed": s} for s in SEEDS for m in METHODS],
  }
