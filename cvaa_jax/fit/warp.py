"""The transform that carries the atlas onto the model grid, and trilinear sampling through it.

A model-grid point p (mm, isocentre frame, RAS) is taken to the atlas frame (fit/atlas.py) by

    q = R(angles) diag(scale) p + t + d(p)

  * R: rotation about x, y, z (applied z, then y, then x), each bounded to +-`max_rot_deg`;
  * scale: per-axis, bounded to [1/`max_scale`, `max_scale`]; no shear (a sheared or freely tilted
    spine is not anatomy, and the prototype in issue #36 showed it tilting the column);
  * d: a smooth displacement, a (g, g, g, 3) control grid over the model box upsampled trilinearly,
    each component bounded to +-`max_disp_mm`.
Bounds are tanh reparametrisations, so the optimiser works on unbounded numbers. The parameters are a
plain dict pytree, vmap-able over starts.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import ndimage as jndimage


@dataclasses.dataclass(frozen=True)
class Limits:
  """Bounds of the anatomy the fit may produce."""

  max_rot_deg: float = 12.0
  max_scale: float = 1.25
  max_disp_mm: float = 16.0


def init_params(batch: int | None = None, grid: int = 4, t=None) -> dict:
  """Identity parameters (optionally a batch of starts with translations `t` (B, 3))."""
  shape = () if batch is None else (batch,)
  p = {"t": jnp.zeros(shape + (3,)), "rot": jnp.zeros(shape + (3,)),
       "log_s": jnp.zeros(shape + (3,)), "disp": jnp.zeros(shape + (grid,) * 3 + (3,))}
  if t is not None:
    p["t"] = jnp.asarray(t, jnp.float32).reshape(shape + (3,))
  return p


def rotation(angles: jax.Array) -> jax.Array:
  """(3, 3) rotation from angles (rad) about x, y, z."""
  cx, cy, cz = jnp.cos(angles)
  sx, sy, sz = jnp.sin(angles)
  one, zero = jnp.ones(()), jnp.zeros(())
  rx = jnp.array([[one, zero, zero], [zero, cx, -sx], [zero, sx, cx]])
  ry = jnp.array([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
  rz = jnp.array([[cz, -sz, zero], [sz, cz, zero], [zero, zero, one]])
  return rx @ ry @ rz


def linear_part(params: dict, limits: Limits) -> tuple[jax.Array, jax.Array]:
  """(R diag(s), t) of the bounded similarity."""
  angles = jnp.tanh(params["rot"]) * np.deg2rad(limits.max_rot_deg)
  scale = jnp.exp(jnp.tanh(params["log_s"]) * np.log(limits.max_scale))
  return rotation(angles) * scale[None, :], params["t"]


def displacement(params: dict, size: int, limits: Limits) -> jax.Array:
  """(S, S, S, 3) mm displacement on the model grid from the control grid."""
  d = jnp.tanh(params["disp"]) * limits.max_disp_mm
  return jax.image.resize(d, (size, size, size, 3), method="linear")


def model_points(size: int, fov_mm: float) -> np.ndarray:
  """(S, S, S, 3) mm positions of the model grid's voxel centres, isocentre frame."""
  sp = fov_mm / size
  w = (np.arange(size) - (size - 1) / 2.0) * sp
  return np.stack(np.meshgrid(w, w, w, indexing="ij"), axis=-1).astype(np.float32)


def atlas_points(params: dict, size: int, fov_mm: float, limits: Limits,
                 deform: bool = True) -> jax.Array:
  """(S, S, S, 3) atlas-frame positions of the model grid under `params`."""
  p = jnp.asarray(model_points(size, fov_mm))
  m, t = linear_part(params, limits)
  q = p @ m.T + t
  if deform:
    q = q + displacement(params, size, limits)
  return q


def sample(values: jax.Array, origin, spacing: float, points: jax.Array,
           fill: float = 0.0) -> jax.Array:
  """Trilinear samples of `values` (X, Y, Z) at atlas-frame `points` (..., 3); `fill` outside."""
  idx = (points - jnp.asarray(origin, jnp.float32)) / spacing
  coords = [idx[..., i] for i in range(3)]
  return jndimage.map_coordinates(values, coords, order=1, mode="constant", cval=fill)


def covered(shape_z: int, origin_z: float, spacing: float, points: jax.Array) -> jax.Array:
  """1 where a point lies within the atlas's scan range along z (its field ends there), else 0."""
  k = (points[..., 2] - origin_z) / spacing
  return ((k >= -0.5) & (k <= shape_z - 0.5)).astype(jnp.float32)
