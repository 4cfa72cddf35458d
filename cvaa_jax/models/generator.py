"""The CVAA-GAN generator: two DenseNet view encoders, geometric 2D->3D lifting, fused 3D decoder.

Contract shared by every generator (see `registry.py`):
  __call__(frontal, lateral, geometry=None) -> (volume, aux)
  frontal, lateral: (B, S, S) or (B, S, S, 1) normalised DRRs/radiographs in [0, 1], conventions of
  `cvaa_jax.drr.geometry`; geometry: optional (B, 2) per-sample signed inverse source distances
  (frontal, lateral) of the canonical views (`projection` module docstring), None for the config's
  fixed geometry; volume: (B, S, S, S) in [0, 1], RAS; aux: dict of attention maps.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from cvaa_jax.models import projection
from cvaa_jax.models.densenet import DenseEncoder2D
from cvaa_jax.models.fusion import FUSIONS, fused_channels, make_fusion
from cvaa_jax.models.layers import (HEAD_BIAS, Conv3D, ConvBlock3D, channel_schedule, make_up,
                                     remat_if)


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  """Architecture arguments common to all generators (the config's `model` section)."""

  size: int = 128  # X-ray edge = volume edge (S)
  levels: int = 4  # down-sampling steps: deepest features are S / 2^levels
  base_channels: int = 32  # 2D encoder width at full resolution (doubles per level)
  max_channels: int = 256
  base_channels_3d: int = 16  # 3D decoder width at full resolution (doubles per level)
  max_channels_3d: int = 128
  growth_rate: int = 16  # DenseNet growth rate
  dense_layers: int = 4  # layers per dense block
  fusion: str = "cvaa"  # 'add' | 'concat' | 'vaa' | 'cvaa'
  attn_kernel: int = 7  # VAA's attention-logit conv (paper: 7)
  upsample: str = "transpose"  # decoder x2: 'transpose' (paper) | 'resize' (no checkerboard)
  parallel: bool = False  # the input views' beam geometry (must match the DRRs)
  fov_mm: float = 256.0
  sid: float = 750.0
  sdd: float = 1000.0
  dtype: str = "float32"  # compute dtype; parameters stay float32 ('bfloat16' for speed)
  remat_blocks: bool = False  # recompute each 3D block in the backward pass (config.train.remat)

  def __post_init__(self):
    if self.size % (2 ** self.levels):
      raise ValueError(f"model.size ({self.size}) must be divisible by 2^levels "
                       f"({2 ** self.levels}).")
    if self.fusion not in FUSIONS:
      raise ValueError(f"model.fusion {self.fusion!r} is not one of {FUSIONS}.")
    if self.upsample not in ("transpose", "resize"):
      raise ValueError(f"model.upsample {self.upsample!r} is not 'transpose' or 'resize'.")

  @property
  def views(self) -> tuple[projection.ViewSpec, projection.ViewSpec]:
    return projection.views_for(self.parallel, self.fov_mm, self.sid, self.sdd)

  @property
  def ch2d(self):
    return channel_schedule(self.base_channels, self.levels, self.max_channels)

  @property
  def ch3d(self):
    return channel_schedule(self.base_channels_3d, self.levels, self.max_channels_3d)


def as_image(x: jax.Array, dtype) -> jax.Array:
  """(B, S, S) or (B, S, S, 1) -> (B, S, S, 1) in the compute dtype."""
  if x.ndim == 3:
    x = x[..., None]
  return x.astype(dtype)


class ViewLift(nnx.Module):
  """One view at one level: 1x1 channel map (2D), back-projection into the volume, 3D conv block."""

  def __init__(self, in_ch: int, out_ch: int, spec: projection.ViewSpec, *, rngs: nnx.Rngs):
    self.reduce = nnx.Conv(in_ch, out_ch, (1, 1), rngs=rngs)
    self.block = ConvBlock3D(out_ch, out_ch, 3, rngs=rngs)
    self.spec = spec

  def __call__(self, f: jax.Array, inv_sid: jax.Array | None = None) -> jax.Array:
    return self.block(projection.expand(self.reduce(f), self.spec, inv_sid=inv_sid))


def _decoder_level(fusion, block, up, s1, s2, d):
  fused, maps = fusion(s1, s2, d)
  d = block(fused)
  return (d if up is None else up(d)), maps


class CVAAGenerator(nnx.Module):
  """Two encoders (separate weights), lifted per level; decoder: add-fusion at the deepest level,
  then `fusion` per level, conv block, up-convolution; sigmoid output."""

  def __init__(self, cfg: GeneratorConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    c2, c3 = cfg.ch2d, cfg.ch3d
    views = cfg.views
    self.encoders = nnx.List([DenseEncoder2D(1, c2, cfg.dense_layers, cfg.growth_rate, rngs=rngs)
                              for _ in range(2)])
    self.lifts = nnx.List([nnx.List([ViewLift(c2[l], c3[l], views[v], rngs=rngs)
                                     for l in range(cfg.levels + 1)]) for v in range(2)])
    top = cfg.levels
    self.deep_block = ConvBlock3D(c3[top], c3[top], rngs=rngs)
    self.deep_up = make_up(cfg.upsample, c3[top], c3[top - 1], rngs=rngs)
    fusions, blocks, ups = [], [], []
    for l in range(top - 1, -1, -1):
      fusions.append(make_fusion(cfg.fusion, c3[l], c3[l], cfg.attn_kernel, rngs=rngs))
      blocks.append(ConvBlock3D(fused_channels(cfg.fusion, c3[l], c3[l]), c3[l], rngs=rngs))
      ups.append(make_up(cfg.upsample, c3[l], c3[l - 1], rngs=rngs) if l > 0 else None)
    self.fusions = nnx.List(fusions)
    self.blocks = nnx.List(blocks)
    self.ups = nnx.List(ups[:-1])
    self.head = Conv3D(c3[0], 1, 1, rngs=rngs, bias_init=HEAD_BIAS)

  def lift(self, frontal, lateral, geometry=None):
    """Per view, per level 3D features in the common RAS frame: [[level 0..L] for each view]."""
    dt = jnp.dtype(self.cfg.dtype)
    out = []
    for v, x in enumerate((frontal, lateral)):
      feats = self.encoders[v](as_image(x, dt))
      k = projection.view_inv_sid(geometry, v)
      lift = remat_if(self.cfg.remat_blocks, lambda m, f, k: m(f, k))
      out.append([lift(self.lifts[v][l], f, k) for l, f in enumerate(feats)])
    return out

  def __call__(self, frontal: jax.Array, lateral: jax.Array, geometry: jax.Array | None = None):
    (s1, s2) = self.lift(frontal, lateral, geometry)
    top = self.cfg.levels
    remat = self.cfg.remat_blocks
    d = remat_if(remat, lambda blk, up, x: up(blk(x)))(self.deep_block, self.deep_up,
                                                        s1[top] + s2[top])
    aux = {}
    for i, l in enumerate(range(top - 1, -1, -1)):
      up = self.ups[i] if l > 0 else None
      # One decoder level (fusion, conv block, up-sampling) is one rematerialised unit: only its
      # inputs are kept for the backward pass.
      d, maps = remat_if(remat, _decoder_level)(self.fusions[i], self.blocks[i], up, s1[l], s2[l], d)
      aux.update({f"{k}/level{l}": m for k, m in maps.items()})
    out = jax.nn.sigmoid(self.head(d).astype(jnp.float32))[..., 0]
    return out, aux
