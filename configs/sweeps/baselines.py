"""CVAA-GAN against the baselines at demo size, each run one field away from configs/demo.py.

  python -m cvaa_jax.sweep --config=configs/sweeps/baselines.py --workdir=runs/sweep_baselines
"""


def get_sweep():
  return {
      "base": "configs/demo.py",
      "runs": [{"model.name": "cvaa_gan"}, {"model.name": "x2ct_gan"}, {"model.name": "3dcnn"},
               {"model.name": "psr_light"}],
  }
