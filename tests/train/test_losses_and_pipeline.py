"""Losses against hand computations; the Grain pipeline's determinism, sharding and state."""

import grain
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
