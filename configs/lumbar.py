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
    c.data.num_phantoms = 4
    c.data.size = 16
    c.data.spacing_mm = 16.0
    c.train.batch_size = 2
    c.train.num_epochs = 1
    c.preview = False
  elif variant:
    raise ValueError(f"configs/lumbar.py: unknown variant {variant!r}; use '' or 'tiny'")
  return c
