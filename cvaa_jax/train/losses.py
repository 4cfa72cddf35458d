"""GAN and reconstruction losses (PAPER.md): LSGAN, voxel MSE, orthogonal-projection L1, and two
optional terms for bone (not in the paper): a soft-tissue/bone window L1 and a bone-voxel MSE."""

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


def window_l1(pred: jax.Array, target: jax.Array, lo: float, hi: float) -> jax.Array:
  """Mean absolute difference after clipping both volumes to the window [lo, hi] (the volumes' own
  units) and rescaling it to [0, 1].

  Why: in the paper's [-1000, 4096] HU normalisation, bone at 8 mm (~300 HU after partial volume)
  sits 0.05 above soft tissue, so the voxel MSE hardly sees the spine next to the air/body edge.
  Inside a soft-tissue/bone window the same contrast spans a quarter of the range, and L1's
  gradient does not shrink with the error. Outside the window the gradient is zero (lungs and air
  are the MSE's job)."""
  scale = 1.0 / (hi - lo)
  clip = lambda v: (jnp.clip(v, lo, hi) - lo) * scale
  return jnp.mean(jnp.abs(clip(pred) - clip(target)))


def bone_mse(pred: jax.Array, target: jax.Array, threshold: float) -> jax.Array:
  """The voxel MSE restricted to the target's bone (target > `threshold`, the volumes' own units),
  averaged over all voxels, so that `w_recon + w` is a bone voxel's weight.

  Why: under the plain MSE, where the model is unsure whether bone is there, its best guess is
  the average and the spine dissolves into soft tissue (benchmarks/RESULTS.md, "Why no spine").
  Weighting the bone voxels moves that guess towards bone; unlike the window L1 (which pulls
  towards the median) it keeps the squared error's mean-seeking behaviour inside bone."""
  mask = (target > threshold).astype(pred.dtype)
  return jnp.mean(mask * jnp.square(pred - target))
