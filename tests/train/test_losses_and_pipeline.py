"""Losses against hand computations; the Grain pipeline's determinism, sharding and state."""

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from cvaa_jax.data import dataset, pipeline
from cvaa_jax.train import losses


def test_lsgan_and_reconstruction_losses():
  real, fake = jnp.array([1.0, 0.5]), jnp.array([0.0, 0.5])
  r, f = losses.lsgan_d(real, fake)
  np.testing.assert_allclose([r, f], [0.125, 0.125])
  np.testing.assert_allclose(losses.lsgan_g(fake), (1 + 0.25) / 2)
  a = jnp.zeros((1, 4, 4, 4)).at[0, 1, 2, 3].set(1.0)
  np.testing.assert_allclose(losses.voxel_mse(a, jnp.zeros_like(a)), 1 / 64)
  # One bright voxel: each mean-projection has one pixel of 1/4 out of 16 pixels.
  np.testing.assert_allclose(losses.projection_l1(a, jnp.zeros_like(a)), 0.25 / 16, rtol=1e-6)
  assert float(losses.projection_l1(a, a)) == 0.0


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
  from cvaa_jax.config import base_config
  cfg = base_config().data.to_dict()
  cfg.update(num_phantoms=10, size=16, spacing_mm=16.0, split=(0.8, 0.1, 0.1))
  return dataset.prepare(cfg, tmp_path_factory.mktemp("data"), seed=0, log=lambda *_: None)


def _indices(it, n):
  return [tuple(int(i) for i in next(it)["index"]) for _ in range(n)]


