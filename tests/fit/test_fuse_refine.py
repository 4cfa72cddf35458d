"""Multi-atlas fusion (ranking, weights, coverage, uncertainty, calibration), test-time consistency
and re-projection agreement, checked against float64 NumPy."""

import jax.numpy as jnp
import numpy as np
import pytest

from cvaa_jax import drr
from cvaa_jax.data import phantom, transforms
from cvaa_jax.fit import fuse, refine, register

SIZE, FOV = 32, 256.0


def _fit(name, score, hu, cov=None):
  cov = np.ones_like(hu) if cov is None else cov
  return register.Fit(name, hu.astype(np.float32), cov.astype(np.float32), score, {}, 1.0, {}, 0.0)


def test_fusion_ranks_by_score_weights_by_coverage_and_reports_spread():
  rng = np.random.default_rng(0)
  hus = [rng.normal(0, 300, (4, 5, 6)) for _ in range(4)]
  cov = np.ones((4, 5, 6))
  cov[..., :2] = 0.0  # the best atlas does not reach the two lowest slices
  fits = [_fit("c", 0.50, hus[0]), _fit("a", 0.70, hus[1], cov), _fit("b", 0.65, hus[2]),
          _fit("d", 0.10, hus[3])]
  hu, std, chosen = fuse.fuse(fits, k=3, temperature=0.05)
  assert [n for n, _ in chosen] == ["a", "b", "c"]
  w = np.exp((np.array([0.70, 0.65, 0.50]) - 0.70) / 0.05)
  w /= w.sum()
  np.testing.assert_allclose([x for _, x in chosen], w, rtol=1e-6)
  stack = np.stack([hus[1], hus[2], hus[0]])
  cw = np.stack([cov, np.ones_like(cov), np.ones_like(cov)]) * w[:, None, None, None]
  mean = (cw * stack).sum(0) / cw.sum(0)
  np.testing.assert_allclose(hu, mean, rtol=1e-5, atol=1e-3)
  reach = np.stack([cov, np.ones_like(cov), np.ones_like(cov)])
  np.testing.assert_allclose(std, np.sqrt((reach * (stack - mean) ** 2).sum(0) / reach.sum(0)),
                             rtol=1e-4, atol=1e-3)
  # Where the best atlas does not reach, it takes no part.
  w2 = w[1:] / w[1:].sum()
  np.testing.assert_allclose(hu[..., 0], w2[0] * hus[2][..., 0] + w2[1] * hus[0][..., 0],
                             rtol=1e-5, atol=1e-3)


def test_voxels_no_atlas_reaches_are_air_and_maximally_uncertain():
  hu = np.full((3, 3, 3), 200.0)
  cov = np.ones((3, 3, 3))
  cov[0] = 0.0
  out, std, _ = fuse.fuse([_fit("a", 0.5, hu, cov)], k=1)
  assert (out[0] == -1000).all() and (std[0] == fuse.UNCOVERED_STD_HU).all()
  np.testing.assert_allclose(out[1:], 200.0)
  np.testing.assert_allclose(std[1:], 0.0, atol=1e-3)


def test_calibration_bins_error_by_predicted_spread():
  rng = np.random.default_rng(1)
  std = rng.uniform(0, 500, 20000)
  err = rng.normal(0, 1, 20000) * std  # a calibrated predictor
  bins = fuse.calibration(std, err)
  ratios = [b["mean_abs_error"] / b["mean_std"] for b in bins if b["share"] > 0.05]
  np.testing.assert_allclose(ratios, np.sqrt(2 / np.pi), rtol=0.1)
  assert sum(b["share"] for b in bins) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def truth():
  ph = phantom.lumbar_phantom(5, shape=(SIZE,) * 3, spacing_mm=FOV / SIZE, implants=False)
  unit = transforms.scale_intensity_range(ph.volume).array
  kappa = (1 / 750.0, 0.0)
  views = np.asarray(drr.normalize_projection(register.render(
      drr.unit_to_mu(jnp.asarray(unit)), register.geometries(SIZE, FOV, kappa), FOV)))
  return unit, register.Target(views, kappa, FOV)


def test_agreement_of_the_truth_is_perfect_and_matches_numpy(truth):
  unit, target = truth
  a = refine.agreement(unit, target)
  for v in ("frontal", "lateral"):
    assert a[v]["ncc"] > 0.9999 and a[v]["psnr"] > 60
  blurred = np.full_like(unit, unit.mean())
  blurred[:, :, SIZE // 2:] = unit[:, :, SIZE // 2:]
  b = refine.agreement(blurred, target)
  img = np.asarray(drr.normalize_projection(register.render(
      drr.unit_to_mu(jnp.asarray(blurred)), register.geometries(SIZE, FOV, target.geometry), FOV)),
      np.float64)
  ref_ncc = np.corrcoef(img[1].ravel(), np.asarray(target.views[1], np.float64).ravel())[0, 1]
  np.testing.assert_allclose(b["lateral"]["ncc"], ref_ncc, rtol=1e-6)
  mse = np.mean((img[0] - target.views[0]) ** 2)
  np.testing.assert_allclose(b["frontal"]["psnr"], 10 * np.log10(1 / mse), rtol=1e-5)


def test_refine_raises_agreement_stays_near_the_start_and_in_the_window(truth):
  unit, target = truth
  start = np.clip(unit + 0.02 * np.sin(np.arange(SIZE) / 3.0)[None, None, :], 0, 1)
  start[:, :, :8] = unit.mean()  # a wrong block
  before = refine.agreement(start, target)
  out = refine.refine(start, target, steps=40)
  after = refine.agreement(out, target)
  for v in ("frontal", "lateral"):
    assert after[v]["psnr"] > before[v]["psnr"] + 1.0
  assert out.min() >= 0.0 and out.max() <= 1.0
  assert np.abs(out - unit).mean() < np.abs(start - unit).mean()
  assert np.abs(out - start).max() < 0.2
