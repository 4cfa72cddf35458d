"""2D -> 3D expansion: spreading a view's image features back along its rays into the common volume.

The paper repeats each view's feature map along that view's projection direction and permutes the
axes into one frame. Here the repeat *is* the back-projection of the DRR renderer's own geometry
(`cvaa_jax.drr`), so the alignment is right by construction and tested with a single bright voxel:
  * every voxel of the model grid (`size`^3, centred on the isocentre, field of view `fov_mm`)
    takes the bilinearly interpolated image value where the ray through it meets the detector;
  * for parallel beams on a field-of-view-matched detector that is an exact repeat with flips
    (a gather, no arithmetic); for cone beams each slice is magnified differently, which two
    separable hat-weight contractions express (the adjoint of the Joseph projector's sampling).
Scaled levels (size / 2^l) use the same geometry with coarser pixels and voxels.

Per-sample geometry (`inv_sid`): every view the models see is the *canonical* view of the model grid
-- the image resampled onto the isocentre plane (field of view `fov_mm`, `size` pixels) and mirrored
into the model's orientation (frontal as an AP seen from the source, lateral as a left lateral seen
from the source; docs/conventions.md). What then still differs between acquisitions is one number
per view, the signed inverse source-isocentre distance kappa (1/mm):
  kappa = +1/SID  source on the canonical side (AP: anterior; lateral: patient's right),
  kappa = -1/SID  source on the other side (PA frontal; right lateral), image already mirrored,
  kappa = 0       parallel beam.
A voxel at depth d towards the canonical source is seen magnified by 1 / (1 - kappa d) on the
isocentre plane; the source-detector distance only scales the detector and drops out once the image
is on the isocentre plane. Passing `inv_sid` (B,) lifts each sample with its own geometry (hat
matrices built in the program); without it the view's static geometry is used.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from cvaa_jax.drr import geometry as geo


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """Static description of one input view, shared by the data pipeline and the models."""

  view: str = "ap"  # 'ap' (frontal) or 'lateral' (left lateral); see drr.geometry
  parallel: bool = False
  fov_mm: float = 256.0  # field of view at the isocentre = the model grid's extent
  sid: float = geo.DEFAULT_SID_MM
  sdd: float = geo.DEFAULT_SDD_MM

  def geometry(self, size: int) -> geo.Geometry:
    """The DRR geometry of this view for a `size` x `size` detector covering `fov_mm`."""
    return geo.fov_matched(self.fov_mm, (size, size), parallel=self.parallel, view=self.view,
                           sid=self.sid, sdd=self.sdd)

  @property
  def inv_sid(self) -> float:
    """This view's kappa: 0 for a parallel beam, else 1 / sid (source on the canonical side)."""
    return 0.0 if self.parallel else 1.0 / self.sid


def views_for(parallel: bool = False, fov_mm: float = 256.0, sid: float = geo.DEFAULT_SID_MM,
              sdd: float = geo.DEFAULT_SDD_MM) -> tuple[ViewSpec, ViewSpec]:
  """The (frontal, lateral) pair."""
  return (ViewSpec("ap", parallel, fov_mm, sid, sdd), ViewSpec("lateral", parallel, fov_mm, sid, sdd))


def view_inv_sid(geometry: jax.Array | None, view_index: int) -> jax.Array | None:
  """Column `view_index` (0 frontal, 1 lateral) of a (B, 2) per-sample geometry, or None."""
  return None if geometry is None else geometry[:, view_index]


def grid(size: int, fov_mm: float) -> tuple[np.ndarray, np.ndarray]:
  """(spacing, origin) of the model grid: `size`^3 voxels over `fov_mm`, centred on the isocentre."""
  sp = np.full(3, fov_mm / size)
  return sp, -(size - 1) / 2.0 * sp


