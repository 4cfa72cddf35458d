"""Per-volume reconstruction metrics, pure and jit-able: MAE, MSE, cosine similarity, PSNR, SSIM (3D).

Inputs are (B, X, Y, Z) or (X, Y, Z); outputs are one value per volume. `data_range` has no
default on purpose: a reported PSNR/SSIM must say which range it was computed on ([0, 1] for the
paper's Table I, or HU). SSIM uses a separable 11-voxel Gaussian window (sigma 1.5, k1 0.01,
k2 0.03) over the valid region, as Wang et al. 2004 in 3D.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _batched(x):
  x = jnp.asarray(x, jnp.float32)
  return x[None] if x.ndim == 3 else x


def _axes(x):
  return tuple(range(1, x.ndim))


def mae(pred, target):
  pred, target = _batched(pred), _batched(target)
  return jnp.mean(jnp.abs(pred - target), axis=_axes(pred))


def mse(pred, target):
  pred, target = _batched(pred), _batched(target)
  return jnp.mean(jnp.square(pred - target), axis=_axes(pred))


def cosine(pred, target):
  """Cosine similarity; undefined (NaN) when either volume is all zero: reports then exclude the
  case from the mean and count it."""
  pred, target = _batched(pred), _batched(target)
  ax = _axes(pred)
  num = jnp.sum(pred * target, axis=ax)
  den = jnp.sqrt(jnp.sum(pred ** 2, axis=ax) * jnp.sum(target ** 2, axis=ax))
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.nan)


def psnr(pred, target, *, data_range: float):
  """PSNR in dB; identical volumes give +inf (reports exclude them from means, with a count)."""
  err = mse(pred, target)
  return jnp.where(err > 0, 10.0 * jnp.log10(data_range ** 2 / jnp.where(err > 0, err, 1.0)),
                   jnp.inf)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> jax.Array:
  x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0
  w = jnp.exp(-(x ** 2) / (2 * sigma ** 2))
  return w / w.sum()


def _filter_valid(x, w):
  """Separable 'valid' filtering of (B, X, Y, Z) with the 1D window along each spatial axis."""
  k = w.shape[0]
  for axis in (1, 2, 3):
    n = x.shape[axis] - k + 1
    x = sum(w[i] * jax.lax.slice_in_dim(x, i, i + n, axis=axis) for i in range(k))
  return x


def ssim(pred, target, *, data_range: float, win_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03):
  pred, target = _batched(pred), _batched(target)
  if min(pred.shape[1:]) < win_size:
    raise ValueError(f"ssim: volume {pred.shape[1:]} smaller than the {win_size}-voxel window")
  w = gaussian_window(win_size, sigma)
  c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
  mu_x, mu_y = _filter_valid(pred, w), _filter_valid(target, w)
  sxx = _filter_valid(pred * pred, w) - mu_x ** 2
  syy = _filter_valid(target * target, w) - mu_y ** 2
  sxy = _filter_valid(pred * target, w) - mu_x * mu_y
  s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
  return jnp.mean(s, axis=_axes(s))


@functools.partial(jax.jit, static_argnames="data_range")
def all_metrics(pred, target, *, data_range: float) -> dict[str, jax.Array]:
  """The paper's five metrics, per volume. One compiled program per shape: run eagerly, SSIM's
  separable filter alone is some 200 one-op dispatches, each compiled on first use."""
  out = {"mae": mae(pred, target), "mse": mse(pred, target), "cosine": cosine(pred, target),
         "psnr": psnr(pred, target, data_range=data_range)}
  if min(_batched(pred).shape[1:]) >= 11:
    out["ssim"] = ssim(pred, target, data_range=data_range)
  return out
