"""DenseNet-style 2D encoder (Huang et al. 2017, as X2CT-GAN and CVAA-GAN use it), one output per
scale: level 0 at full resolution, level l at 1/2^l."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cvaa_jax.models.layers import ConvBlock2D, InstanceNorm


class DenseLayer(nnx.Module):
  """norm-ReLU-conv1x1 (bottleneck, 4 * growth) then norm-ReLU-conv3x3 (growth); output concatenated."""

  def __init__(self, in_ch: int, growth: int, *, rngs: nnx.Rngs):
    self.norm1 = InstanceNorm(in_ch)
    self.conv1 = nnx.Conv(in_ch, 4 * growth, (1, 1), use_bias=False, rngs=rngs)
    self.norm2 = InstanceNorm(4 * growth)
    self.conv2 = nnx.Conv(4 * growth, growth, (3, 3), padding="SAME", use_bias=False, rngs=rngs)

  def __call__(self, x):
    y = self.conv1(jax.nn.relu(self.norm1(x)))
    y = self.conv2(jax.nn.relu(self.norm2(y)))
    return jnp.concatenate([x, y], axis=-1)


class DenseBlock(nnx.Module):
  def __init__(self, in_ch: int, layers: int, growth: int, *, rngs: nnx.Rngs):
    self.layers = nnx.List([DenseLayer(in_ch + i * growth, growth, rngs=rngs)
                            for i in range(layers)])
    self.out_ch = in_ch + layers * growth

  def __call__(self, x):
    for layer in self.layers:
      x = layer(x)
    return x


class Transition(nnx.Module):
  """norm-ReLU-conv1x1 to `out_ch`, then 2x2 average pooling (halves H, W)."""

  def __init__(self, in_ch: int, out_ch: int, *, rngs: nnx.Rngs):
    self.norm = InstanceNorm(in_ch)
    self.conv = nnx.Conv(in_ch, out_ch, (1, 1), use_bias=False, rngs=rngs)

  def __call__(self, x):
    y = self.conv(jax.nn.relu(self.norm(x)))
    return nnx.avg_pool(y, (2, 2), strides=(2, 2))


class DenseEncoder2D(nnx.Module):
  """Stem at full resolution, then per level a transition (down x2) and a dense block.

  Returns a list of `levels + 1` feature maps with channels `channels[l]` (a 1x1 projection after
  each dense block sets them, so the decoder's widths do not depend on the growth rate).
  """

  def __init__(self, in_ch: int, channels, layers_per_block: int = 4, growth: int = 16, *,
               rngs: nnx.Rngs):
    self.stem = ConvBlock2D(in_ch, channels[0], 3, rngs=rngs)
    self.stem2 = ConvBlock2D(channels[0], channels[0], 3, rngs=rngs)
    trans, blocks, projs = [], [], []
    for l in range(1, len(channels)):
      trans.append(Transition(channels[l - 1], channels[l], rngs=rngs))
      block = DenseBlock(channels[l], layers_per_block, growth, rngs=rngs)
      blocks.append(block)
      projs.append(ConvBlock2D(block.out_ch, channels[l], 1, rngs=rngs))
    self.transitions = nnx.List(trans)
    self.blocks = nnx.List(blocks)
    self.projections = nnx.List(projs)

  def __call__(self, x):
    x = self.stem2(self.stem(x))
    feats = [x]
    for t, blk, proj in zip(self.transitions, self.blocks, self.projections):
      x = proj(blk(t(x)))
      feats.append(x)
    return feats
