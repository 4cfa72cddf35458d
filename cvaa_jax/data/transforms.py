"""Deterministic CT preprocessing as small named operations on `Volume` (MONAI's names and meanings).

Each operation returns a new `Volume` whose affine still maps voxels to the same world positions and
whose `history` gains one JSON-serialisable record, so a run is reproducible and `invert` can bring a
model-grid volume back to HU on the original scan's grid.

The paper's chain (`preprocess`): Orientation("RAS") -> ToPatientAxes (oblique grids only) ->
Spacing(2 mm, anti-aliased) ->
CropOrPadToBody(128^3) -> ScaleIntensityRange([-1000, 4096] HU -> [0, 1], clipped).
"""

from __future__ import annotations

from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from cvaa_jax.data.volume import Volume
from cvaa_jax.errors import InputError

AIR_HU = -1000.0


def orientation(vol: Volume, axcodes: str = "RAS") -> Volume:
  """Permutes/flips the array so its axes increase towards `axcodes` (no resampling)."""
  start = nib.orientations.io_orientation(vol.affine)
  target = nib.orientations.axcodes2ornt(tuple(axcodes))
  transform = nib.orientations.ornt_transform(start, target)
  array = nib.orientations.apply_orientation(vol.array, transform)
  # Affine of the reoriented array: new index -> old index -> world.
  new_to_old = nib.orientations.inv_ornt_aff(transform, vol.array.shape)
  affine = vol.affine @ new_to_old
  op = {"op": "orientation", "from": "".join(vol.axcodes), "to": axcodes}
  return vol.replace(op, array=np.ascontiguousarray(array), affine=affine)


def to_patient_axes(vol: Volume, tolerance_deg: float = 0.5, cval: float = AIR_HU) -> Volume:
  """Resamples an oblique grid (rotated or sheared affine: a tilted gantry, an oblique acquisition,
  a scan re-sliced along an organ) onto the patient's axes, so that array axes are exactly R, A, S.

  `orientation` only permutes and flips axes; a grid whose axes are rotated away from the patient's
  keeps its rotation, and everything downstream (the model grid, the DRR views) would then be
  rotated with it. The new grid keeps the voxel size along each axis and covers the old grid's
  bounding box (air outside it). Grids within `tolerance_deg` of the patient axes are returned as
  they are (a point 128 mm from the centre moves < 1.2 mm at 0.5 degree). Expects RAS input.
  """
  lin = vol.affine[:3, :3]
  sp = np.linalg.norm(lin, axis=0)
  dirs = lin / sp
  if np.all(np.abs(dirs - np.eye(3)) <= np.sin(np.deg2rad(tolerance_deg))):
    return vol
  n = np.asarray(vol.shape, float)
  corners = np.array([[i, j, k] for i in (-0.5, n[0] - 0.5) for j in (-0.5, n[1] - 0.5)
                      for k in (-0.5, n[2] - 0.5)])
  world = vol.voxel_to_world(corners)
  lo, hi = world.min(0), world.max(0)
  shape = np.maximum(1, np.ceil((hi - lo) / sp - 1e-6)).astype(int)
  affine = np.eye(4)
  affine[:3, :3] = np.diag(sp)
  affine[:3, 3] = lo + sp / 2
  out = resample_to_grid(vol, shape, affine, order=1, cval=cval, antialias=False)
  angle = float(np.degrees(np.arccos(np.clip(np.min(np.diag(dirs)), -1.0, 1.0))))
  op = {"op": "to_patient_axes", "from_affine": vol.affine.tolist(),
        "max_axis_angle_deg": round(angle, 3)}
  return out.replace(op, history=vol.history)


def ras(vol: Volume) -> Volume:
  """RAS axis order on the patient's axes: `orientation` then `to_patient_axes`."""
  return to_patient_axes(orientation(vol, "RAS"))


