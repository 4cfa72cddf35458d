"""Building blocks shared by every model: one 3D convolution, up-convolution, instance norm, blocks.

Layout is channels-last everywhere: 2D (B, H, W, C), 3D (B, X, Y, Z, C).

`Conv3D` is the only 3D convolution in the package, so its implementation can change per backend
without touching a model:
  * 'native': `lax.conv_general_dilated` in 3D.
  * 'folded': a sum over the kernel's depth taps of 2D convolutions of the input's (strided) depth
    slices, folded into the batch (B*X', Y, Z, C). For stride 1 and few output channels, one 2D
    convolution whose outputs are the k taps' partial sums instead, shifted along X and added
    (`_tap_stacked_conv3d`). XLA:CPU's native 3D convolution runs far below its 2D convolution and
    matmul rates (measured 2-3x slower here, 18x for a 7^3 conv to 2 channels), so 'auto' picks
    'folded' on CPU and 'native' elsewhere. 'sliced' is 'folded' without the tap stacking. All give
    the same numbers and gradients up to float rounding (tested).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

_CONV3D_IMPL = "auto"


CONV3D_IMPLS = ("auto", "native", "folded", "sliced")
# 'folded' stacks the depth taps on the output channels for convolutions with this many outputs or
# fewer (attention logits, gates, heads): k tiny 2D convolutions are slower than one with k*Cout
# outputs (1.7x for 16->2 at 7^3); wider outputs are faster as k slices (benchmarks/RESULTS.md).
TAP_STACK_MAX_OUT = 4


def set_conv3d_impl(impl: str) -> None:
  """Chooses the Conv3D implementation globally (`CONV3D_IMPLS`); read at trace time."""
  global _CONV3D_IMPL
  if impl not in CONV3D_IMPLS:
    raise ValueError(f"conv3d impl must be one of {CONV3D_IMPLS}, got {impl!r}")
  _CONV3D_IMPL = impl


def _resolve_impl(impl: str | None) -> str:
  impl = impl or _CONV3D_IMPL
  if impl == "auto":
    return "folded" if jax.default_backend() == "cpu" else "native"
  return impl


def conv3d(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: int | None = None,
           impl: str | None = None) -> jax.Array:
  """3D convolution of x (B, X, Y, Z, Cin) with kernel (k, k, k, Cin, Cout), symmetric zero padding
  (default k // 2, 'same' for odd k at stride 1)."""
  k = kernel.shape[0]
  pad = k // 2 if padding is None else padding
  impl = _resolve_impl(impl)
  if impl == "native":
    return jax.lax.conv_general_dilated(x, kernel, (stride,) * 3, [(pad, pad)] * 3,
                                        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  if impl == "folded" and stride == 1 and kernel.shape[4] <= TAP_STACK_MAX_OUT:
    return _tap_stacked_conv3d(x, kernel, pad)
  return _sliced_conv3d(x, kernel, stride, pad)


def _conv2d(x, kernel, stride, pad):
  return jax.lax.conv_general_dilated(x, kernel, (stride,) * 2, [(pad, pad)] * 2,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _tap_stacked_conv3d(x: jax.Array, kernel: jax.Array, pad: int) -> jax.Array:
  """Stride 1: ONE 2D convolution over (Y, Z) of the depth-folded input (B*X, Y, Z, Cin), whose
  k*Cout output channels are the k depth taps' partial sums, then out[x] = sum_t taps_t[x + t - pad].

  The input is only reshaped (no padded or shifted copies, which plain autodiff would also keep
  for the backward pass: k input-sized buffers per convolution), the shifts act on the outputs
  (Cout channels, usually fewer than Cin), and one larger matrix product replaces k small ones."""
  k, cin, cout = kernel.shape[0], kernel.shape[3], kernel.shape[4]
  b, nx, ny, nz, _ = x.shape
  w = kernel.transpose(1, 2, 3, 0, 4).reshape(k, k, cin, k * cout)  # taps stacked on outputs
  y = _conv2d(x.reshape(b * nx, ny, nz, cin), w, 1, pad)
  y = y.reshape(b, nx, *y.shape[1:3], k, cout)
  out_x = nx + 2 * pad - k + 1
  out = None
  for t in range(k):  # tap t reads input row i + t - pad for output row i; zero outside
    s = t - pad
    lo, hi = max(s, 0), min(nx, out_x + s)
    term = y[:, lo:hi, ..., t, :]
    term = jnp.pad(term, ((0, 0), (lo - s, out_x - (hi - s)), (0, 0), (0, 0), (0, 0)))
    out = term if out is None else out + term
  return out


def _sliced_conv3d(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
  """Any stride: the sum over the kernel's depth taps of 2D convolutions of the padded input's
  strided depth slices (B*X', Y, Z, Cin)."""
  k = kernel.shape[0]
  b, nx, ny, nz, c = x.shape
  xp = jnp.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0), (0, 0)))
  out_x = (nx + 2 * pad - k) // stride + 1
  out = None
  for tap in range(k):
    sl = jax.lax.slice_in_dim(xp, tap, tap + stride * (out_x - 1) + 1, stride, axis=1)
    y = _conv2d(sl.reshape(b * out_x, ny, nz, c), kernel[tap], stride, pad)
    out = y if out is None else out + y
  return out.reshape(b, out_x, *out.shape[1:])


class Conv3D(nnx.Module):
  """k^3 convolution with bias; `impl` None follows `set_conv3d_impl`.

  The input may be a sequence of arrays, the parts of a channel concatenation (in order). In the
  native form they are convolved separately with their slices of the kernel and summed, so the
  concatenation and its gradient are never materialised (at 128^3 the CVAA decoder's 64-channel
  concatenation is 2 GiB per batch of 4, twice); the folded CPU form concatenates (fewer, larger
  2D convolutions are faster there). Same numbers either way (tested)."""

  def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1,
               padding: int | None = None, *, rngs: nnx.Rngs, impl: str | None = None,
               use_bias: bool = True, bias_init: float = 0.0):
    init = jax.nn.initializers.he_normal(in_axis=(0, 1, 2, 3), out_axis=4)
    self.kernel = nnx.Param(init(rngs.params(), (kernel,) * 3 + (in_ch, out_ch)))
    self.bias = nnx.Param(jnp.full((out_ch,), bias_init, jnp.float32)) if use_bias else None
    self.stride, self.padding, self.impl = stride, padding, impl

  def __call__(self, x: jax.Array | Sequence[jax.Array]) -> jax.Array:
    parts = list(x) if isinstance(x, (list, tuple)) else [x]
    dt = parts[0].dtype
    kernel = self.kernel[...].astype(dt)
    if len(parts) > 1 and _resolve_impl(self.impl) == "native":
      y, start = None, 0
      for part in parts:
        c = part.shape[-1]
        term = conv3d(part, kernel[..., start:start + c, :], self.stride, self.padding, self.impl)
        y, start = (term if y is None else y + term), start + c
    else:
      y = conv3d(parts[0] if len(parts) == 1 else jnp.concatenate(parts, -1), kernel, self.stride,
                 self.padding, self.impl)
    return y if self.bias is None else y + self.bias[...].astype(dt)


