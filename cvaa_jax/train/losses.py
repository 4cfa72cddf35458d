"""GAN and reconstruction losses (PAPER.md): LSGAN, voxel MSE, orthogonal-projection L1."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lsgan_d(real_scores: jax.Array, fake_scores: jax.Array) -> tuple[jax.Array, jax.Array]:
  """E[(D(real) - 1)^2] and E[D(fake)^2], returned separately for logging."""
  return jnp.mean(jnp.square(real_scores - 1.0)), jnp.mean(jnp.square(fake_scores))


def lsgan_g(fake_scores: jax.Array) -> jax.Array:
  return jnp.mean(jnp.square(fake_scores - 1.0))


def voxel_mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.mean(jnp.square(pred - target))


def projection_l1(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean absolute difference of parallel projections (means) onto the sagittal, coronal and axial
  planes of (B, X, Y, Z) volumes: a shape-consistency term, averaged over the three planes."""
  return sum(jnp.mean(jnp.abs(pred.mean(axis=a) - target.mean(axis=a))) for a in (1, 2, 3)) / 3.0