def test_train_batches_are_seeded_reshuffled_and_sharded(cases):
  n_train = sum(c.split == "train" for c in cases)
  ds = pipeline.train_dataset(cases, 2, seed=0, process_index=0, process_count=1)
  first = _indices(iter(ds), 2 * n_train // 2)
  again = _indices(iter(pipeline.train_dataset(cases, 2, seed=0, process_index=0,
                                               process_count=1)), 2 * n_train // 2)
  assert first == again
  epoch1 = sorted(i for b in first[:n_train // 2] for i in b)
  epoch2 = [i for b in first[n_train // 2:] for i in b]
  assert epoch1 == list(range(n_train))  # every training case once per epoch
  assert epoch2 != [i for b in first[:n_train // 2] for i in b]  # new order next epoch
  shards = [_indices(iter(pipeline.train_dataset(cases, 1, seed=0, process_index=p,
                                                 process_count=2)), n_train // 2)
            for p in (0, 1)]
  a, b = ({i for (i,) in s} for s in shards)
  assert a.isdisjoint(b) and len(a | b) == n_train


def test_iterator_state_restores_the_exact_next_batches(cases):
  it = iter(pipeline.train_dataset(cases, 2, seed=3, shift_voxels=2))
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it)["volume"] for _ in range(3)]
  fresh = iter(pipeline.train_dataset(cases, 2, seed=3, shift_voxels=2))
  fresh.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(fresh)["volume"], e)


def test_random_shift_moves_the_volume_and_fills_with_air():
  vol = np.zeros((8, 8, 8), np.float32)
  vol[2:6, 2:6, 2:6] = 1.0
  out = pipeline.RandomShift(2).random_map({"volume": vol, "index": 0},
                                            np.random.default_rng(4))["volume"]
  assert out.sum() <= vol.sum() and out.shape == vol.shape and not np.array_equal(out, vol)
  assert pipeline.RandomShift(0).random_map({"volume": vol}, np.random.default_rng(0))[
      "volume"] is vol


def test_workers_deliver_the_same_batches(cases):
  flags.FLAGS.mark_as_parsed()
  seq = _indices(iter(pipeline.train_dataset(cases, 2, seed=1)), 4)
  par = _indices(iter(pipeline.train_dataset(cases, 2, seed=1, num_workers=2)), 4)
  assert seq == par


def test_eval_batches_are_fixed_and_padded(cases):
  batches = list(pipeline.eval_batches(cases, "val", 4))
  n_val = sum(c.split == "val" for c in cases)
  assert sum(int(b["valid"].sum()) for b in batches) == n_val
  assert all(b["volume"].shape == (4, 16, 16, 16) for b in batches)


def test_processes_read_blocks_that_stack_into_the_one_process_batches(cases):
  """Two processes with half the batch each read disjoint blocks whose stack, in process order, is
  exactly the batch one process reads; together they see every case once per epoch."""
  one = iter(pipeline.train_dataset(cases, 4, seed=1, shift_voxels=1))
  two = [iter(pipeline.train_dataset(cases, 2, seed=1, shift_voxels=1, process_index=p,
                                     process_count=2)) for p in (0, 1)]
  for _ in range(6):
    a = next(one)
    b = [next(it) for it in two]
    np.testing.assert_array_equal(a["index"], np.concatenate([x["index"] for x in b]))
    np.testing.assert_array_equal(a["volume"], np.concatenate([x["volume"] for x in b]))
    assert set(b[0]["index"].tolist()).isdisjoint(b[1]["index"].tolist())


def test_window_l1_against_float64_and_its_gradient_outside_the_window():
  rng = np.random.default_rng(0)
  pred, target = rng.random((2, 3, 5, 5, 5))
  lo, hi = 0.2, 0.4
  ref = np.mean(np.abs(np.clip(pred, lo, hi) - np.clip(target, lo, hi))) / (hi - lo)
  got = losses.window_l1(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32), lo, hi)
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  grad = np.asarray(jax.grad(losses.window_l1)(jnp.asarray(pred, jnp.float32),
                                               jnp.asarray(target, jnp.float32), lo, hi))
  inside = (pred > lo) & (pred < hi) & (np.abs(np.clip(pred, lo, hi) - np.clip(target, lo, hi)) > 0)
  outside = (pred < lo) | (pred > hi)
  assert np.all(grad[outside] == 0) and outside.any()
  np.testing.assert_allclose(np.abs(grad[inside]), 1 / ((hi - lo) * pred.size), rtol=1e-5)


def test_bone_mse_weights_only_the_targets_bone_voxels():
  rng = np.random.default_rng(3)
  target = rng.random((2, 6, 6, 6)) * 0.4
  pred = rng.random((2, 6, 6, 6)) * 0.4
  thr = 0.25
  bone = target > thr
  assert 0 < bone.mean() < 1
  ref = np.sum(np.square(pred - target)[bone]) / target.size  # float64, over all voxels
  got = losses.bone_mse(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32), thr)
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  grad = np.asarray(jax.grad(losses.bone_mse)(jnp.asarray(pred, jnp.float32),
                                              jnp.asarray(target, jnp.float32), thr))
  assert np.all(grad[~bone] == 0)
  np.testing.assert_allclose(grad[bone], 2 * (pred - target)[bone] / target.size, rtol=1e-4)


def test_the_window_and_bone_terms_enter_the_generator_loss_with_their_weights():
  from configs import lumbar
  from cvaa_jax.data.phantom import lumbar_phantom
  from cvaa_jax.train import loop, step as step_lib
  config = lumbar.get_config("tiny")
  config.train.batch_size = 2
  config.train.w_window = 2.0
  config.train.w_bone = 3.0
  scfg, state = loop.build(config, total_steps=4)
  assert scfg.w_window == 2.0 and scfg.window_hu == (-200.0, 1000.0)
  assert scfg.w_bone == 3.0 and scfg.bone_hu == 150.0
  vols = np.stack([(np.clip(lumbar_phantom(s, (16,) * 3, 16.0).volume.array, -1000, 4096) + 1000)
                   / 5096 for s in range(2)]).astype(np.float32)
  _, m = jax.jit(lambda s, b: step_lib.train_step(scfg, s, b))(state, {"volume": vols})
  m = {k: float(v) for k, v in m.items()}
  assert m["g/window"] > 0 and 0 < m["g/bone"] < m["g/recon"]
  np.testing.assert_allclose(m["g/total"], 0.1 * m["g/adv"] + 10 * m["g/recon"] + 10 * m["g/proj"]
                             + 2.0 * m["g/window"] + 3.0 * m["g/bone"], rtol=1e-5)