class UpConv3D(nnx.Module):
  """Transposed convolution with kernel 2, stride 2 (doubles X, Y, Z).

  With kernel = stride every output voxel depends on exactly one input voxel, so the op is a dense
  layer to 8 * Cout channels followed by a depth-to-space shuffle: exactly ConvTranspose3d(2, 2),
  computed as one matrix product on any backend.
  """

  def __init__(self, in_ch: int, out_ch: int, *, rngs: nnx.Rngs):
    self.dense = nnx.Linear(in_ch, 8 * out_ch, use_bias=False, rngs=rngs,
                            kernel_init=jax.nn.initializers.he_normal())
    self.bias = nnx.Param(jnp.zeros((out_ch,)))
    self.out_ch = out_ch

  def __call__(self, x: jax.Array) -> jax.Array:
    b, nx, ny, nz, _ = x.shape
    y = self.dense(x).reshape(b, nx, ny, nz, 2, 2, 2, self.out_ch)
    y = y.transpose(0, 1, 4, 2, 5, 3, 6, 7)
    return y.reshape(b, 2 * nx, 2 * ny, 2 * nz, self.out_ch) + self.bias[...].astype(x.dtype)


class ResizeUp3D(nnx.Module):
  """1x1x1 channel map, then trilinear x2 up-sampling (doubles X, Y, Z): a checkerboard-free
  alternative to `UpConv3D`.

  A kernel-2 / stride-2 transposed convolution gives each voxel of a 2x2x2 output block its own
  weights, so its output has a 2-voxel period that later 3x3 blocks must learn to cancel (visible
  at few training steps). Here the channel map runs at low resolution (it commutes with the
  linear resize, so 1/8 of the work) and the resize has no such period: a constant input gives a
  constant output. Trilinear weights (1/4, 3/4) per axis, edges clamped (half-pixel centres).
  """

  def __init__(self, in_ch: int, out_ch: int, *, rngs: nnx.Rngs):
    self.dense = nnx.Linear(in_ch, out_ch, use_bias=True, rngs=rngs,
                            kernel_init=jax.nn.initializers.he_normal())

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.dense(x)
    for axis in (1, 2, 3):
      n = y.shape[axis]
      prev = jnp.take(y, jnp.clip(jnp.arange(n) - 1, 0, n - 1), axis=axis)
      nxt = jnp.take(y, jnp.clip(jnp.arange(n) + 1, 0, n - 1), axis=axis)
      even, odd = 0.25 * prev + 0.75 * y, 0.75 * y + 0.25 * nxt
      y = jnp.stack([even, odd], axis=axis + 1)
      y = y.reshape(y.shape[:axis] + (2 * n,) + y.shape[axis + 2:])
    return y


