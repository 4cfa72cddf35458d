"""X2CT-GAN's biplanar generator as its authors build it (Ying et al., CVPR 2019; the public code's
`multiview_network_denseUNetFuse_transposed` with its `d2_multiview2500` settings).

Structure, widths and depths follow that model; parameter counts match it exactly at 64^3
(41,526,707) and 128^3 (61,740,467) (tests/models/test_x2ct.py):
  * one encoder-decoder branch per view. Encoder: 7x7 conv (reflection padding), then 5 levels of
    [norm, ReLU, 3x3 stride-2 conv, dense block of (6, 12, 24, 16, 6) layers (bottleneck 4 x growth
    32, 1x1 then 3x3, pre-activation), norm, ReLU, 1x1 conv halving the channels]; the last level
    ends in a global average pool instead (704 features);
  * connection A: a fully connected layer from those 704 features to a (S/32)^3 x 256 cube;
  * connection B: at each of the 5 encoder scales a 1x1 2D conv to (16, 16, 32, 64, 128) channels,
    lifted into 3D along the view's rays, then a 3x3x3 conv;
  * each branch decoder (per level: 3x3x3 conv compressing the concatenated skip, (2, 2, 2, 2, 1)
    conv blocks, a stride-2 3x3x3 transposed conv) and a fused decoder ((1, 1, 1, 1, 1) blocks);
    connection C: at every scale the two branches' features are averaged, the average feeds the
    fused decoder (concatenated with its own features) and goes back into both branches;
  * instance norm without learned affine parameters (PyTorch's default), biases on every conv;
    7x7x7 output convs (the branch outputs are built, as in that code, but the loss there weighs
    them 0, so only the fused output is computed here).
Differences, stated: the 2D->3D lift uses this package's geometry-aware back-projection
(`projection.expand`) in the common RAS frame, which for parallel views is the same repeat along
the rays and makes the code's axis permutations unnecessary; the FC's Dropout(0.5) is left out (the
generator is deterministic here); the output is a sigmoid like every model here (the code uses ReLU
on a [0, 1] target); inputs are one-channel X-rays at the volume's size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cvaa_jax.models import projection
from cvaa_jax.models.generator import GeneratorConfig, as_image
from cvaa_jax.models.layers import HEAD_BIAS, Conv3D, InstanceNorm

NGF = 64
GROWTH = 32
BOTTLENECK = 4  # DenseNet bn_size
ENCODER_BLOCKS = (6, 12, 24, 16, 6)
DECODER_CHANNELS = (16, 16, 32, 64, 128, 256)
BRANCH_BLOCKS = (1, 2, 2, 2, 2, 0)
FUSED_BLOCKS = (1, 1, 1, 1, 1, 0)


def _conv2d(i, o, k, rngs, stride=1, padding="SAME"):
  return nnx.Conv(i, o, (k, k), strides=stride, padding=padding, use_bias=True, rngs=rngs)


class _DenseLayer(nnx.Module):
  def __init__(self, in_ch: int, *, rngs: nnx.Rngs):
    self.n1, self.n2 = InstanceNorm(in_ch, affine=False), InstanceNorm(BOTTLENECK * GROWTH,
                                                                       affine=False)
    self.c1 = _conv2d(in_ch, BOTTLENECK * GROWTH, 1, rngs)
    self.c2 = _conv2d(BOTTLENECK * GROWTH, GROWTH, 3, rngs)

  def __call__(self, x):
    y = self.c2(jax.nn.relu(self.n2(self.c1(jax.nn.relu(self.n1(x))))))
    return jnp.concatenate([x, y], -1)


class _EncoderLevel(nnx.Module):
  """norm, ReLU, stride-2 3x3 conv, dense block, then a halving 1x1 conv or a global pool."""

  def __init__(self, in_ch: int, layers: int, last: bool, *, rngs: nnx.Rngs):
    self.norm = InstanceNorm(in_ch, affine=False)
    self.down = _conv2d(in_ch, in_ch, 3, rngs, stride=2, padding=((1, 1), (1, 1)))
    self.dense = nnx.List([_DenseLayer(in_ch + i * GROWTH, rngs=rngs) for i in range(layers)])
    ch = in_ch + layers * GROWTH
    self.last = last
    self.out_ch = ch if last else ch // 2
    if not last:
      self.t_norm = InstanceNorm(ch, affine=False)
      self.t_conv = _conv2d(ch, ch // 2, 1, rngs)

  def __call__(self, x):
    x = self.down(jax.nn.relu(self.norm(x)))
    for layer in self.dense:
      x = layer(x)
    if self.last:
      return x.mean(axis=(1, 2))
    return self.t_conv(jax.nn.relu(self.t_norm(x)))


class _Block3D(nnx.Module):
  """3x3x3 conv (bias) + instance norm + ReLU."""

  def __init__(self, i: int, o: int, *, rngs: nnx.Rngs):
    self.conv = Conv3D(i, o, 3, rngs=rngs)
    self.norm = InstanceNorm(o, affine=False)

  def __call__(self, x):
    return jax.nn.relu(self.norm(self.conv(x)))


class _Up3D(nnx.Module):
  """ConvTranspose3d(k=3, stride 2, padding 1, output_padding 1) + norm + ReLU: doubles X, Y, Z."""

  def __init__(self, i: int, o: int, *, rngs: nnx.Rngs):
    init = jax.nn.initializers.he_normal(in_axis=(0, 1, 2, 3), out_axis=4)
    self.kernel = nnx.Param(init(rngs.params(), (3, 3, 3, i, o)))
    self.bias = nnx.Param(jnp.zeros((o,)))
    self.norm = InstanceNorm(o, affine=False)

  def __call__(self, x):
    # A transposed conv is the conv of the 2x-dilated input; padding (1, 2) gives exactly 2n.
    y = jax.lax.conv_general_dilated(x, self.kernel[...].astype(x.dtype), (1, 1, 1),
                                     [(1, 2)] * 3, lhs_dilation=(2, 2, 2),
                                     dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return jax.nn.relu(self.norm(y + self.bias[...].astype(x.dtype)))


class _DecoderLevel(nnx.Module):
  """Level `index` of a decoder: [compress 2c -> c], `blocks` c -> c, up-convolution c -> out."""

  def __init__(self, index: int, blocks: int, *, rngs: nnx.Rngs):
    c, out = DECODER_CHANNELS[index + 1], DECODER_CHANNELS[index]
    deepest = index == len(DECODER_CHANNELS) - 2
    self.compress = None if deepest else _Block3D(2 * c, c, rngs=rngs)
    self.blocks = nnx.List([_Block3D(c, c, rngs=rngs) for _ in range(0 if deepest else blocks)])
    self.up = _Up3D(c, out, rngs=rngs)

  def __call__(self, x, compressed: bool = False):
    if self.compress is not None and not compressed:
      x = self.compress(x)
    for b in self.blocks:
      x = b(x)
    return self.up(x)


class _LastLevel(nnx.Module):
  """Full resolution: compress 2 x 16 -> 16, blocks, 7x7x7 output conv."""

  def __init__(self, blocks: int, *, rngs: nnx.Rngs):
    c = DECODER_CHANNELS[0]
    self.compress = _Block3D(2 * c, c, rngs=rngs)
    self.blocks = nnx.List([_Block3D(c, c, rngs=rngs) for _ in range(blocks)])
    self.head = Conv3D(c, 1, 7, rngs=rngs, bias_init=HEAD_BIAS)

  def __call__(self, x, compressed: bool = False):
    if not compressed:
      x = self.compress(x)
    for b in self.blocks:
      x = b(x)
    return self.head(x)


class _Link(nnx.Module):
  """Connection B at one scale: 1x1 2D conv + norm + ReLU, lift along the rays, 3D block."""

  def __init__(self, in_ch: int, out_ch: int, spec: projection.ViewSpec, *, rngs: nnx.Rngs):
    self.reduce = _conv2d(in_ch, out_ch, 1, rngs)
    self.norm = InstanceNorm(out_ch, affine=False)
    self.block = _Block3D(out_ch, out_ch, rngs=rngs)
    self.spec = spec

  def __call__(self, f, inv_sid=None):
    f = jax.nn.relu(self.norm(self.reduce(f)))
    return self.block(projection.expand(f, self.spec, inv_sid=inv_sid))


class _Branch(nnx.Module):
  """One view's encoder, links, FC bottleneck and decoder levels."""

  def __init__(self, size: int, spec: projection.ViewSpec, *, rngs: nnx.Rngs):
    self.stem = _conv2d(1, NGF, 7, rngs, padding="VALID")
    self.stem_norm = InstanceNorm(NGF, affine=False)
    chans, levels = [NGF], []
    for i, layers in enumerate(ENCODER_BLOCKS):
      levels.append(_EncoderLevel(chans[-1], layers, last=i == len(ENCODER_BLOCKS) - 1,
                                  rngs=rngs))
      chans.append(levels[-1].out_ch)
    self.levels = nnx.List(levels)
    self.links = nnx.List([_Link(chans[i], DECODER_CHANNELS[i], spec, rngs=rngs)
                           for i in range(len(ENCODER_BLOCKS))])
    self.begin = size // 2 ** len(ENCODER_BLOCKS)
    self.fc = nnx.Linear(chans[-1], self.begin ** 3 * DECODER_CHANNELS[-1], rngs=rngs)
    self.decoder = nnx.List([_DecoderLevel(i, BRANCH_BLOCKS[i + 1], rngs=rngs)
                             for i in range(len(ENCODER_BLOCKS))])
    self.last = _LastLevel(BRANCH_BLOCKS[0], rngs=rngs)

  def encode(self, image, inv_sid=None):
    """(skips at each scale, the FC cube)."""
    x = jnp.pad(image, ((0, 0), (3, 3), (3, 3), (0, 0)), mode="reflect")
    x = jax.nn.relu(self.stem_norm(self.stem(x)))
    skips = []
    for link, level in zip(self.links, self.levels):
      skips.append(link(x, inv_sid))
      x = level(x)
    b = self.begin
    cube = jax.nn.relu(self.fc(x)).reshape(x.shape[0], b, b, b, DECODER_CHANNELS[-1])
    return skips, cube


