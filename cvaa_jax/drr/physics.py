"""X-ray physics: HU -> linear attenuation, Beer-Lambert intensity, and the projection normalisation
shared by the DRR pipeline and the preprocessing of real radiographs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Linear attenuation of water at ~70 keV effective energy (typical diagnostic spectrum), per mm.
MU_WATER_PER_MM = 0.0193


def hu_to_mu(hu: jax.Array, mu_water: float = MU_WATER_PER_MM) -> jax.Array:
  """mu = mu_water * (1 + HU / 1000), non-negative (air is ~0, nothing is below it)."""
  return jnp.maximum(0.0, mu_water * (1.0 + hu / 1000.0))


def unit_to_mu(unit: jax.Array, hu_min: float = -1000.0, hu_max: float = 4096.0,
               mu_water: float = MU_WATER_PER_MM) -> jax.Array:
  """Attenuation from a [0, 1] model-grid volume (the window of `transforms.scale_intensity_range`)."""
  return hu_to_mu(hu_min + unit * (hu_max - hu_min), mu_water)


def intensity(line_integral: jax.Array, i0: float = 1.0) -> jax.Array:
  """Beer-Lambert: detected intensity I = I0 exp(-integral mu dl)."""
  return i0 * jnp.exp(-line_integral)


def log_image(intensity_image: jax.Array, i0: float = 1.0, eps: float = 1e-6) -> jax.Array:
  """Back to the line-integral domain: -log(I / I0); the inverse of `intensity`."""
  return -jnp.log(jnp.maximum(intensity_image / i0, eps))


def normalize_projection(line_integral: jax.Array, low_q: float = 0.0, high_q: float = 99.5
                         ) -> jax.Array:
  """Maps a line-integral image to [0, 1] between two of its own percentiles, per image.

  Per-image scaling removes what DRRs and real radiographs do not share (tube current, detector gain,
  the exact mu scale), and the upper percentile keeps a few metal pixels from squashing the rest.
  Works on (..., H, W); the same function preprocesses real X-rays (after `log_image`).
  """
  flat = line_integral.reshape(line_integral.shape[:-2] + (-1,))
  lo = jnp.percentile(flat, low_q, axis=-1)[..., None, None]
  hi = jnp.percentile(flat, high_q, axis=-1)[..., None, None]
  return jnp.clip((line_integral - lo) / jnp.maximum(hi - lo, 1e-6), 0.0, 1.0)
