"""The procedural lumbar phantom: deterministic, anatomically placed, valid HU at any grid size."""

import numpy as np
import pytest

from cvaa_jax.data import io
from cvaa_jax.data.phantom import LABELS, lumbar_phantom


@pytest.fixture(scope="module")
def ph():
  return lumbar_phantom(7, shape=(48, 48, 48), spacing_mm=5.0, implants=True)


def test_same_seed_same_patient_other_seed_other_patient(ph):
  again = lumbar_phantom(7, shape=(48, 48, 48), spacing_mm=5.0, implants=True)
  np.testing.assert_array_equal(again.volume.array, ph.volume.array)
  other = lumbar_phantom(8, shape=(48, 48, 48), spacing_mm=5.0, implants=True)
  assert np.mean(other.labels != ph.labels) > 0.02


def test_hu_ranges_per_tissue(ph):
  hu, lab = ph.volume.array, ph.labels
  assert hu.dtype == np.float32 and hu.min() >= -1024 and hu.max() <= 4096
  mean = lambda name: float(hu[lab == LABELS[name]].mean())
  assert mean("air") < -950
  assert -160 < mean("fat") < -40
  assert 0 < mean("muscle") < 110
  assert mean("cortical") > 500  # partial volume at 5 mm lowers the 1100 HU shell
  assert mean("metal") > 2000
  assert mean("gas") < -500
  io.check_volume(ph.volume)  # passes the loader's own CT plausibility checks


def test_anatomy_is_where_it_belongs(ph):
  lab = ph.labels
  idx = lambda name: np.argwhere(lab == LABELS[name])
  bone = np.concatenate([idx("cortical"), idx("cancellous")])
  body = np.argwhere(lab != LABELS["air"])
  # Spine posterior to the body's centre (RAS: low y), and five vertebrae stacked along z.
  assert bone[:, 1].mean() < body[:, 1].mean()
  z_profile = np.isin(lab, [LABELS["cortical"], LABELS["cancellous"]]).sum(axis=(0, 1))
  assert np.ptp(np.flatnonzero(z_profile)) * 5.0 > 120  # spans > 120 mm superior-inferior
  # The aorta lies on the patient's left (RAS: x below the spine's), the IVC on the right.
  vessels = idx("vessel")
  assert vessels[:, 0].min() < bone[:, 0].mean() < vessels[:, 0].max()
  # Screws enter from behind: metal reaches further posterior than the vertebral bodies' centre.
  assert idx("metal")[:, 1].min() < bone[:, 1].mean()


def test_any_grid_size_shows_the_same_patient():
  fine = lumbar_phantom(3, shape=(64, 64, 64), spacing_mm=4.0, implants=False)
  coarse = lumbar_phantom(3, shape=(32, 32, 32), spacing_mm=8.0, implants=False)
  bone = lambda p: np.isin(p.labels, [LABELS["cortical"], LABELS["cancellous"]])
  # Bone centroid in world mm agrees between the two grids.
  centroid = lambda p: p.volume.voxel_to_world(np.argwhere(bone(p)).mean(0))
  np.testing.assert_allclose(centroid(fine), centroid(coarse), atol=6.0)
  assert fine.volume.shape == (64, 64, 64) and coarse.volume.shape == (32, 32, 32)
  np.testing.assert_allclose(fine.volume.spacing, 4.0)


def test_implant_switch():
  without = lumbar_phantom(5, shape=(32, 32, 32), spacing_mm=8.0, implants=False)
  with_ = lumbar_phantom(5, shape=(32, 32, 32), spacing_mm=8.0, implants=True)
  assert not (without.labels == LABELS["metal"]).any()
  assert (with_.labels == LABELS["metal"]).sum() > 5
