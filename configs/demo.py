"""The embedded default: procedural lumbar phantoms, CPU-sized, no download.

  python launch.py --config=configs/demo.py --workdir=runs/demo

48 phantom patients at 32^3 with 8 mm voxels (the paper's 256 mm field of view at a quarter of its
resolution), cone-beam DRRs rendered in the step, a slimmer CVAA-GAN. Finishes in under 10 minutes
on 2 CPU cores; docs/training.md states what it reaches against the mean-volume baseline.
"""

from cvaa_jax.config import base_config


def get_config():
  c = base_config()
  c.data.source = "phantom"
  c.data.num_phantoms = 48
  c.data.size = 32
  c.data.spacing_mm = 8.0
  c.model.levels = 2
  c.model.base_channels = 8
  c.model.max_channels = 32
  c.model.base_channels_3d = 8
  c.model.max_channels_3d = 16
  c.model.growth_rate = 8
  c.model.dense_layers = 2
  c.model.attn_kernel = 5
  c.model.disc_channels = 8
  c.model.disc_layers = 2
  c.train.batch_size = 4
  c.train.num_steps = 300
  c.train.learning_rate = 1e-3
  c.train.log_every = 25
  c.train.eval_every = 150
  c.train.checkpoint_every = 150
  c.train.decay_start = 0.7
  c.train.ema_decay = 0.99
  return c
