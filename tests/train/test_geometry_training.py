"""Training with a geometry drawn per sample: the draws, the rendered views and the step."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from cvaa_jax import config as config_lib
from cvaa_jax.data import dataset
from cvaa_jax.errors import ConfigError
from cvaa_jax.models import projection
from cvaa_jax.train import loop
from cvaa_jax.train import step as step_lib
from tests.conftest import ROOT


def _config(**drr):
  flags.FLAGS.mark_as_parsed()
  sys.path.insert(0, str(ROOT))
  from configs import lumbar  # pylint: disable=g-import-not-at-top
  c = lumbar.get_config("tiny")
  for k, v in drr.items():
    setattr(c.drr, k, v)
  return config_lib.validate(c)


def test_geometry_draws_follow_the_config():
  scfg, _ = loop.build(_config(sid_range=(500.0, 2000.0), parallel_share=0.25,
                               opposite_side_share=0.5), total_steps=1, abstract=True)
  g = np.asarray(step_lib.sample_geometry(scfg, jax.random.key(0), 4000))
  assert g.shape == (4000, 2)
  parallel = g == 0
  assert abs(parallel.mean() - 0.25) < 0.03
  cone = g[~parallel]
  assert abs((cone < 0).mean() - 0.5) < 0.03  # opposite side: negative kappa
  sid = 1 / np.abs(cone)
  assert sid.min() >= 500 - 1e-3 and sid.max() <= 2000 + 1e-3
  # Uniform in 1/SID: the median kappa is the mid-point of [1/2000, 1/500].
  assert abs(np.median(np.abs(cone)) - (1 / 2000 + 1 / 500) / 2) < 5e-5
  fixed, _ = loop.build(_config(sid_range=(0.0, 0.0), parallel_share=0.0, opposite_side_share=0.0),
                        total_steps=1, abstract=True)
  assert not fixed.random_geometry
  np.testing.assert_allclose(step_lib.sample_geometry(fixed, jax.random.key(0), 3),
                             np.full((3, 2), 1 / 750), rtol=1e-6)


def test_bad_geometry_ranges_are_config_errors():
  with pytest.raises(ConfigError, match="sid_range"):
    _config(sid_range=(900.0, 600.0))
  with pytest.raises(ConfigError, match="inside"):
    _config(sid_range=(100.0, 600.0))
  with pytest.raises(ConfigError, match="parallel_share"):
    _config(parallel_share=1.5)


def test_randomised_step_renders_each_sample_in_its_geometry_and_trains(tmp_path):
  config = _config(sid_range=(600.0, 1500.0), parallel_share=0.3, opposite_side_share=0.3)
  cases = dataset.prepare(config.data.to_dict(), tmp_path / "data", seed=0, log=lambda *_: None)
  scfg, state = loop.build(config, total_steps=4)
  vols = jnp.asarray(np.stack([np.asarray(c.load()) for c in cases[:2]]))
  # Per-sample rendering equals rendering each sample's canonical view on its own.
  geometry = jnp.asarray([[1 / 700, -1 / 1200], [0.0, 1 / 900]], jnp.float32)
  render = jax.jit(lambda v, g: step_lib.render_views(scfg, v, geometry=g))
  f, l = render(vols, geometry)
  for i in range(2):  # sample i's views, rendered with sample i's geometry in both slots
    fi, li = render(vols[i:i + 1].repeat(2, 0), geometry[i:i + 1].repeat(2, 0))
    np.testing.assert_allclose(f[i], fi[0], atol=1e-5)
    np.testing.assert_allclose(l[i], li[0], atol=1e-5)
  fixed = jax.jit(lambda v: step_lib.render_views(scfg, v))(vols)
  same = render(vols, jnp.full((2, 2), 1 / 750, jnp.float32))
  np.testing.assert_allclose(same[0], fixed[0], atol=1e-4)
  assert float(jnp.abs(f[1] - fixed[0][1]).mean()) > 1e-3  # parallel differs from cone
  step = jax.jit(lambda s, b: step_lib.train_step(scfg, s, b))
  before = jax.tree.map(np.asarray, state.g_params)
  for _ in range(2):
    state, m = step(state, {"volume": vols})
  assert all(np.isfinite(float(v)) for v in m.values())
  assert int(state.bad_step) == -1
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), state.g_params, before)
  assert max(jax.tree.leaves(moved)) > 0
  # Prediction with per-sample geometry uses the same lifting.
  pred = jax.jit(lambda p, v, g: step_lib.predict(scfg, p, v, geometry=g))(state.ema_params, vols,
                                                                           geometry)
  assert pred.shape == vols.shape
  assert projection.view_inv_sid(None, 0) is None
