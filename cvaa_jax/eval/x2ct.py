"""X2CT-GAN's metric conventions (kylekma/X2CT, 3DGAN/test.py + lib/utils/metrics_np.py), so our
numbers can sit beside published ones. Re-implemented from their definitions, not copied:

  * MAE0 / MSE0 / cosine: on the [0, 1] volumes, as ours.
  * PSNR-3d: volumes mapped back to their intensity scale `x * (hi - lo) + lo`, truncated to int32,
    then 20 log10(4095 / RMSE) per volume (peak fixed at 4095 whatever the scale; MSE 0 -> 100 dB).
  * PSNR-avg: the same scale, but per 2D slice along each of the three axes, averaged over slices,
    then over the three directions.
  * SSIM-avg: on [0, 1] volumes, 2D SSIM of scikit-image's defaults (7x7 uniform window, sample
    covariance, k1 0.01, k2 0.03, 3-pixel border excluded) of every slice along each axis,
    averaged over slices, then over the three directions.
Every report that uses these names them "X2CT-GAN convention" with the intensity scale used
(X2CT-GAN's code defaults to CT_MIN_MAX = [0, 5800]; their experiment files set their own).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _to_scale(x: np.ndarray, intensity_range: tuple[float, float]) -> np.ndarray:
  lo, hi = intensity_range
  return (np.asarray(x, np.float64) * (hi - lo) + lo).astype(np.int32).astype(np.float64)


def _psnr(mse: np.ndarray, peak: float) -> np.ndarray:
  mse = np.asarray(mse, np.float64)
  out = 20 * np.log10(peak / np.sqrt(np.where(mse == 0, 1e-10, mse)))
  return np.where(mse == 0, 100.0, out)


def psnr_3d(pred, target, intensity_range: tuple[float, float], peak: float = 4095.0) -> float:
  a, b = _to_scale(target, intensity_range), _to_scale(np.clip(pred, 0, 1), intensity_range)
  return float(_psnr(np.mean((a - b) ** 2), peak))


def psnr_2d_avg(pred, target, intensity_range: tuple[float, float], peak: float = 4095.0) -> float:
  a, b = _to_scale(target, intensity_range), _to_scale(np.clip(pred, 0, 1), intensity_range)
  se = (a - b) ** 2
  per_axis = [np.mean(_psnr(se.mean(axis=tuple(x for x in range(3) if x != ax)), peak))
              for ax in range(3)]
  return float(np.mean(per_axis))


def _ssim_2d(x: np.ndarray, y: np.ndarray, data_range: float, win: int = 7) -> float:
  """scikit-image's structural_similarity defaults for one 2D image pair."""
  k1, k2 = 0.01, 0.03
  n = win * win
  cov_norm = n / (n - 1.0)
  f = lambda a: ndimage.uniform_filter(a, size=win)  # mode 'reflect', as skimage
  ux, uy = f(x), f(y)
  vx = cov_norm * (f(x * x) - ux * ux)
  vy = cov_norm * (f(y * y) - uy * uy)
  vxy = cov_norm * (f(x * y) - ux * uy)
  c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
  pad = (win - 1) // 2
  return float(s[pad:-pad, pad:-pad].mean())


def ssim_2d_avg(pred, target, data_range: float = 1.0) -> float:
  a = np.asarray(target, np.float64)
  b = np.clip(np.asarray(pred, np.float64), 0, 1)
  per_axis = []
  for ax in range(3):
    sa, sb = np.moveaxis(a, ax, 0), np.moveaxis(b, ax, 0)
    per_axis.append(np.mean([_ssim_2d(sa[i], sb[i], data_range) for i in range(sa.shape[0])]))
  return float(np.mean(per_axis))


HU_OFFSET = 1024.0  # X2CT-GAN's volumes: HU + 1024, clipped to CT_MIN_MAX


def hu_to_x2ct_unit(hu, intensity_range: tuple[float, float] = (0.0, 2500.0)) -> np.ndarray:
  """HU -> X2CT-GAN's [0, 1] input: (clip(HU + 1024, lo, hi) - lo) / (hi - lo)."""
  lo, hi = intensity_range
  return (np.clip(np.asarray(hu, np.float64) + HU_OFFSET, lo, hi) - lo) / (hi - lo)


def x2ct_metrics_hu(pred_hu, target_hu, intensity_range: tuple[float, float] = (0.0, 2500.0)
                    ) -> dict[str, float]:
  """X2CT-GAN's metrics from two HU volumes, on that code's own intensity scale (HU + 1024 clipped
  to `intensity_range`, default the [0, 2500] of its experiment files), so the numbers match what
  its test script prints for the same volumes."""
  return x2ct_metrics(hu_to_x2ct_unit(pred_hu, intensity_range),
                      hu_to_x2ct_unit(target_hu, intensity_range), intensity_range)


def x2ct_metrics(pred, target, intensity_range: tuple[float, float]) -> dict[str, float]:
  """One volume pair (X, Y, Z) in [0, 1] -> X2CT-GAN's reported metrics."""
  p, t = np.clip(np.asarray(pred, np.float64), 0, 1), np.asarray(target, np.float64)
  cos = float((p * t).sum() / (np.linalg.norm(p) * np.linalg.norm(t)))
  return {"x2ct/mae0": float(np.abs(p - t).mean()), "x2ct/mse0": float(((p - t) ** 2).mean()),
          "x2ct/cosine": cos, "x2ct/psnr_3d": psnr_3d(p, t, intensity_range),
          "x2ct/psnr_avg": psnr_2d_avg(p, t, intensity_range), "x2ct/ssim_avg": ssim_2d_avg(p, t)}
