"""Conditional Patch-3D discriminator (PatchGAN in 3D, conditioned on both X-rays)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cvaa_jax.models import projection
from cvaa_jax.models.generator import GeneratorConfig, as_image
from cvaa_jax.models.layers import Conv3D, InstanceNorm, remat_if


def _input_stage(disc, frontal, lateral, volume, geometry):
  """Full resolution: each view back-projected and convolved, concatenated with the CT, then the
  first stride-2 conv (no norm)."""
  dt = jnp.dtype(disc.cfg.dtype)
  conds = [jax.nn.leaky_relu(disc.cond[v](projection.expand(
      as_image(x, dt), disc.views[v], inv_sid=projection.view_inv_sid(geometry, v))), 0.2)
           for v, x in enumerate((frontal, lateral))]
  x = jnp.concatenate([volume[..., None].astype(dt)] + conds, -1)
  return jax.nn.leaky_relu(disc.convs[0](x), 0.2)


class PatchDiscriminator3D(nnx.Module):
  """Each X-ray is back-projected into the volume (the generator's own 2D->3D lifting) and passed
  through a 3D conv layer; both are concatenated with the CT on channels and scored by a PatchGAN:
  `n_layers` stride-2 k4 convs (LeakyReLU 0.2, instance norm after the first), one stride-1 conv and
  a 1-channel output. Returns (B, S/2^n, S/2^n, S/2^n) raw scores (LSGAN targets 1 real / 0 fake)."""

  def __init__(self, cfg: GeneratorConfig, base_channels: int = 32, n_layers: int = 3,
               cond_channels: int = 4, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.views = cfg.views
    self.cond = nnx.List([Conv3D(1, cond_channels, 3, rngs=rngs) for _ in range(2)])
    ch_in, ch = 1 + 2 * cond_channels, base_channels
    convs, norms = [], []
    for i in range(n_layers):
      convs.append(Conv3D(ch_in, ch, 4, stride=2, padding=1, rngs=rngs))
      norms.append(InstanceNorm(ch) if i > 0 else None)
      ch_in, ch = ch, min(ch * 2, 8 * base_channels)
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    self.penult = Conv3D(ch_in, ch, 3, rngs=rngs)
    self.penult_norm = InstanceNorm(ch)
    self.out = Conv3D(ch, 1, 3, rngs=rngs)

  def __call__(self, frontal, lateral, volume, geometry=None):
    remat = self.cfg.remat_blocks
    # With remat_blocks the full-resolution input stage (back-projection, condition convs, first
    # stride-2 conv) is one recomputed unit, then each further stage.
    x = remat_if(remat, _input_stage)(self, frontal, lateral, volume, geometry)
    for conv, norm in zip(list(self.convs)[1:], list(self.norms)[1:]):
      x = remat_if(remat, lambda c, n, x: jax.nn.leaky_relu(n(c(x)), 0.2))(conv, norm, x)
    x = jax.nn.leaky_relu(self.penult_norm(self.penult(x)), 0.2)
    return self.out(x)[..., 0].astype(jnp.float32)
