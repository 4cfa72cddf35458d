"""Metrics against float64 NumPy references on random and structured volumes."""

import numpy as np
import pytest
from scipy import ndimage

from cvaa_jax.eval import metrics


def _ref_ssim(x, y, data_range, size=11, sigma=1.5):
  x, y = x.astype(np.float64), y.astype(np.float64)
  g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma ** 2))
  g /= g.sum()
  k = g[:, None, None] * g[None, :, None] * g[None, None, :]  # explicit 3D window, not separable
  f = lambda a: ndimage.correlate(a, k, mode="constant")[tuple(slice(size // 2, -(size // 2))
                                                               for _ in range(3))]
  mx, my = f(x), f(y)
  sxx, syy, sxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  return np.mean((2 * mx * my + c1) * (2 * sxy + c2) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2)))


def _pairs():
  rng = np.random.default_rng(0)
  a = rng.random((2, 20, 18, 16))
  yield "random", a, np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
  z, y, x = np.indices((20, 18, 16))
  ball = ((x - 8) ** 2 + (y - 9) ** 2 + (z - 10) ** 2 < 36).astype(float)
  shifted = np.roll(ball, 1, axis=0) * 0.9 + 0.05
  yield "structured", np.stack([ball, ball * 0.5]), np.stack([shifted, ball * 0.45])


@pytest.mark.parametrize("name,pred,target", list(_pairs()), ids=["random", "structured"])
def test_against_float64_numpy(name, pred, target):
  ax = (1, 2, 3)
  np.testing.assert_allclose(metrics.mae(pred, target), np.abs(pred - target).mean(ax), rtol=1e-5)
  mse = ((pred - target) ** 2).mean(ax)
  np.testing.assert_allclose(metrics.mse(pred, target), mse, rtol=1e-5)
  cos = (pred * target).sum(ax) / np.sqrt((pred ** 2).sum(ax) * (target ** 2).sum(ax))
  np.testing.assert_allclose(metrics.cosine(pred, target), cos, rtol=1e-5)
  np.testing.assert_allclose(metrics.psnr(pred, target, data_range=1.0), 10 * np.log10(1 / mse),
                             rtol=1e-5)
  ref = [_ref_ssim(p, t, 1.0) for p, t in zip(pred, target)]
  np.testing.assert_allclose(metrics.ssim(pred, target, data_range=1.0), ref, rtol=1e-4, atol=1e-5)


def test_identical_volumes_and_data_range():
  a = np.random.default_rng(1).random((16, 16, 16))
  np.testing.assert_allclose(metrics.ssim(a, a, data_range=1.0), [1.0], atol=1e-5)
  assert float(metrics.mae(a, a)[0]) == 0.0
  # Scaling both volumes and the data range together leaves PSNR and SSIM unchanged.
  b = np.clip(a + 0.05, 0, 1)
  np.testing.assert_allclose(metrics.psnr(a * 5096, b * 5096, data_range=5096.0),
                             metrics.psnr(a, b, data_range=1.0), rtol=1e-4)
  np.testing.assert_allclose(metrics.ssim(a * 5096, b * 5096, data_range=5096.0),
                             metrics.ssim(a, b, data_range=1.0), rtol=1e-3)
  with pytest.raises(TypeError):
    metrics.psnr(a, b)  # data_range has no default
