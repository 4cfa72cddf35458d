"""PSR as its authors build it (Shen, Zhao and Xing, "Patient-specific reconstruction of volumetric
computed tomography images from a single projection view via deep learning", Nature BME 2019; the
public code's `ReconNet`, liyues/PatRecon `net.py`), single view.

Structure and widths follow that network; its parameter count is matched exactly at 128^3
(588,591,424 with one input view; tests/models/test_psr.py):
  * representation network: 5 stages, each a 4x4 stride-2 conv (256, 512, 1024, 2048, 4096
    channels; norm + ReLU after it except in the first stage) and a residual unit
    ReLU(x + norm(conv3x3(x))): S^2 -> (S/32)^2 x 4096;
  * transformation module: ReLU(1x1 conv 4096 -> 4096), the channels split into 2048 features x 2
    depth slices, ReLU(1x1x1 conv 2048 -> 2048): a (2, S/32, S/32) x 2048 volume;
  * generation network: five 4x4x4 stride-2 transposed convs (1024, 512, 256, 128, 64 channels,
    the last four each followed by a 3x3x3 conv of the same width), norm + ReLU after each: a
    (64, S, S) x 64 volume; ReLU(1x1x1 conv 64 -> 1), then its 64 depth slices mapped to the S
    output slices by a 1x1 2D convolution. No convolution has a bias.
Differences, stated: batch norm becomes instance norm with learned scale and shift (the same
parameters; this package's step keeps no running statistics, like every model here); the output
is a sigmoid (the code's is linear, trained on [0, 1] targets); the input is this package's
frontal DRR (the lateral view is ignored) and the output depth axis is the frontal view's beam
(y), rows -> +z and columns -> +x as in `baselines._channels_to_depth`. The last 2D stage works on
(S/32)^2 pixels, so instance norm needs S >= 64 (S divisible by 32); `psr_light` (baselines.py) is
the small variant at the shared config's widths for CPU-sized runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cvaa_jax.models.baselines import _channels_to_depth  # pylint: disable=protected-access
from cvaa_jax.models.generator import GeneratorConfig, as_image
from cvaa_jax.models.layers import Conv3D, InstanceNorm

WIDTHS_2D = (256, 512, 1024, 2048, 4096)
WIDTHS_3D = (1024, 512, 256, 128, 64)
DEPTH_SLICES = 2  # the transformation module's split of the deepest channels into depth


def _conv2d(i: int, o: int, k: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
  pad = 1 if k > 1 else 0  # the code's k4 s2 p1, k3 s1 p1 and k1 p0 convolutions
  return nnx.Conv(i, o, (k, k), strides=stride, padding=((pad, pad), (pad, pad)), use_bias=False,
                  rngs=rngs, kernel_init=jax.nn.initializers.he_normal())


class _Stage2D(nnx.Module):
  """[norm, ReLU](conv4x4 s2), then ReLU(x + norm(conv3x3(x)))."""

  def __init__(self, i: int, o: int, first: bool, *, rngs: nnx.Rngs):
    self.down = _conv2d(i, o, 4, 2, rngs)
    self.down_norm = None if first else InstanceNorm(o)
    self.res = _conv2d(o, o, 3, 1, rngs)
    self.res_norm = InstanceNorm(o)

  def __call__(self, x):
    x = self.down(x)
    if self.down_norm is not None:
      x = jax.nn.relu(self.down_norm(x))
    return jax.nn.relu(x + self.res_norm(self.res(x)))


class _Up3D(nnx.Module):
  """ConvTranspose3d(k=4, stride 2, padding 1) + norm + ReLU: doubles every axis."""

  def __init__(self, i: int, o: int, *, rngs: nnx.Rngs):
    init = jax.nn.initializers.he_normal(in_axis=(0, 1, 2, 3), out_axis=4)
    self.kernel = nnx.Param(init(rngs.params(), (4, 4, 4, i, o)))
    self.norm = InstanceNorm(o)

  def __call__(self, x):
    # A transposed conv is the conv of the 2x-dilated input with the flipped taps; padding
    # k - 1 - p = 2 on both sides gives exactly 2n (the kernel here is stored in conv form).
    y = jax.lax.conv_general_dilated(x, self.kernel[...].astype(x.dtype), (1, 1, 1),
                                     [(2, 2)] * 3, lhs_dilation=(2, 2, 2),
                                     dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return jax.nn.relu(self.norm(y))


class PSRGenerator(nnx.Module):
  """PSR's ReconNet (module docstring): frontal X-ray (B, S, S) -> volume (B, S, S, S) in [0, 1]."""

  def __init__(self, cfg: GeneratorConfig, *, rngs: nnx.Rngs):
    if cfg.size % 32 or cfg.size < 64:
      raise ValueError(f"model.name 'psr' is the published 128^3 network: its five stride-2 "
                       f"stages need a size divisible by 32 and >= 64 (got {cfg.size}); use "
                       "'psr_light' for smaller volumes.")
    self.cfg = cfg
    chans = (1,) + WIDTHS_2D
    self.stages = nnx.List([_Stage2D(chans[i], chans[i + 1], i == 0, rngs=rngs)
                            for i in range(len(WIDTHS_2D))])
    deep = WIDTHS_2D[-1]
    self.transform2d = _conv2d(deep, deep, 1, 1, rngs)
    self.transform3d = Conv3D(deep // DEPTH_SLICES, deep // DEPTH_SLICES, 1, rngs=rngs,
                              use_bias=False)
    chans3 = (deep // DEPTH_SLICES,) + WIDTHS_3D
    self.ups = nnx.List([_Up3D(chans3[i], chans3[i + 1], rngs=rngs)
                         for i in range(len(WIDTHS_3D))])
    # After every up-convolution but the first: 3x3x3 conv + norm + ReLU at the same width.
    self.refine_convs = nnx.List([Conv3D(o, o, 3, rngs=rngs, use_bias=False)
                                  for o in WIDTHS_3D[1:]])
    self.refine_norms = nnx.List([InstanceNorm(o) for o in WIDTHS_3D[1:]])
    c = WIDTHS_3D[-1]
    self.to_one = Conv3D(c, 1, 1, rngs=rngs, use_bias=False)
    depth = DEPTH_SLICES * 2 ** len(WIDTHS_3D)
    self.to_slices = _conv2d(depth, cfg.size, 1, 1, rngs)

  def __call__(self, frontal, lateral, geometry=None):
    del lateral, geometry  # a single-view method with a fixed, learned lifting
    x = as_image(frontal, jnp.dtype(self.cfg.dtype))
    for stage in self.stages:
      x = stage(x)
    x = jax.nn.relu(self.transform2d(x))  # (B, s, s, 4096)
    b, s = x.shape[0], x.shape[1]
    # The code's view(-1, 2048, 2, s, s) of NCHW: channel c = 2 * feature + depth.
    v = x.reshape(b, s, s, -1, DEPTH_SLICES).transpose(0, 4, 1, 2, 3)  # (B, depth, rows, cols, F)
    v = jax.nn.relu(self.transform3d(v))
    v = self.ups[0](v)
    for up, conv, norm in zip(list(self.ups)[1:], self.refine_convs, self.refine_norms):
      v = jax.nn.relu(norm(conv(up(v))))
    v = jax.nn.relu(self.to_one(v))[..., 0]  # (B, 64, S, S): depth slices first
    img = self.to_slices(v.transpose(0, 2, 3, 1))  # (B, rows, cols, S output slices)
    return jax.nn.sigmoid(_channels_to_depth(img.astype(jnp.float32), self.cfg.size,
                                             axis=1))[..., 0], {}
