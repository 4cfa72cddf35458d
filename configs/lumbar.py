"""The paper's lumbar setup on a folder of the user's CTs.

  python launch.py --config=configs/lumbar.py --config.data.ct_dir=/data/lumbar_ct --workdir=runs/lumbar

2 mm isotropic, 128^3 body-centred crop, HU [-1000, 4096] -> [0, 1], batch 4, 200 epochs, Adam 2e-4
(0.5, 0.99). Variants: `configs/lumbar.py:tiny` shrinks everything (16^3 phantoms) so tests run the
real code in seconds.
"""

from cvaa_jax.config import base_config


def get_config(variant: str = ""):
  c = base_config()
  c.data.source = "ct_dir"
  c.data.ct_dir = ""  # required: --config.data.ct_dir=/path
  if variant == "tiny":
    c.data.source = "phantom"
    c.data.num_phantoms = 6
    c.data.size = 16
    c.data.spacing_mm = 16.0
    c.model.levels = 2
    c.model.base_channels = 8
    c.model.max_channels = 16
    c.model.base_channels_3d = 4
    c.model.max_channels_3d = 8
    c.model.growth_rate = 4
    c.model.dense_layers = 2
    c.model.attn_kernel = 3
    c.model.disc_channels = 4
    c.model.disc_layers = 2
    c.train.batch_size = 2
    c.train.num_steps = 6
    c.train.log_every = 2
    c.train.eval_every = 3
    c.train.checkpoint_every = 2
    c.preview = False
  elif variant:
    raise ValueError(f"configs/lumbar.py: unknown variant {variant!r}; use '' or 'tiny'")
  return c
