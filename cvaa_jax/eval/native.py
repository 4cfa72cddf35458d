"""Scores in the patient's own frame: a model-grid prediction brought back to HU on the original
scan's voxels (`transforms.invert`) and compared there with the original HU, inside the model's
field of view. The ground truth's own model-grid volume scored this way is the ceiling the grid's
voxel size allows."""

from __future__ import annotations

import numpy as np

from cvaa_jax.data import transforms
from cvaa_jax.data.volume import Volume
from cvaa_jax.eval import bone


def native_scores(model_vol: Volume, orig: Volume, hu_min: float, hu_max: float,
                  bone_hu: float = 250.0, with_hd95: bool = True) -> dict[str, float]:
  """PSNR ([hu_min, hu_max] window), MAE in HU, bone Dice (and HD95 in mm) of `model_vol` (a [0, 1]
  model-grid volume whose history holds its intensity window) against the original scan `orig`."""
  # The original voxels whose centres fall inside the model's field of view: a box in index space
  # (the body-centred crop is axis-aligned in the scan, so the box is the field of view).
  s = np.asarray(model_vol.shape, float)
  corners = np.array([[i, j, k] for i in (-0.5, s[0] - 0.5) for j in (-0.5, s[1] - 0.5)
                      for k in (-0.5, s[2] - 0.5)])
  idx = orig.world_to_voxel(model_vol.voxel_to_world(corners))
  lo = np.clip(np.floor(idx.min(0)).astype(int) + 1, 0, np.asarray(orig.shape))
  hi = np.clip(np.ceil(idx.max(0)).astype(int), 0, np.asarray(orig.shape))
  box = tuple(slice(a, b) for a, b in zip(lo, hi))
  shift = np.eye(4)
  shift[:3, 3] = lo
  pred_hu = np.clip(transforms.invert(model_vol, tuple(hi - lo), orig.affine @ shift).array,
                    hu_min, hu_max)
  gt_hu = np.clip(np.asarray(orig.array[box], np.float32), hu_min, hu_max)
  mse = float(np.mean(((pred_hu - gt_hu) / (hu_max - hu_min)) ** 2))
  mp, mt = pred_hu > bone_hu, gt_hu > bone_hu
  out = {"psnr": float(10 * np.log10(1.0 / max(mse, 1e-12))),
         "mae_hu": float(np.abs(pred_hu - gt_hu).mean()), "dice": bone.dice(mp, mt)}
  if with_hd95:
    out["hd95_mm"] = bone.hd95(mp, mt, tuple(float(v) for v in orig.spacing))
  return out
