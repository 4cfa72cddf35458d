"""Multi-atlas fusion: rank the fitted atlases by how well their DRRs match the radiographs (never by
ground truth), average the best k voxel by voxel, and keep their spread as an uncertainty.

Weights are w_i ∝ exp((score_i - best) / temperature) over the k best, times each atlas's coverage
per voxel (an atlas contributes nothing beyond its scan range). The uncertainty is the standard
deviation of the k best fits' HU about the fused value, each counted equally where it reaches (not by
its weight: one dominant atlas would otherwise report zero spread however far the others disagree);
where no atlas reaches, the fused value is air and the uncertainty is `UNCOVERED_STD_HU`, so such
voxels read as "unknown", not as "certain air".
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cvaa_jax.fit.register import Fit

UNCOVERED_STD_HU = 1000.0


def rank(fits: Sequence[Fit]) -> list[Fit]:
  return sorted(fits, key=lambda f: -f.score)


def weights(fits: Sequence[Fit], k: int, temperature: float) -> tuple[list[Fit], np.ndarray]:
  """The k best fits and their normalised weights."""
  best = rank(fits)[:max(1, k)]
  s = np.array([f.score for f in best], np.float64)
  w = np.exp((s - s.max()) / max(temperature, 1e-6))
  return best, w / w.sum()


def fuse(fits: Sequence[Fit], k: int = 3, temperature: float = 0.02
         ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, float]]]:
  """(fused HU, per-voxel std in HU, [(atlas name, weight)]) of the k best fits."""
  best, w = weights(fits, k, temperature)
  hu = np.stack([f.hu for f in best]).astype(np.float64)
  reach = np.stack([f.coverage for f in best]).astype(np.float64)
  cov = reach * w[:, None, None, None]
  total = cov.sum(0)
  mean = (cov * hu).sum(0) / np.maximum(total, 1e-12)
  std = np.sqrt((reach * (hu - mean) ** 2).sum(0) / np.maximum(reach.sum(0), 1e-12))
  empty = total < 1e-6
  mean[empty] = -1000.0
  std[empty] = UNCOVERED_STD_HU
  return mean.astype(np.float32), std.astype(np.float32), [(f.name, float(x))
                                                            for f, x in zip(best, w)]


def calibration(std: np.ndarray, error: np.ndarray, bins: Sequence[float] = (0, 25, 50, 100, 200,
                                                                            400, 800, np.inf)
                ) -> list[dict]:
  """Predicted spread against the actual absolute error, binned by spread (HU): a calibrated
  uncertainty has mean |error| growing with the bin and close to ~0.8 x the spread (the mean
  absolute value of a normal variable is 0.8 sigma)."""
  out = []
  for lo, hi in zip(bins[:-1], bins[1:]):
    sel = (std >= lo) & (std < hi)
    if sel.any():
      out.append({"std_lo": float(lo), "std_hi": float(hi), "share": float(sel.mean()),
                  "mean_std": float(std[sel].mean()), "mean_abs_error": float(np.abs(error[sel]).mean())})
  return out
