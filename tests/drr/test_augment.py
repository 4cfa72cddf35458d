"""DRR augmentations: off means identity, seeded means repeatable, and the physics is right."""

import jax
import jax.numpy as jnp
import numpy as np

from cvaa_jax import drr
from cvaa_jax.drr import augment


def test_off_by_default_is_identity():
  g = drr.cone_beam("ap", (8, 8))
  key = jax.random.key(0)
  same = augment.jitter_geometry(g, key)
  np.testing.assert_allclose(same.source, g.source)
  np.testing.assert_allclose(same.detector_center, g.detector_center)
  img = jnp.linspace(0, 1, 64).reshape(8, 8)
  np.testing.assert_allclose(augment.intensity_variation(img, key), img, atol=1e-7)


def test_jitter_is_seeded_bounded_and_keeps_the_view_axis_aligned():
  g = drr.cone_beam("lateral", (8, 8))
  a = augment.jitter_geometry(g, jax.random.key(1), shift_mm=10.0, distance_frac=0.1)
  b = augment.jitter_geometry(g, jax.random.key(1), shift_mm=10.0, distance_frac=0.1)
  c = augment.jitter_geometry(g, jax.random.key(2), shift_mm=10.0, distance_frac=0.1)
  np.testing.assert_array_equal(a.source, b.source)
  assert not np.allclose(a.source, c.source)
  shift = np.asarray(a.detector_center - g.detector_center)
  assert np.all(np.abs(shift) <= 10.0)
  sdd = np.linalg.norm(np.asarray(a.source - a.detector_center))
  assert 0.9 * 1000 <= sdd <= 1.1 * 1000
  np.testing.assert_allclose(np.cross(np.asarray(a.source - a.detector_center), [1.0, 0, 0]), 0,
                             atol=1e-3)  # still along x: the Joseph path applies
  vol = jnp.ones((8, 8, 8)) * 0.02
  img = drr.project(vol, (4.0,) * 3, (-14.0,) * 3, a)
  assert img.shape == (8, 8) and float(img.max()) > 0


def test_poisson_noise_has_the_quantum_variance():
  p = jnp.full((256, 256), 2.0)
  photons = 1e4
  noisy = augment.poisson_noise(p, jax.random.key(0), photons)
  # Var of -log(N / n0) ~ 1 / E[N] with E[N] = n0 exp(-p).
  expected_var = 1.0 / (photons * np.exp(-2.0))
  np.testing.assert_allclose(float(jnp.var(noisy)), expected_var, rtol=0.05)
  np.testing.assert_allclose(float(jnp.mean(noisy)), 2.0, atol=0.01)
