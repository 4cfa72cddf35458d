"""X2CT-GAN's metric conventions against scikit-image (what X2CT-GAN calls), bone metrics against
hand-made geometry."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from cvaa_jax.eval import bone, x2ct


@pytest.fixture(scope="module")
def pair():
  rng = np.random.default_rng(0)
  t = ndimage.gaussian_filter(rng.random((20, 18, 16)), 1.5)
  t = (t - t.min()) / np.ptp(t)
  return np.clip(t + rng.normal(0, 0.05, t.shape), 0, 1), t


def test_ssim_matches_scikit_image_slice_by_slice(pair):
  pred, target = pair
  per_axis = []
  for ax in range(3):
    a, b = np.moveaxis(target, ax, -1), np.moveaxis(pred, ax, -1)  # slices as channels
    per_axis.append(structural_similarity(a, b, data_range=1.0, channel_axis=-1))
  np.testing.assert_allclose(x2ct.ssim_2d_avg(pred, target), np.mean(per_axis), rtol=1e-10)


def test_psnr_conventions_follow_the_fixed_peak_and_integer_scale(pair):
  pred, target = pair
  rng_ = (0.0, 2500.0)
  a = (target * 2500).astype(np.int32).astype(float)
  b = (pred * 2500).astype(np.int32).astype(float)
  ref3d = 20 * np.log10(4095 / np.sqrt(np.mean((a - b) ** 2)))
  np.testing.assert_allclose(x2ct.psnr_3d(pred, target, rng_), ref3d, rtol=1e-12)
  ref2d = np.mean([np.mean(20 * np.log10(4095 / np.sqrt(np.mean((np.moveaxis(a, ax, 0) -
                                                                 np.moveaxis(b, ax, 0)) ** 2,
                                                                axis=(1, 2)))))
                   for ax in range(3)])
  np.testing.assert_allclose(x2ct.psnr_2d_avg(pred, target, rng_), ref2d, rtol=1e-12)
  assert x2ct.psnr_3d(target, target, rng_) == 100.0
  m = x2ct.x2ct_metrics(pred, target, rng_)
  assert set(m) == {"x2ct/mae0", "x2ct/mse0", "x2ct/cosine", "x2ct/psnr_3d", "x2ct/psnr_avg",
                    "x2ct/ssim_avg"}


def test_dice_and_hd95_on_shifted_cubes():
  a = np.zeros((30, 30, 30), bool)
  a[5:15, 5:15, 5:15] = True
  b = np.roll(a, 3, axis=0)  # shifted 3 voxels along x
  assert bone.dice(a, a) == 1.0
  np.testing.assert_allclose(bone.dice(a, b), 2 * 7 * 100 / 2000)
  # Faces perpendicular to x are 3 voxels (6 mm at 2 mm spacing) from the other cube's surface.
  np.testing.assert_allclose(bone.hd95(a, b, (2.0, 2.0, 2.0)), 6.0, atol=1e-9)
  assert bone.hd95(a, a, (1.0, 1.0, 1.0)) == 0.0
  assert bone.hd95(a, np.zeros_like(a), (1.0, 1.0, 1.0)) == float("inf")
  unit = np.where(a, (700 + 1000) / 5096, 0.2)
  m = bone.bone_metrics(unit, unit, (2.0, 2.0, 2.0))
  assert m == {"bone/dice": 1.0, "bone/hd95_mm": 0.0}


def test_x2ct_metrics_from_hu_use_that_codes_own_scale():
  """HU + 1024 clipped to [0, 2500]: X2CT-GAN's volumes. Checked by hand on two voxels' worth."""
  rng = np.random.default_rng(0)
  t_hu = rng.uniform(-1200, 3500, (12, 12, 12))
  p_hu = t_hu + rng.normal(0, 80, t_hu.shape)
  m = x2ct.x2ct_metrics_hu(p_hu, t_hu)
  scale = lambda hu: np.clip(hu + 1024, 0, 2500)
  a, b = scale(t_hu).astype(np.int32), scale(p_hu).astype(np.int32)  # x * 2500 + 0 -> int32
  ref = 20 * np.log10(4095 / np.sqrt(np.mean((a.astype(float) - b) ** 2)))
  np.testing.assert_allclose(m["x2ct/psnr_3d"], ref, rtol=1e-9)
  np.testing.assert_allclose(m["x2ct/mae0"], np.abs(scale(p_hu) - scale(t_hu)).mean() / 2500,
                             rtol=1e-9)
  assert m["x2ct/mae0"] < np.abs(p_hu - t_hu).mean() / 5096 * 5096 / 2500  # clipping shrinks it


def test_identical_and_all_zero_volumes_are_reported_not_averaged():
  from cvaa_jax.eval import metrics, report  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  t = rng.random((3, 12, 12, 12)).astype(np.float32)
  p = t.copy()
  p[1] += 0.05
  p[2] = 0.0
  m = {k: np.asarray(v) for k, v in metrics.all_metrics(p, t, data_range=1.0).items()}
  assert np.isinf(m["psnr"][0]) and np.isfinite(m["psnr"][1:]).all()
  assert np.isnan(m["cosine"][2]) and np.isfinite(m["cosine"][:2]).all()
  per_case = [{k: float(v[i]) for k, v in m.items()} for i in range(3)]
  s = report.summarize(per_case)
  assert s["psnr"]["n"] == 2 and s["psnr"]["excluded"] == 1
  np.testing.assert_allclose(s["psnr"]["mean"], np.mean(m["psnr"][1:]))
  assert s["cosine"]["excluded"] == 1 and s["mae"]["excluded"] == 0
  assert "(1 excluded)" in report.markdown_table({"x": s})


def test_native_frame_scores_rank_the_truth_above_a_wrong_volume():
  """eval/native.py: the model-grid ground truth scored on the original voxels beats the same
  volume shifted by 4 voxels and a volume of water, and its window, box and masks line up (a
  flip or offset would make the shifted one win). Measured at 8 mm: 24.7 vs 21.0 dB, Dice 0.31
  vs 0.06."""
  from cvaa_jax.data import io, transforms
  from cvaa_jax.eval import native
  from tests.conftest import BUNDLED_CT
  orig = io.load_ct(BUNDLED_CT)
  grid = transforms.preprocess(orig, spacing_mm=8.0, size=(32, 32, 32))
  truth = native.native_scores(grid, orig, -1000.0, 4096.0)
  shifted = native.native_scores(grid.replace(array=np.roll(grid.array, 4, axis=1)), orig,
                                 -1000.0, 4096.0)
  water = native.native_scores(grid.replace(array=np.full_like(grid.array, 1000 / 5096)), orig,
                               -1000.0, 4096.0)
  assert truth["psnr"] > shifted["psnr"] + 1 and truth["psnr"] > water["psnr"] + 3
  assert truth["dice"] > 0.2 and truth["dice"] > 3 * shifted["dice"] and water["dice"] == 0.0
  assert truth["mae_hu"] < shifted["mae_hu"] and np.isfinite(truth["hd95_mm"])
