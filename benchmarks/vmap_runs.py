"""K small runs in one compiled program (vmap over a run axis) against K sequential train steps.

  python benchmarks/vmap_runs.py [--config demo|tiny] [--runs 2,4] [--repeats 5]

Sweeps over seeds or numeric hyperparameters could train K runs as one program: each run's state
stacked along a leading axis, the train step vmapped over it. That pays only if one program of K
runs beats K calls of the one-run program. Both are timed in the same process, interleaved, so
the ratio holds through the machine's speed phases; each run gets its own seed (initialisation
and step randomness) and its own batch.
"""

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import cvaa_jax
from cvaa_jax import sweep
from cvaa_jax.train import loop, step as step_lib


def config_for(name: str):
  spec = "configs/demo.py" if name == "demo" else "configs/lumbar.py:tiny"
  return sweep.base_config(spec, pathlib.Path(cvaa_jax.__file__).resolve().parents[1])


def states(config, k: int):
  out, scfg = [], None
  for seed in range(k):
    config.seed = seed
    scfg, state = loop.build(config, 1000)
    out.append(state)
  return scfg, out


def batches(config, k: int, rng):
  s, b = config.data.size, config.train.batch_size
  return [{"volume": jnp.asarray(rng.random((b, s, s, s), np.float32) * 0.3)} for _ in range(k)]


def _time(fn, repeats):
  best = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    best.append(time.perf_counter() - t)
  return float(np.median(best))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="demo", choices=("demo", "tiny"))
  p.add_argument("--runs", default="2,4")
  p.add_argument("--repeats", type=int, default=5)
  a = p.parse_args(argv)
  config = config_for(a.config)
  rng = np.random.default_rng(0)
  one = jax.jit(lambda st, b: step_lib.train_step(scfg, st, b))
  print(f"config {a.config}: {config.data.size}^3, batch {config.train.batch_size}, "
        f"{config.model.name}-{config.model.fusion}; {jax.devices()[0].device_kind}, "
        f"{jax.device_count()} device(s)")
  print("| runs K | K sequential steps (s) | one vmapped step (s) | speed-up | compile 1 run (s) "
        "| compile K runs (s) |")
  print("| --- | --- | --- | --- | --- | --- |")
  for k in (int(x) for x in a.runs.split(",")):
    scfg, sts = states(config, k)
    bs = batches(config, k, rng)
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *sts)
    sbatch = jax.tree.map(lambda *x: jnp.stack(x), *bs)
    many = jax.jit(jax.vmap(lambda st, b: step_lib.train_step(scfg, st, b)))
    t = time.perf_counter()
    one_c = one.lower(sts[0], bs[0]).compile()
    c1 = time.perf_counter() - t
    t = time.perf_counter()
    many_c = many.lower(stacked, sbatch).compile()
    ck = time.perf_counter() - t
    # Same numbers: run 0 of the vmapped step equals the one-run step (to float tolerance).
    s0, m0 = one_c(sts[0], bs[0])
    sv, mv = many_c(stacked, sbatch)
    err = max(abs(float(m0[key]) - float(mv[key][0])) for key in ("g/total", "d/total"))
    seq, vm = [], []
    for _ in range(a.repeats):  # interleaved
      seq.append(_time(lambda: [one_c(s, b)[1] for s, b in zip(sts, bs)], 1))
      vm.append(_time(lambda: many_c(stacked, sbatch)[1], 1))
    seq, vm = float(np.median(seq)), float(np.median(vm))
    print(f"| {k} | {seq:.3f} | {vm:.3f} | {seq / vm:.2f}x | {c1:.1f} | {ck:.1f} |"
          f"  (loss difference run 0: {err:.1e})")
    del s0, sv
  return 0


if __name__ == "__main__":
  sys.exit(main())
