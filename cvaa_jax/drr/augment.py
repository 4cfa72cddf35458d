"""Optional realism for DRR augmentation, each off by default and driven by an explicit PRNG key.

Pose jitter moves the whole source-detector assembly (translation) and changes the source distance;
both keep axis-aligned views axis-aligned, so the fast projector still applies. Detector noise is
Poisson on the detected photon count; intensity variation is a random gain and gamma in the
normalised image domain.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cvaa_jax.drr.geometry import Geometry


def jitter_geometry(geometry: Geometry, key: jax.Array, shift_mm: float = 0.0,
                    distance_frac: float = 0.0) -> Geometry:
  """Random translation (uniform in +-shift_mm per axis) and source-distance scaling (+-frac)."""
  k1, k2 = jax.random.split(key)
  shift = jax.random.uniform(k1, (3,), minval=-shift_mm, maxval=shift_mm)
  scale = 1.0 + jax.random.uniform(k2, (), minval=-distance_frac, maxval=distance_frac)
  # Move the source along its axis relative to the detector centre; the detector stays put.
  source = geometry.detector_center + (geometry.source - geometry.detector_center) * scale
  return geometry.replace(source=source + shift, detector_center=geometry.detector_center + shift)


def poisson_noise(line_integral: jax.Array, key: jax.Array, photons: float) -> jax.Array:
  """Quantum noise: counts ~ Poisson(photons * exp(-p)), returned in the line-integral domain."""
  expected = photons * jnp.exp(-line_integral)
  counts = jax.random.poisson(key, expected).astype(line_integral.dtype)
  return -jnp.log(jnp.maximum(counts, 0.5) / photons)


def intensity_variation(image: jax.Array, key: jax.Array, gain: float = 0.0,
                        gamma: float = 0.0) -> jax.Array:
  """A [0, 1] image times a gain in [1 - gain, 1 + gain], raised to a power in [1 - gamma, 1 + gamma]."""
  k1, k2 = jax.random.split(key)
  g = 1.0 + jax.random.uniform(k1, (), minval=-gain, maxval=gain)
  e = 1.0 + jax.random.uniform(k2, (), minval=-gamma, maxval=gamma)
  return jnp.clip(jnp.clip(image, 0.0, 1.0) ** e * g, 0.0, 1.0)
