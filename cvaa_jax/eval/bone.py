"""Bone-aware metrics for surgical planning: Dice of the bone mask at an HU threshold, and the 95th
percentile symmetric surface distance (HD95) in millimetres, on host NumPy (distance transforms)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def bone_mask(unit_volume: np.ndarray, threshold_hu: float = 250.0, hu_min: float = -1000.0,
              hu_max: float = 4096.0) -> np.ndarray:
  """Voxels above `threshold_hu` of a [0, 1]-windowed volume."""
  return np.asarray(unit_volume) * (hu_max - hu_min) + hu_min > threshold_hu


def dice(a: np.ndarray, b: np.ndarray) -> float:
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  total = a.sum() + b.sum()
  return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def _surface(mask: np.ndarray) -> np.ndarray:
  return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(a: np.ndarray, b: np.ndarray, spacing_mm) -> float:
  """95th percentile of the distances from each surface voxel of one mask to the other's surface,
  both directions pooled (mm). inf when exactly one mask is empty, 0 when both are."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  if not a.any() and not b.any():
    return 0.0
  if not a.any() or not b.any():
    return float("inf")
  sa, sb = _surface(a), _surface(b)
  da = ndimage.distance_transform_edt(~sb, sampling=spacing_mm)[sa]
  db = ndimage.distance_transform_edt(~sa, sampling=spacing_mm)[sb]
  return float(np.percentile(np.concatenate([da, db]), 95))


def bone_metrics(pred: np.ndarray, target: np.ndarray, spacing_mm, threshold_hu: float = 250.0,
                 hu_min: float = -1000.0, hu_max: float = 4096.0) -> dict[str, float]:
  mp = bone_mask(pred, threshold_hu, hu_min, hu_max)
  mt = bone_mask(target, threshold_hu, hu_min, hu_max)
  return {"bone/dice": dice(mp, mt), "bone/hd95_mm": hd95(mp, mt, spacing_mm)}
