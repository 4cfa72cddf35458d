"""Micro-batched steps (`train.microbatch`): the same update as the one-pass step, from the same
inputs, and a clear error where the micro-batch does not divide the batch."""

import dataclasses
import sys

import jax
import numpy as np
import pytest
from absl import flags

from cvaa_jax import config as config_lib
from cvaa_jax.data.phantom import lumbar_phantom
from cvaa_jax.errors import ConfigError
from cvaa_jax.train import loop
from cvaa_jax.train import step as step_lib
from tests.conftest import ROOT


def _config(**train):
  flags.FLAGS.mark_as_parsed()
  sys.path.insert(0, str(ROOT))
  from configs import lumbar  # pylint: disable=g-import-not-at-top
  c = lumbar.get_config("tiny")
  c.train.batch_size = 4
  # Every per-step random draw on: detector noise, intensity variation, per-sample geometry, so
  # the test also checks that both forms see the same rendered views.
  c.drr.noise_photons = 2e4
  c.drr.intensity_gain = 0.1
  c.drr.sid_range = (600.0, 1500.0)
  c.drr.parallel_share = 0.3
  for k, v in train.items():
    setattr(c.train, k, v)
  return config_lib.validate(c)


def _volumes(n):
  return np.stack([(np.clip(lumbar_phantom(s, (16, 16, 16), 16.0).volume.array, -1000, 4096)
                    + 1000) / 5096 for s in range(n)]).astype(np.float32)


def test_micro_batches_give_the_one_pass_update():
  batch = {"volume": _volumes(4)}
  out = {}
  # Both forms of the micro-batch loop: unrolled (the CPU's) and lax.scan (the accelerators').
  for micro, form in ((0, "auto"), (2, "unrolled"), (2, "scan")):
    scfg, state = loop.build(_config(microbatch=micro), total_steps=10)
    assert scfg.accum_steps == {0: 1, 2: 2}[micro]
    scfg = dataclasses.replace(scfg, accum_form=form)
    fn = jax.jit(lambda s, b, scfg=scfg: step_lib.train_step(scfg, s, b))
    for _ in range(2):  # the second step uses Adam's state from the first
      state, metrics = fn(state, batch)
    out[form] = jax.device_get((state.g_params, state.d_params, state.ema_params, metrics))
  lr = _config().train.learning_rate
  g0, d0, e0, m0 = out["auto"]
  for micro in ("unrolled", "scan"):
    g, d, e, m = out[micro]
    for k in m0:
      np.testing.assert_allclose(m[k], m0[k], rtol=1e-5, atol=1e-7, err_msg=f"{micro}: {k}")
    # Adam normalises each gradient, so where summation-order rounding flips the sign of a
    # near-zero gradient a parameter can differ by up to 2 lr per step; almost all agree tightly.
    leaves = list(zip(jax.tree.leaves((g, d, e)), jax.tree.leaves((g0, d0, e0))))
    for a, b in leaves:
      np.testing.assert_allclose(a, b, atol=4.01 * lr)
    diffs = np.concatenate([np.abs(a - b).ravel() for a, b in leaves])
    assert np.mean(diffs < 1e-6) > 0.95, (micro, np.mean(diffs < 1e-6))
  # Not vacuous: a different batch gives a different update.
  scfg, state = loop.build(_config(), total_steps=10)
  other, _ = jax.jit(lambda s, b: step_lib.train_step(scfg, s, b))(
      state, {"volume": batch["volume"][::-1].copy() * 0.9})
  assert max(np.abs(a - b).max() for a, b in
             zip(jax.tree.leaves(other.g_params), jax.tree.leaves(g0))) > 1e-3 * lr


def test_accumulation_form_picks_the_backends_loop():
  assert step_lib.accumulation_form("auto") == (
      "unrolled" if jax.default_backend() == "cpu" else "scan")
  assert step_lib.accumulation_form("scan") == "scan"
  with pytest.raises(ValueError, match="accumulation form"):
    step_lib.accumulation_form("loop")


def test_split_micro_takes_every_kth_sample():
  x = np.arange(8 * 3).reshape(8, 3)
  parts = np.asarray(step_lib.split_micro(x, 2))
  assert parts.shape == (2, 4, 3)
  np.testing.assert_array_equal(parts[0], x[0::2])
  np.testing.assert_array_equal(parts[1], x[1::2])


def test_a_microbatch_that_does_not_divide_the_batch_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match=r"train\.microbatch \(3\) must divide"):
    loop.train_and_evaluate(_config(microbatch=3), tmp_path)
  with pytest.raises(ConfigError, match=r"train\.microbatch: must be >= 0"):
    _config(microbatch=-1)