def resample_to_grid(vol: Volume, shape: Sequence[int], affine: np.ndarray, order: int = 1,
                     cval: float = AIR_HU, antialias: bool = True) -> Volume:
  """Resamples `vol` onto the grid (shape, affine) by world position (trilinear by default).

  When the target grid is coarser than the source along an axis, the source is first smoothed with a
  Gaussian of sigma = (factor - 1) / 2 source voxels along it, so downsampling does not alias.
  Points outside the source take `cval` (air).
  """
  affine = np.asarray(affine, dtype=np.float64)
  target_to_source = np.linalg.inv(vol.affine) @ affine
  array = vol.array.astype(np.float32, copy=False)
  if antialias:
    # Source-voxel step per target voxel along each source axis.
    factor = np.linalg.norm(target_to_source[:3, :3], axis=1)
    sigma = np.maximum(0.0, (factor - 1.0) / 2.0)
    if np.any(sigma > 0.05):
      array = ndimage.gaussian_filter(array, sigma=sigma, mode="nearest")
  out = ndimage.affine_transform(array, target_to_source[:3, :3], offset=target_to_source[:3, 3],
                                 output_shape=tuple(int(s) for s in shape), order=order,
                                 mode="constant", cval=cval, prefilter=False)
  op = {"op": "resample_to_grid", "shape": [int(s) for s in shape], "affine": affine.tolist(),
        "order": order}
  return vol.replace(op, array=out.astype(np.float32), affine=affine)


def spacing(vol: Volume, pixdim: float | Sequence[float] = 2.0, order: int = 1) -> Volume:
  """Resamples to voxel size `pixdim` mm keeping the axes' directions and the field of view centre.

  The new grid covers the old field of view (edge to edge); its size is rounded to whole voxels.
  """
  pixdim = np.broadcast_to(np.asarray(pixdim, dtype=np.float64), (3,))
  if np.any(pixdim <= 0):
    raise InputError(f"spacing: pixdim must be positive, got {pixdim.tolist()}")
  old_sp = vol.spacing
  if np.allclose(old_sp, pixdim, rtol=1e-5):
    return vol.replace({"op": "spacing", "pixdim": pixdim.tolist(), "from": old_sp.tolist(),
                        "shape": list(vol.shape)})
  old_shape = np.asarray(vol.shape, dtype=np.float64)
  new_shape = np.maximum(1, np.round(old_shape * old_sp / pixdim)).astype(int)
  scale = pixdim / old_sp  # old voxels per new voxel
  # Old index of new voxel j: c_old + (j - c_new) * scale, with c = (n - 1) / 2 (centres kept).
  new_to_old = np.eye(4)
  new_to_old[:3, :3] = np.diag(scale)
  new_to_old[:3, 3] = (old_shape - 1) / 2 - (new_shape - 1) / 2 * scale
  out = resample_to_grid(vol, new_shape, vol.affine @ new_to_old, order=order)
  op = {"op": "spacing", "pixdim": pixdim.tolist(), "from": np.round(old_sp, 6).tolist(),
        "shape": new_shape.tolist()}
  return out.replace(op, history=vol.history)


def body_mask(array_hu: np.ndarray, threshold_hu: float = -400.0) -> np.ndarray:
  """The patient's body: the largest connected component above `threshold_hu` (drops couch, noise)."""
  mask = array_hu > threshold_hu
  mask = ndimage.binary_opening(mask, iterations=1)
  labels, n = ndimage.label(mask)
  if n == 0:
    return mask
  sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
  return labels == (1 + int(np.argmax(sizes)))


def body_box(vol: Volume, threshold_hu: float = -400.0) -> tuple[np.ndarray, np.ndarray]:
  """First and last voxel index of the body's bounding box (the whole array where no body is found)."""
  mask = body_mask(vol.array, threshold_hu)
  if not mask.any():
    return np.zeros(3, int), np.asarray(vol.shape) - 1
  idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
  return np.array([i[0] for i in idx]), np.array([i[-1] for i in idx])


def crop_or_pad(vol: Volume, roi_size: Sequence[int], center: Sequence[float] | None = None,
                cval: float = AIR_HU) -> Volume:
  """Crops and/or pads to exactly `roi_size` voxels around voxel `center` (default: array centre).

  Pads with `cval` (air) where the box leaves the image, so the output shape is always `roi_size`
  (MONAI's CenterSpatialCrop would silently return less). The affine is shifted so every voxel keeps
  its world position.
  """
  roi = np.asarray(roi_size, dtype=int)
  shape = np.asarray(vol.shape)
  if center is None:
    center = (shape - 1) / 2.0
  # First index of the box; for an even roi the extra voxel goes to the high side.
  start = np.floor(np.asarray(center, dtype=np.float64) - (roi - 1) / 2.0 + 1e-6).astype(int)
  out = np.full(tuple(roi), cval, dtype=np.float32)
  src_lo = np.clip(start, 0, shape)
  src_hi = np.clip(start + roi, 0, shape)
  dst_lo = src_lo - start
  dst_hi = dst_lo + (src_hi - src_lo)
  if np.all(src_hi > src_lo):
    out[tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi))] = \
        vol.array[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))]
  shift = np.eye(4)
  shift[:3, 3] = start
  op = {"op": "crop_or_pad", "roi_size": roi.tolist(), "start": start.tolist(),
        "from_shape": shape.tolist()}
  return vol.replace(op, array=out, affine=vol.affine @ shift)


