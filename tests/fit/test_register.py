"""2D/3D registration: a known warp of a phantom is recovered from its own DRRs, the image terms
are invariant to the radiograph's intensity domain, and a wrong geometry (a lateral read mirrored,
as a wrong side would give) makes the fit fail."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from cvaa_jax import drr
from cvaa_jax.data import phantom
from cvaa_jax.eval import bone
from cvaa_jax.fit import atlas as atlas_lib, register, similarity, warp

SIZE, FOV = 32, 256.0
KAPPA = (1 / 750.0, 1 / 750.0)
CFG = register.FitConfig(coarse_size=16, starts_z_mm=(-24.0, 0.0, 24.0), coarse_steps=50,
                         fine_steps=40, deform_steps=0)
TRUE = {"t": np.array([6.0, -10.0, 16.0], np.float32),
        "rot": np.arctanh(np.array([0.0, 0.0, 5.0]) / CFG.limits.max_rot_deg).astype(np.float32),
        "log_s": np.zeros(3, np.float32), "disp": np.zeros((CFG.grid,) * 3 + (3,), np.float32)}


@pytest.fixture(scope="module")
def case():
  """A phantom as an atlas, and the model-grid volume it becomes under TRUE (the patient)."""
  ph = phantom.lumbar_phantom(3, shape=(40, 40, 44), spacing_mm=8.0, implants=False, noise_hu=0.0)
  atlas = atlas_lib.from_volume(ph.volume, "phantom", spacing_mm=8.0)
  hu, _ = register.warped(atlas, TRUE, SIZE, FOV, CFG, deform=False)
  return atlas, hu


def views_of(hu, kappa=KAPPA):
  mu = drr.hu_to_mu(jnp.asarray(hu))
  return np.asarray(drr.normalize_projection(
      register.render(mu, register.geometries(SIZE, FOV, kappa), FOV))).copy()


def test_known_warp_is_recovered_from_its_own_drrs(case):
  atlas, hu = case
  fit = register.fit_atlas(atlas, register.Target(views_of(hu), KAPPA, FOV), CFG)
  m, t = warp.linear_part(fit.params, CFG.limits)
  m_true, t_true = warp.linear_part(TRUE, CFG.limits)
  # The transform maps the grid into the atlas; compare where it sends the grid's corners.
  corners = np.array([[x, y, z] for x in (-96, 96) for y in (-96, 96) for z in (-96, 96)], float)
  err = np.linalg.norm(corners @ np.asarray(m).T + t - (corners @ np.asarray(m_true).T + t_true),
                       axis=1)
  assert err.max() < 8.0, err  # one voxel of the grid
  assert bone.dice(fit.hu > 250, hu > 250) > 0.6
  assert min(fit.similarity[v]["combined"] for v in ("frontal", "lateral")) > 0.9
  assert fit.covered_share == pytest.approx(1.0, abs=0.02)


def test_a_mirrored_lateral_makes_the_fit_fail(case):
  """A lateral read as the wrong side (mirrored front to back) cannot be matched by anatomy that
  may not flip: the similarity drops and the skeleton lands in the wrong place."""
  atlas, hu = case
  views = views_of(hu)
  views[1] = views[1][:, ::-1]
  fit = register.fit_atlas(atlas, register.Target(views, KAPPA, FOV), CFG)
  assert fit.similarity["lateral"]["combined"] < 0.8
  assert bone.dice(fit.hu > 250, hu > 250) < 0.5


def test_similarity_ignores_the_intensity_domain():
  rng = np.random.default_rng(0)
  a = drr.normalize_projection(jnp.asarray(rng.random((2, 24, 24)), jnp.float32))
  w = jnp.ones((2, 24, 24))
  for fn in (similarity.ncc, similarity.gradient,
             lambda x, y, m: similarity.highpass(x, y, m, 3.0)):
    np.testing.assert_allclose(fn(a, 3.0 * a + 0.5, w), 1.0, atol=1e-5)
    np.testing.assert_allclose(fn(a, -a, w), -1.0, atol=1e-5)
  # The mask decides what counts: a disagreement outside it is not seen.
  b = a.at[:, :, :6].set(0.0)
  m = w.at[:, :, :6].set(0.0)
  np.testing.assert_allclose(similarity.ncc(a, b, m), 1.0, atol=1e-5)
  assert float(similarity.ncc(a, b, w).max()) < 0.99


def test_a_short_atlas_leaves_the_field_uncovered_and_scores_lower(case):
  atlas, hu = case
  short = dataclasses.replace(atlas, hu=atlas.hu[:, :, 14:30],
                              origin=atlas.origin + np.array([0.0, 0.0, 14 * 8.0]))
  target = register.Target(views_of(hu), KAPPA, FOV)
  fit = register.fit_atlas(short, target, CFG)
  assert fit.covered_share < 0.7
  assert fit.coverage.min() == 0.0 and fit.coverage.max() == 1.0
  # Beyond its range the atlas is air (its edge slice is not repeated: that gave a degenerate bone
  # cylinder in the prototype); only the half voxel next to the edge interpolates into it.
  outside = fit.hu[fit.coverage == 0]
  assert np.mean(np.isclose(outside, -1000, atol=0.01)) > 0.85
  assert np.mean(outside > -500) < 0.05
  assert fit.score < register.fit_atlas(atlas, target, CFG).score
