"""Test-time consistency: how well a volume's DRRs agree with the two radiographs, and a refinement
that makes them agree better while staying near the volume it starts from.

Agreement is measured on the canonical views (the images the models take, `[0, 1]` per-image
normalised line integrals): the volume is rendered in the pair's own geometry, normalised the same
way, and compared per view by NCC and PSNR (data range 1). It needs no ground truth, so every
reconstruction reports it.

`refine` minimises, over a [0, 1] model-grid volume v (mu >= 0 is kept by clipping to the window),
    sum_views mean_pixels (a_v DRR_v(v) + b_v - x_v)^2  +  prior * mean (v - v0)^2
                                                       +  smooth * mean |grad (v - v0)|^2
where the last term keeps the change smooth: two views alone spread a correction evenly along each
ray, which shows as streaks across the slices (measured in benchmarks/atlas_loo.py); and where (a_v, b_v) is the least-squares intensity map of each view (the radiograph's scale is unknown)
and the sum runs over pixels the percentile normalisation did not clip. Adam, jit-compiled.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cvaa_jax import drr
from cvaa_jax.fit import register


def _views(unit: jax.Array, kappa, fov_mm: float, hu_min: float, hu_max: float) -> jax.Array:
  mu = drr.unit_to_mu(unit, hu_min, hu_max)
  return register.render(mu, register.geometries(unit.shape[0], fov_mm, kappa), fov_mm)


def agreement(unit: np.ndarray, target: register.Target, hu_min: float = -1000.0,
              hu_max: float = 4096.0) -> dict[str, dict[str, float]]:
  """Per view {'ncc', 'psnr'} of the volume's normalised DRR against the radiograph."""
  img = np.asarray(drr.normalize_projection(_views(jnp.asarray(unit, jnp.float32),
                                                   tuple(target.geometry), target.fov_mm,
                                                   hu_min, hu_max)), np.float64)
  out = {}
  for i, name in enumerate(("frontal", "lateral")):
    a, b = img[i], np.asarray(target.views[i], np.float64)
    ncc = float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    mse = float(np.mean((a - b) ** 2))
    out[name] = {"ncc": ncc, "psnr": float(10 * np.log10(1.0 / max(mse, 1e-12)))}
  return out


@functools.partial(jax.jit, static_argnames=("kappa", "fov_mm", "steps", "hu_min", "hu_max"))
def _refine(v0, target, *, kappa, fov_mm, steps, prior, smooth, lr, hu_min, hu_max):
  w = ((target > 1e-3) & (target < 1 - 1e-3)).astype(jnp.float32)

  def loss(v):
    img = _views(v, kappa, fov_mm, hu_min, hu_max)
    n = w.sum((1, 2), keepdims=True)
    mi, mt = (img * w).sum((1, 2), keepdims=True) / n, (target * w).sum((1, 2), keepdims=True) / n
    a = ((img - mi) * (target - mt) * w).sum((1, 2), keepdims=True) / jnp.maximum(
        ((img - mi) ** 2 * w).sum((1, 2), keepdims=True), 1e-9)
    fit = ((a * (img - mi) + mt - target) ** 2 * w).sum((1, 2)) / n[:, 0, 0]
    d = v - v0
    rough = sum(jnp.mean(jnp.diff(d, axis=a) ** 2) for a in range(3))
    return fit.sum() + prior * jnp.mean(d ** 2) + smooth * rough

  tx = optax.adam(lr)

  def body(carry, _):
    v, s = carry
    g = jax.grad(loss)(v)
    u, s = tx.update(g, s, v)
    return (jnp.clip(optax.apply_updates(v, u), 0.0, 1.0), s), None

  (v, _), _ = jax.lax.scan(body, (v0, tx.init(v0)), None, length=steps)
  return v


def refine(unit: np.ndarray, target: register.Target, steps: int = 60, prior: float = 20.0,
           smooth: float = 10.0, lr: float = 2e-3, hu_min: float = -1000.0,
           hu_max: float = 4096.0) -> np.ndarray:
  """The [0, 1] volume adjusted towards agreement with the pair (module docstring)."""
  return np.asarray(_refine(jnp.asarray(unit, jnp.float32), jnp.asarray(target.views, jnp.float32),
                            kappa=tuple(float(k) for k in target.geometry),
                            fov_mm=float(target.fov_mm), steps=steps, prior=jnp.float32(prior),
                            smooth=jnp.float32(smooth),
                            lr=jnp.float32(lr), hu_min=hu_min, hu_max=hu_max))