def crop_or_pad_to_body(vol: Volume, roi_size: Sequence[int], threshold_hu: float = -400.0,
                        cval: float = AIR_HU, posterior_margin: int = 3) -> Volume:
  """`crop_or_pad` centred on the body left-right and front-back; z stays image-centred.

  Centring on the image centre cuts the posterior spine off scans where the patient lies off-centre
  or the couch widens the field of view. When the body is deeper (front to back) than the box, the
  box starts `posterior_margin` voxels behind the patient's back instead, because the spine, which
  this project reconstructs, lies posteriorly; the anterior belly or chest wall is what is cut.
  Along z the scan range is what the user chose, so the box is centred on it. Expects RAS input.
  """
  roi = np.asarray(roi_size, dtype=int)
  lo, hi = body_box(vol, threshold_hu)
  center = (np.asarray(vol.shape) - 1) / 2.0
  center[:2] = (lo[:2] + hi[:2]) / 2.0
  if hi[1] - lo[1] + 1 > roi[1]:  # too deep: anchor at the back (RAS: posterior = low y index)
    center[1] = lo[1] - posterior_margin + (roi[1] - 1) / 2.0
  return crop_or_pad(vol, roi_size, center=center, cval=cval)


def scale_intensity_range(vol: Volume, a_min: float = -1000.0, a_max: float = 4096.0,
                          b_min: float = 0.0, b_max: float = 1.0, clip: bool = True) -> Volume:
  """Maps [a_min, a_max] linearly to [b_min, b_max] (clipping first when `clip`), as MONAI does."""
  if a_max <= a_min:
    raise InputError(f"scale_intensity_range: a_max ({a_max}) must exceed a_min ({a_min})")
  a = vol.array
  if clip:
    a = np.clip(a, a_min, a_max)
  out = (a - a_min) / (a_max - a_min) * (b_max - b_min) + b_min
  op = {"op": "scale_intensity_range", "a_min": a_min, "a_max": a_max, "b_min": b_min,
        "b_max": b_max, "clip": clip}
  return vol.replace(op, array=out.astype(np.float32))


def preprocess(vol: Volume, spacing_mm: float = 2.0, size: Sequence[int] = (128, 128, 128),
               hu_min: float = -1000.0, hu_max: float = 4096.0,
               body_threshold_hu: float = -400.0) -> Volume:
  """The paper's deterministic chain: RAS, isotropic `spacing_mm`, body-centred `size`, [0, 1]."""
  vol = ras(vol)
  vol = spacing(vol, spacing_mm)
  vol = crop_or_pad_to_body(vol, size, threshold_hu=body_threshold_hu, cval=hu_min)
  return scale_intensity_range(vol, hu_min, hu_max, 0.0, 1.0, clip=True)


def unit_to_hu(vol: Volume) -> Volume:
  """Inverse of the last `scale_intensity_range` in the history: [0, 1] values back to HU."""
  for op in reversed(vol.history):
    if op["op"] == "scale_intensity_range":
      a = (vol.array - op["b_min"]) / (op["b_max"] - op["b_min"])
      hu = a * (op["a_max"] - op["a_min"]) + op["a_min"]
      return vol.replace({"op": "unit_to_hu", "a_min": op["a_min"], "a_max": op["a_max"]},
                         array=hu.astype(np.float32))
  raise InputError(f"{vol.source}: its history has no scale_intensity_range to invert.")


def invert(vol: Volume, shape: Sequence[int], affine: np.ndarray, order: int = 1) -> Volume:
  """Brings a preprocessed ([0, 1], model-grid) volume back to HU on an original grid.

  With the original scan's (shape, affine) the result overlays the input scan voxel for voxel; the
  model-grid volume in HU (`unit_to_hu`) written with its own affine overlays it too, at 2 mm.
  """
  return resample_to_grid(unit_to_hu(vol), shape, affine, order=order, antialias=False)