@functools.lru_cache(maxsize=64)
def _detector_coords(spec: ViewSpec, img_size: int, vol_size: int):
  """Detector (col, row) coordinates of the model-grid voxels: (K, I) and (K, Z) arrays.

  K indexes slices along the view's ray axis p, I the horizontal axis q the columns follow, Z the
  superior axis the rows follow.
  """
  with jax.ensure_compile_time_eval():  # geometry is static: numbers, not traced values
    g = spec.geometry(img_size)
  p = g.aligned_axis
  q = 1 - p
  sp, origin = grid(vol_size, spec.fov_mm)
  w = origin[0] + np.arange(vol_size) * sp[0]  # slice/voxel centres (same along every axis)
  s = np.asarray(g.source, np.float64)
  dc = np.asarray(g.detector_center, np.float64)
  u, v = np.asarray(g.u, np.float64), np.asarray(g.v, np.float64)
  pitch_r, pitch_c = np.asarray(g.pixel_size, np.float64)
  if spec.parallel:
    pq = np.broadcast_to(w[None, :], (vol_size, vol_size))  # (K, I)
    pz = np.broadcast_to(w[None, :], (vol_size, vol_size))  # (K, Z)
  else:
    lam = (dc[p] - s[p]) / (w - s[p])  # (K,) magnification from slice to detector
    pq = s[q] + (w[None, :] - s[q]) * lam[:, None]
    pz = s[2] + (w[None, :] - s[2]) * lam[:, None]
  col = (pq - dc[q]) * u[q] / pitch_c + (img_size - 1) / 2.0
  row = (pz - dc[2]) * v[2] / pitch_r + (img_size - 1) / 2.0
  return p, col, row


def _hat(coord: np.ndarray, n: int) -> np.ndarray:
  return np.maximum(0.0, 1.0 - np.abs(coord[..., None] - np.arange(n))).astype(np.float32)


RAY_AXIS = {"ap": 1, "lateral": 0}  # world axis the canonical view's rays travel along
# Canonical detector axes along (q, z): AP columns run to the patient's left (-x), lateral columns
# anteriorly (+y); rows run inferiorly (-z) in both.
_COL_SIGN = {"ap": -1.0, "lateral": 1.0}


def _traced_coords(view: str, img_size: int, vol_size: int, fov_mm: float, inv_sid: jax.Array):
  """Canonical-view (col (B, K, I), row (B, K, Z)) coordinates of the model-grid voxels, per sample."""
  sp, origin = grid(vol_size, fov_mm)
  w = jnp.asarray(origin[0] + np.arange(vol_size) * sp[0], jnp.float32)  # voxel centres (mm)
  kappa = jnp.asarray(inv_sid, jnp.float32).reshape(-1)
  mag = 1.0 / (1.0 - kappa[:, None] * w[None, :])  # (B, K): depth d = w along the canonical source
  pitch = fov_mm / img_size
  centre = (img_size - 1) / 2.0
  col = mag[:, :, None] * (_COL_SIGN[view] * w)[None, None, :] / pitch + centre
  row = mag[:, :, None] * (-w)[None, None, :] / pitch + centre
  return col, row


def canonical_geometry(view: str, size: int, fov_mm: float, inv_sid) -> geo.Geometry:
  """The DRR geometry of the canonical view with signed inverse source distance `inv_sid`.

  The detector is virtual: it lies as far behind the isocentre as the source is in front (so it is
  outside the volume) with a pitch that maps it onto the isocentre plane's `fov_mm`. It keeps the
  canonical image orientation for either source side, so the image it renders is the mirrored-in
  view the models take. Concrete `inv_sid` 0 gives a true parallel beam; a traced one stands in for
  parallel with a source 10^7 mm away (images within 1e-4 of the parallel render, tested).
  """
  theta = geo.VIEWS[view]
  to_source, u, v = geo._frame(theta)  # pylint: disable=protected-access
  aligned = geo._aligned(theta)  # pylint: disable=protected-access
  pitch = fov_mm / size
  try:
    kappa = float(inv_sid)
  except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    kappa = None
  if kappa == 0.0:
    return geo.parallel_beam(view, (size, size), pitch)
  if kappa is not None:  # concrete: NumPy leaves, so the projector plans on the host
    side, dist = np.sign(kappa), 1.0 / abs(kappa)
    f32 = lambda a: np.asarray(a, np.float32)
    return geo.Geometry(f32(side * dist * to_source), f32(-side * dist * to_source), f32(u), f32(v),
                        np.full(2, 2 * pitch, np.float32),
                        shape=(size, size), parallel=False, aligned_axis=aligned)
  k = jnp.asarray(inv_sid, jnp.float32)
  side = jnp.where(k < 0, -1.0, 1.0)
  dist = 1.0 / jnp.maximum(jnp.abs(k), 1e-7)
  ts = jnp.asarray(to_source, jnp.float32)
  return geo.Geometry(side * dist * ts, -side * dist * ts, jnp.asarray(u, jnp.float32),
                      jnp.asarray(v, jnp.float32), jnp.full(2, 2 * pitch, jnp.float32),
                      shape=(size, size), parallel=False, aligned_axis=aligned)


