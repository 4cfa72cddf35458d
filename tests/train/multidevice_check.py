"""Run as a subprocess with 4 fake CPU devices: the train step on a 4-device 'data' mesh equals the
1-device step on the same global batch (pmap semantics: replicated state, gradients averaged)."""

import dataclasses
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=4").strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from configs import lumbar  # noqa: E402
from cvaa_jax.data.phantom import lumbar_phantom  # noqa: E402
from cvaa_jax.train import loop, step as step_lib  # noqa: E402


def main():
  assert jax.device_count() == 4, jax.devices()
  config = lumbar.get_config("tiny")
  config.train.batch_size = 4
  scfg, host_state = loop.build(config, total_steps=10)
  vols = np.stack([(np.clip(lumbar_phantom(s, (16, 16, 16), 16.0).volume.array, -1000, 4096)
                    + 1000) / 5096 for s in range(4)]).astype(np.float32)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = Mesh(np.array(devices), ("data",))
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    fn = jax.jit(lambda s, b: step_lib.train_step(scfg, s, b), in_shardings=(repl, {"volume": data}),
                 out_shardings=(repl, repl))
    state = jax.device_put(host_state, repl)
    batch = {"volume": jax.device_put(vols, data)}
    state, metrics = fn(state, batch)
    results.append(jax.device_get((state.g_params, state.d_params, metrics)))
  (g1, d1, m1), (g4, d4, m4) = results
  # Losses and gradient norms agree: a missing average (sum over devices) or a doubled one would
  # show as a 4x gradient norm.
  for k in m1:
    np.testing.assert_allclose(m4[k], m1[k], rtol=1e-4, err_msg=k)
  # Parameters after one Adam step agree. Adam's first update is lr * sign(gradient), so where
  # reduction-order rounding flips the sign of a near-zero gradient a parameter differs by 2 lr:
  # that is the bound, and almost all parameters must agree far more tightly.
  lr = config.train.learning_rate
  for a, b in zip(jax.tree.leaves((g1, d1)), jax.tree.leaves((g4, d4))):
    np.testing.assert_allclose(a, b, atol=2.01 * lr)
  diffs = np.concatenate([np.abs(a - b).ravel() for a, b in
                          zip(jax.tree.leaves((g1, d1)), jax.tree.leaves((g4, d4)))])
  assert np.mean(diffs < 1e-6) > 0.95, np.mean(diffs < 1e-6)
  assert set(m1) >= {"g/adv", "g/recon", "g/proj", "d/real", "d/fake", "g/grad_norm",
                     "d/grad_norm", "g/param_norm", "d/param_norm"}
  assert all(np.isfinite(v) for v in m1.values())

  # Guard rail: a NaN in the data makes the loss non-finite; the state records the first bad step
  # and the loop's check names it (the 4-device program is reused here).
  state = jax.device_put(host_state, repl)
  batch = {"volume": jax.device_put(vols, data)}
  state, _ = fn(state, batch)
  assert int(state.bad_step) == -1
  loop._check_finite(state)  # pylint: disable=protected-access
  state, _ = fn(state, {"volume": jax.device_put(vols.copy() * np.nan, data)})
  state, _ = fn(state, batch)
  try:
    loop._check_finite(state)  # pylint: disable=protected-access
    raise AssertionError("non-finite loss not caught")
  except loop.NonFiniteError as e:
    assert "at step 1" in str(e), e
  _micro_batches_stay_on_their_devices(vols)
  if len(sys.argv) > 1:  # a checkpoint written from 4 devices, for the 1-device restore test
    import json  # pylint: disable=g-import-not-at-top
    import pathlib  # pylint: disable=g-import-not-at-top
    from cvaa_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
    from cvaa_jax.data import pipeline, dataset  # pylint: disable=g-import-not-at-top
    work = pathlib.Path(sys.argv[1])
    (work / "config.json").write_text(config.to_json_best_effort(indent=1))
    cases = dataset.prepare(config.data.to_dict(), work / "data", seed=0, log=lambda *_: None)
    ckpt = checkpoint.Checkpointer(work, keep=1)
    ckpt.save(2, state, iter(pipeline.train_dataset(cases, 4, seed=0)),
              json.loads(config.to_json_best_effort()))
    ckpt.wait()
    ckpt.close()
    np.savez(work / "ema.npz", *[np.asarray(x) for x in jax.tree.leaves(state.ema_params)])
  print("MULTIDEVICE OK")


def _micro_batches_stay_on_their_devices(vols):
  """Global batch 8 on 4 devices in micro-batches of 1 per device (2 accumulated passes) equals
  the one-pass step on one device, and moves no batch data between devices (no all-gather or
  all-to-all in the compiled program: only the gradients' all-reduce)."""
  batch = np.concatenate([vols, vols[::-1] * 0.9])
  results = []
  for devices, micro, form in ((jax.devices()[:1], 0, "auto"), (jax.devices(), 1, "unrolled"),
                               (jax.devices(), 1, "scan")):
    config = lumbar.get_config("tiny")
    config.train.batch_size, config.train.microbatch = 8, micro
    scfg, host_state = loop.build(config, total_steps=10)
    assert scfg.accum_steps == (2 if micro else 1)
    scfg = dataclasses.replace(scfg, accum_form=form)
    mesh = Mesh(np.array(devices), ("data",))
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    fn = jax.jit(lambda s, b, scfg=scfg: step_lib.train_step(scfg, s, b),
                 in_shardings=(repl, {"volume": data}), out_shardings=(repl, repl))
    args = (jax.device_put(host_state, repl), {"volume": jax.device_put(batch, data)})
    if micro:
      hlo = fn.lower(*args).compile().as_text()
      assert " all-gather(" not in hlo and " all-to-all(" not in hlo, "batch moved between devices"
      assert " all-reduce(" in hlo
    state, metrics = fn(*args)
    results.append(jax.device_get((state.g_params, state.d_params, metrics)))
  (g1, d1, m1) = results[0]
  lr = lumbar.get_config("tiny").train.learning_rate
  for g4, d4, m4 in results[1:]:
    for k in m1:
      np.testing.assert_allclose(m4[k], m1[k], rtol=1e-4, err_msg=k)
    leaves = list(zip(jax.tree.leaves((g1, d1)), jax.tree.leaves((g4, d4))))
    for a, b in leaves:
      np.testing.assert_allclose(a, b, atol=2.01 * lr)
    assert np.mean(np.concatenate([np.abs(a - b).ravel() for a, b in leaves]) < 1e-6) > 0.95


if __name__ == "__main__":
  main()
