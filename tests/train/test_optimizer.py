"""The optimiser's learning-rate decay: optax's schedule bit for bit, and a train step that does not
depend on the run's length (so a continued run reuses its compiled step)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cvaa_jax.train import step as step_lib


def _reference(lr, b1, b2, total, decay_start):
  """The schedule as it was written before: optax's constant joined to a linear decay."""
  start = int(total * decay_start)
  if start >= total:
    return optax.adam(lr, b1=b1, b2=b2)
  return optax.adam(optax.join_schedules(
      [optax.constant_schedule(lr), optax.linear_schedule(lr, 0.0, total - start)], [start]),
      b1=b1, b2=b2)


@pytest.mark.parametrize("total,decay_start", [(23, 0.7), (2000, 0.7), (10, 1.0)])
def test_updates_equal_optax_schedule_with_and_without_the_argument(total, decay_start):
  params = {"w": jnp.ones((3, 2)), "b": jnp.zeros((2,))}
  ref = _reference(2e-4, 0.5, 0.99, total, decay_start)
  ours = step_lib.make_optimizer(2e-4, 0.5, 0.99, total, decay_start)
  schedule = tuple(jnp.int32(v) for v in step_lib.decay_schedule(total, decay_start))
  # Same state layout (so checkpoints written before restore), updated the same way.
  assert (jax.tree.structure(ref.init(params)) == jax.tree.structure(ours.init(params)))
  s_ref, s_ours, s_arg = ref.init(params), ours.init(params), ours.init(params)
  upd_arg = jax.jit(lambda g, s: ours.update(g, s, params, schedule=schedule))
  upd_ref = jax.jit(lambda g, s: ref.update(g, s, params))  # the train step's (jitted) form
  rng = np.random.default_rng(0)
  counts = list(range(6)) + list(range(int(total * decay_start) - 3, total + 3))
  for count in counts:
    # jump the counters to the interesting steps (around the decay's start and end)
    set_count = lambda s: jax.tree.map(
        lambda x: jnp.int32(count) if getattr(x, "dtype", None) == jnp.int32 and x.ndim == 0 else x,
        s)
    s_ref, s_ours, s_arg = set_count(s_ref), set_count(s_ours), set_count(s_arg)
    s_ref_before = s_ref
    g = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    u_ref, s_ref = ref.update(g, s_ref, params)
    u_ours, s_ours = ours.update(g, s_ours, params)
    u_arg, s_arg = upd_arg(g, s_arg)
    u_ref_jit, _ = upd_ref(g, set_count(s_ref_before))
    for a, b, c, d in zip(*(jax.tree.leaves(u) for u in (u_ref, u_ours, u_ref_jit, u_arg))):
      np.testing.assert_array_equal(a, b, err_msg=f"count {count}")
      np.testing.assert_array_equal(c, d, err_msg=f"count {count}, jitted")
  if decay_start < 1:  # the last steps' rate really decays to 0
    assert float(jnp.abs(u_ref["w"]).max()) < float(jnp.abs(ref.update(g, ref.init(params),
                                                                       params)[0]["w"]).max())


def test_compiled_step_does_not_depend_on_the_run_length():
  """Two runs that differ only in length lower to the same program: a run continued with more
  steps (or a sweep over lengths) loads the first one's step from the compilation cache."""
  import pathlib
  import sys
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
  from configs import lumbar
  from cvaa_jax.train import loop
  texts = []
  for total in (40, 400):
    config = lumbar.get_config("tiny")
    config.train.decay_start = 0.5
    scfg, state = loop.build(config, total_steps=total, abstract=True)
    size = config.data.size
    batch = {"volume": jax.ShapeDtypeStruct((2, size, size, size), jnp.float32)}
    schedule = tuple(jax.ShapeDtypeStruct((), jnp.int32) for _ in range(2))
    lowered = jax.jit(lambda s, b, r, scfg=scfg: step_lib.train_step(scfg, s, b, r)).lower(
        state, batch, schedule)
    texts.append(lowered.as_text())
  assert texts[0] == texts[1]
  # and without the argument the length is baked in (what the argument avoids)
  baked = []
  for total in (40, 400):
    config = lumbar.get_config("tiny")
    config.train.decay_start = 0.5
    scfg, state = loop.build(config, total_steps=total, abstract=True)
    baked.append(jax.jit(lambda s, b, scfg=scfg: step_lib.train_step(scfg, s, b)).lower(
        state, batch).as_text())
  assert baked[0] != baked[1]