def expand(features: jax.Array, spec: ViewSpec, size: int | None = None,
           inv_sid: jax.Array | None = None) -> jax.Array:
  """Back-projects image features (B, R, C, ch) of one view into the volume (B, X, Y, Z, ch), RAS.

  `size` is the volume's edge (default: the image's); image and volume cover the same field of view.
  `inv_sid` (B,): each sample's signed inverse source distance (module docstring); None: `spec`'s.
  """
  b, rows, cols, ch = features.shape
  if rows != cols:
    raise ValueError(f"expand: square images expected, got {rows}x{cols}")
  size = size or rows
  if inv_sid is not None:
    col, row = _traced_coords(spec.view, rows, size, spec.fov_mm, inv_sid)
    a = jnp.maximum(0.0, 1.0 - jnp.abs(col[..., None] - jnp.arange(cols, dtype=jnp.float32)))
    h = jnp.maximum(0.0, 1.0 - jnp.abs(row[..., None] - jnp.arange(rows, dtype=jnp.float32)))
    a, h = a.astype(features.dtype), h.astype(features.dtype)
    a = jnp.broadcast_to(a, (b,) + a.shape[1:])
    h = jnp.broadcast_to(h, (b,) + h.shape[1:])
    t = jnp.einsum("brcd,bkzr->bkzcd", features, h)
    out = jnp.einsum("bkzcd,bkic->bkizd", t, a)
    return out if RAY_AXIS[spec.view] == 0 else jnp.swapaxes(out, 1, 2)
  p, col, row = _detector_coords(spec, rows, size)
  exact = (np.allclose(col, np.round(col), atol=1e-4) and np.allclose(row, np.round(row), atol=1e-4)
           and np.all(col == col[:1]) and np.all(row == row[:1])
           and col.min() > -0.5 and col.max() < cols - 0.5 and row.min() > -0.5
           and row.max() < rows - 0.5)
  if exact:  # parallel, field-of-view matched: a pure repeat with flips
    ci = np.round(col[0]).astype(np.int32)  # (I,)
    ri = np.round(row[0]).astype(np.int32)  # (Z,)
    g = jnp.take(jnp.take(features, ri, axis=1), ci, axis=2)  # (B, Z, I, ch)
    g = jnp.swapaxes(g, 1, 2)  # (B, I, Z, ch)
    g = jnp.expand_dims(g, axis=1 + p)  # insert the ray axis p
    return jnp.broadcast_to(g, (b, size, size, size, ch))
  a = jnp.asarray(_hat(col, cols))  # (K, I, C)
  h = jnp.asarray(_hat(row, rows))  # (K, Z, R)
  t = jnp.einsum("brcd,kzr->bkzcd", features, h)  # sample rows for every slice
  out = jnp.einsum("bkzcd,kic->bkizd", t, a)  # sample columns: (B, K, I, Z, ch)
  return out if p == 0 else jnp.swapaxes(out, 1, 2)  # p = 1: (B, I=x, K=y, Z, ch)
