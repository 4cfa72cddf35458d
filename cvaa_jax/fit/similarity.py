"""Image similarity between a radiograph and a DRR that does not depend on the intensity domain.

Real radiographs are post-processed (log, windowing, unsharp masking), DRRs are raw line integrals:
only terms invariant to an affine intensity change are used, and two of the three look at edges, where
bone is. All take (..., H, W) images and a (..., H, W) weight mask (1 where a pixel counts) and return
values in [-1, 1], 1 for a perfect match.

  ncc       normalised cross-correlation of the images
  gradient  mean NCC of the row and column differences (Penney et al.'s gradient correlation)
  highpass  NCC of the images minus a Gaussian blur of them (vertebrae, ribs, pelvis rims)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def ncc(a: jax.Array, b: jax.Array, w: jax.Array) -> jax.Array:
  """Weighted normalised cross-correlation over the last two axes."""
  sw = jnp.maximum(w.sum((-2, -1), keepdims=True), 1e-6)
  ma = (a * w).sum((-2, -1), keepdims=True) / sw
  mb = (b * w).sum((-2, -1), keepdims=True) / sw
  da, db = (a - ma) * w, (b - mb) * w
  num = (da * db).sum((-2, -1))
  den = jnp.sqrt((da * da).sum((-2, -1)) * (db * db).sum((-2, -1)) + 1e-12)
  return num / den


def gradient(a: jax.Array, b: jax.Array, w: jax.Array) -> jax.Array:
  """Gradient correlation: NCC of vertical and of horizontal differences, averaged."""
  wr = w[..., 1:, :] * w[..., :-1, :]
  wc = w[..., :, 1:] * w[..., :, :-1]
  gr = ncc(jnp.diff(a, axis=-2), jnp.diff(b, axis=-2), wr)
  gc = ncc(jnp.diff(a, axis=-1), jnp.diff(b, axis=-1), wc)
  return 0.5 * (gr + gc)


@functools.lru_cache(maxsize=16)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
  """(n, n) Gaussian smoothing as a matrix, rows renormalised at the borders."""
  x = np.arange(n)
  k = np.exp(-0.5 * ((x[:, None] - x[None, :]) / sigma) ** 2)
  return (k / k.sum(1, keepdims=True)).astype(np.float32)


def blur(a: jax.Array, sigma_px: float) -> jax.Array:
  """Separable Gaussian blur as two matrix products (fast on every backend, inside loops too)."""
  gr = jnp.asarray(_blur_matrix(a.shape[-2], float(sigma_px)))
  gc = jnp.asarray(_blur_matrix(a.shape[-1], float(sigma_px)))
  return jnp.einsum("ij,...jk,lk->...il", gr, a, gc)


def highpass(a: jax.Array, b: jax.Array, w: jax.Array, sigma_px: float) -> jax.Array:
  return ncc(a - blur(a, sigma_px), b - blur(b, sigma_px), w)


def combined(a: jax.Array, b: jax.Array, w: jax.Array, weights=(0.2, 0.4, 0.4),
             sigma_px: float = 3.0) -> jax.Array:
  """The registration's image term: a weighted mean of ncc, gradient and highpass."""
  wn, wg, wh = weights
  return (wn * ncc(a, b, w) + wg * gradient(a, b, w) + wh * highpass(a, b, w, sigma_px)) / (
      wn + wg + wh)