def remat_if(enabled: bool, fn):
  """`fn` (modules and arrays in, arrays out) rematerialised if `enabled`: its activations are not
  kept for the backward pass but recomputed from its inputs (per-block `jax.checkpoint`)."""
  return nnx.remat(fn) if enabled else fn


def make_up(kind: str, in_ch: int, out_ch: int, *, rngs: nnx.Rngs) -> nnx.Module:
  """The decoder's x2 up-sampling: 'transpose' (the paper's up-convolution) or 'resize'."""
  if kind == "transpose":
    return UpConv3D(in_ch, out_ch, rngs=rngs)
  if kind == "resize":
    return ResizeUp3D(in_ch, out_ch, rngs=rngs)
  raise ValueError(f"model.upsample {kind!r} is not 'transpose' or 'resize'.")


class InstanceNorm(nnx.Module):
  """Normalises each sample's channels over all spatial axes (2D or 3D), with learned scale/shift
  (`affine=False`: none, as PyTorch's InstanceNorm default that X2CT-GAN uses)."""

  def __init__(self, channels: int, eps: float = 1e-5, affine: bool = True):
    self.scale = nnx.Param(jnp.ones((channels,))) if affine else None
    self.shift = nnx.Param(jnp.zeros((channels,))) if affine else None
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    axes = tuple(range(1, x.ndim - 1))
    xf = x.astype(jnp.float32)  # statistics in f32 even under bf16 compute
    mean = xf.mean(axes, keepdims=True)
    var = jnp.square(xf - mean).mean(axes, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
    if self.scale is not None:
      y = y * self.scale[...] + self.shift[...]
    return y.astype(x.dtype)


class ConvBlock3D(nnx.Module):
  """The paper's basic 3D block: Conv3D (k^3) + InstanceNorm + ReLU (input: an array or the parts
  of a channel concatenation, see Conv3D)."""

  def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, *, rngs: nnx.Rngs):
    self.conv = Conv3D(in_ch, out_ch, kernel, rngs=rngs, use_bias=False)
    self.norm = InstanceNorm(out_ch)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu(self.norm(self.conv(x)))


class ConvBlock2D(nnx.Module):
  """Conv2D + InstanceNorm + ReLU."""

  def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, *,
               rngs: nnx.Rngs):
    self.conv = nnx.Conv(in_ch, out_ch, (kernel, kernel), strides=stride, padding="SAME",
                         use_bias=False, rngs=rngs)
    self.norm = InstanceNorm(out_ch)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu(self.norm(self.conv(x)))


# Output heads start at sigmoid(-2) ~ 0.12, about the mean of a [-1000, 4096] HU-windowed body CT,
# instead of 0.5: early training then refines anatomy instead of first learning the background.
HEAD_BIAS = -2.0


def channel_schedule(base: int, levels: int, max_ch: int) -> Sequence[int]:
  """Channels per level, doubling with depth up to `max_ch`: level 0 = full resolution."""
  return [min(base * 2 ** l, max_ch) for l in range(levels + 1)]