class X2CTGenerator(nnx.Module):
  """X2CT-GAN's generator (module docstring). Uses only `cfg.size` (a multiple of 32), `cfg.views`
  and `cfg.dtype`: its widths and depths are the published ones, whatever the config's."""

  def __init__(self, cfg: GeneratorConfig, *, rngs: nnx.Rngs):
    n = len(ENCODER_BLOCKS)
    if cfg.size % 2 ** n:
      raise ValueError(f"x2ct_gan downsamples {n} times: data.size ({cfg.size}) must be a "
                       f"multiple of {2 ** n} (use x2ct_gan_light for smaller grids).")
    self.cfg = cfg
    self.branches = nnx.List([_Branch(cfg.size, cfg.views[v], rngs=rngs) for v in range(2)])
    self.fused = nnx.List([_DecoderLevel(i, FUSED_BLOCKS[i + 1], rngs=rngs) for i in range(n)])
    self.fused_last = _LastLevel(FUSED_BLOCKS[0], rngs=rngs)

  def __call__(self, frontal, lateral, geometry=None):
    dt = jnp.dtype(self.cfg.dtype)
    enc = [br.encode(as_image(x, dt), projection.view_inv_sid(geometry, v))
           for v, (br, x) in enumerate(zip(self.branches, (frontal, lateral)))]
    (skips1, v1), (skips2, v2) = enc
    n = len(ENCODER_BLOCKS)
    fused = None
    for i in range(n - 1, -2, -1):
      if i < n - 1:  # each branch compresses its features concatenated with its skip
        v1 = self.branches[0].decoder[i].compress(jnp.concatenate([v1, skips1[i + 1]], -1)) \
            if i >= 0 else self.branches[0].last.compress(jnp.concatenate([v1, skips1[0]], -1))
        v2 = self.branches[1].decoder[i].compress(jnp.concatenate([v2, skips2[i + 1]], -1)) \
            if i >= 0 else self.branches[1].last.compress(jnp.concatenate([v2, skips2[0]], -1))
      avg = (v1 + v2) / 2  # connection C
      inp = avg if fused is None else jnp.concatenate([avg, fused], -1)
      if i >= 0:
        fused = self.fused[i](inp)
        v1 = self.branches[0].decoder[i](avg, compressed=True)
        v2 = self.branches[1].decoder[i](avg, compressed=True)
      else:  # the branches' own outputs have loss weight 0 in X2CT-GAN's setup: not computed
        out = self.fused_last(inp)
    return jax.nn.sigmoid(out.astype(jnp.float32))[..., 0], {}
