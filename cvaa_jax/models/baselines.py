"""The methods CVAA-GAN compares against, with the generators' input/output contract.

Each docstring says what follows the original paper and what is simplified. All take the shared
`GeneratorConfig`; fields a baseline has no use for (e.g. `fusion`) are ignored.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cvaa_jax.models import projection
from cvaa_jax.models.densenet import DenseEncoder2D
from cvaa_jax.models.generator import GeneratorConfig, ViewLift, as_image
from cvaa_jax.models.layers import HEAD_BIAS, Conv3D, ConvBlock2D, ConvBlock3D, UpConv3D


class X2CTLightGenerator(nnx.Module):
  """A light X2CT-GAN-style generator (`x2ct_gan_light`): X2CT-GAN's ideas at this package's
  configurable widths, for CPU-sized experiments and tests. The published architecture, at its
  own widths, is `x2ct_gan` (models/x2ct.py).

  Matched: one DenseNet encoder per view; "connection A": a fully connected bottleneck from each
  view's deepest 2D features to a 3D cube; "connection B": 2D->3D skip connections at every scale
  (features repeated along the view's rays, here via the shared back-projection); views fused by
  averaging at every decoder scale ("connection C"); up-convolutions; instance norm.
  Simplified: one shared decoder fed the average of the two views at each scale instead of two view
  decoders averaged afterwards; the FC bottleneck runs on a 16-channel reduction of the deepest map
  (the full FC at 128^3 would hold ~10^9 weights).
  """

  def __init__(self, cfg: GeneratorConfig, bottleneck_channels: int = 16, *, rngs: nnx.Rngs):
    self.cfg = cfg
    c2, c3 = cfg.ch2d, cfg.ch3d
    top, s = cfg.levels, cfg.size // 2 ** cfg.levels
    self.encoders = nnx.List([DenseEncoder2D(1, c2, cfg.dense_layers, cfg.growth_rate, rngs=rngs)
                              for _ in range(2)])
    self.squeeze = nnx.List([nnx.Conv(c2[top], bottleneck_channels, (1, 1), rngs=rngs)
                             for _ in range(2)])
    self.fc = nnx.List([nnx.Linear(s * s * bottleneck_channels, s ** 3 * c3[top], rngs=rngs)
                        for _ in range(2)])
    self.skips = nnx.List([nnx.List([ViewLift(c2[l], c3[l], cfg.views[v], rngs=rngs)
                                     for l in range(top)]) for v in range(2)])
    self.deep_block = ConvBlock3D(c3[top], c3[top], rngs=rngs)
    self.ups, self.blocks, self.head = _decoder(c3, top, rngs, skip_concat=True)

  def __call__(self, frontal, lateral, geometry=None):
    dt = jnp.dtype(self.cfg.dtype)
    top, s, c_top = self.cfg.levels, self.cfg.size // 2 ** self.cfg.levels, self.cfg.ch3d[-1]
    feats = [self.encoders[v](as_image(x, dt)) for v, x in enumerate((frontal, lateral))]
    cubes = []
    for v in range(2):
      z = jax.nn.relu(self.squeeze[v](feats[v][top]))
      cubes.append(jax.nn.relu(self.fc[v](z.reshape(z.shape[0], -1))).reshape(-1, s, s, s, c_top))
    d = self.deep_block((cubes[0] + cubes[1]) / 2)
    for i, l in enumerate(range(top - 1, -1, -1)):
      skip = (self.skips[0][l](feats[0][l], projection.view_inv_sid(geometry, 0)) +
              self.skips[1][l](feats[1][l], projection.view_inv_sid(geometry, 1))) / 2
      d = self.blocks[i](jnp.concatenate([self.ups[i](d), skip], -1))
    return jax.nn.sigmoid(self.head(d).astype(jnp.float32))[..., 0], {}


def _channels_to_depth(x: jax.Array, depth: int, axis: int) -> jax.Array:
  """(B, R, C, depth * ch) image features -> (B, X, Y, Z, ch) with the new depth on world `axis`
  (1 = y for frontal input), using the frontal view's row/column conventions (R = -z, C = -x)."""
  b, r, c, dc = x.shape
  v = x.reshape(b, r, c, depth, dc // depth)  # (B, R, C, D, ch)
  v = jnp.flip(v, axis=(1, 2))  # rows -> +z, columns -> +x (AP convention)
  v = v.transpose(0, 2, 3, 1, 4)  # (B, x, y=D, z, ch)
  return v


def _strided_encoder(in_ch: int, c2, levels: int, rngs: nnx.Rngs):
  """(stem, downs) of the plain 2D encoders of 3DCNN and PSR: a 3x3 block, then one stride-2 k4
  block per level."""
  stem = ConvBlock2D(in_ch, c2[0], 3, rngs=rngs)
  downs = nnx.List([ConvBlock2D(c2[l - 1], c2[l], 4, stride=2, rngs=rngs)
                    for l in range(1, levels + 1)])
  return stem, downs


def _decoder(c3, levels: int, rngs: nnx.Rngs, skip_concat: bool):
  """Deepest first: one UpConv3D and one ConvBlock3D per level (input doubled where a skip is
  concatenated), then the 1x1 output head."""
  ups = nnx.List([UpConv3D(c3[l + 1], c3[l], rngs=rngs) for l in range(levels - 1, -1, -1)])
  blocks = nnx.List([ConvBlock3D((2 if skip_concat else 1) * c3[l], c3[l], rngs=rngs)
                     for l in range(levels - 1, -1, -1)])
  return ups, blocks, Conv3D(c3[0], 1, 1, rngs=rngs, bias_init=HEAD_BIAS)


class CNN3DGenerator(nnx.Module):
  """The 2D-encoder / 3D-decoder network of Henzler et al. (2018, "Single-image tomography: 3D
  volumes from 2D cranial X-rays"), fed with both views.

  Matched: a 2D convolutional encoder whose deepest feature channels are reshaped into depth
  (channels-to-depth 2D->3D), a 3D up-convolutional decoder, and 2D->3D skip connections that repeat
  encoder features along the depth axis. Adapted: the two views enter as two input channels (the
  original is single-view), and skips are repeated along the frontal view's rays. Not matched:
  layer widths and depths follow the shared config (`model.*channels*`, `model.levels`), not the
  paper's, whose layer table was not available to check against (no parameter-count test, unlike
  `x2ct_gan` and `psr`).
  """

  def __init__(self, cfg: GeneratorConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    c2, c3 = cfg.ch2d, cfg.ch3d
    top, s = cfg.levels, cfg.size // 2 ** cfg.levels
    self.stem, self.downs = _strided_encoder(2, c2, top, rngs)
    self.to_depth = nnx.Conv(c2[top], s * c3[top], (1, 1), rngs=rngs)
    self.skips = nnx.List([ViewLift(c2[l], c3[l], cfg.views[0], rngs=rngs) for l in range(top)])
    self.ups, self.blocks, self.head = _decoder(c3, top, rngs, skip_concat=True)

  def __call__(self, frontal, lateral, geometry=None):
    dt = jnp.dtype(self.cfg.dtype)
    top, s = self.cfg.levels, self.cfg.size // 2 ** self.cfg.levels
    x = jnp.concatenate([as_image(frontal, dt), as_image(lateral, dt)], -1)
    feats = [self.stem(x)]
    for down in self.downs:
      feats.append(down(feats[-1]))
    d = _channels_to_depth(self.to_depth(feats[top]), s, axis=1)
    for i, l in enumerate(range(top - 1, -1, -1)):
      skip = self.skips[l](feats[l], projection.view_inv_sid(geometry, 0))
      d = self.blocks[i](jnp.concatenate([self.ups[i](d), skip], -1))
    return jax.nn.sigmoid(self.head(d).astype(jnp.float32))[..., 0], {}


class PSRLightGenerator(nnx.Module):
  """A light PSR (`psr_light`; Shen, Zhao and Xing, Nature BME 2019), single view, at the shared
  config's widths for CPU-sized runs and tests. The published network (589 M parameters at
  128^3) is `psr` (models/psr.py).

  Matched: a 2D representation network (strided convolutions with residual refinement), a
  feature-to-volume transformation (1x1 convolution, then feature channels reshaped into depth) and a
  3D generation network of up-convolutions and 3D convolutions, without skip connections; only the
  frontal view is used (the lateral input is ignored). Simplified: fewer residual blocks and instance
  norm throughout; widths follow the shared config.
  """

  def __init__(self, cfg: GeneratorConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    c2, c3 = cfg.ch2d, cfg.ch3d
    top, s = cfg.levels, cfg.size // 2 ** cfg.levels
    self.stem, self.downs = _strided_encoder(1, c2, top, rngs)
    self.res = nnx.List([ConvBlock2D(c2[l], c2[l], 3, rngs=rngs) for l in range(1, top + 1)])
    self.transform = nnx.Conv(c2[top], s * c3[top], (1, 1), rngs=rngs)
    self.ups, self.blocks, self.head = _decoder(c3, top, rngs, skip_concat=False)

  def __call__(self, frontal, lateral, geometry=None):
    del lateral, geometry  # single-view method; its channels-to-depth lifting has no geometry
    dt = jnp.dtype(self.cfg.dtype)
    s = self.cfg.size // 2 ** self.cfg.levels
    x = self.stem(as_image(frontal, dt))
    for down, res in zip(self.downs, self.res):
      x = down(x)
      x = x + res(x)
    d = _channels_to_depth(self.transform(x), s, axis=1)
    for up, block in zip(self.ups, self.blocks):
      d = block(up(d))
    return jax.nn.sigmoid(self.head(d).astype(jnp.float32))[..., 0], {}
