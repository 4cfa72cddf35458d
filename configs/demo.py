"""The embedded default: procedural lumbar phantoms, small enough for a CPU, no download.

  python launch.py --config=configs/demo.py --workdir=runs/demo

24 phantom patients at 64^3 with 4 mm voxels (the paper's 256 mm field of view at half resolution).
"""

from cvaa_jax.config import base_config


def get_config():
  c = base_config()
  c.data.source = "phantom"
  c.data.num_phantoms = 24
  c.data.size = 64
  c.data.spacing_mm = 4.0
  c.train.batch_size = 4
  c.train.num_epochs = 20
  return c
