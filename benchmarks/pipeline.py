"""Input pipeline vs train step: does Grain deliver >= 10x what the step consumes? And what does
rendering the DRRs cost inside the step versus in the host workers?

  python benchmarks/pipeline.py [--config configs/demo.py] [--steps 20] [--workers 0 2]

Prints volumes/s delivered by the Grain pipeline (read + augment + batch), volumes/s consumed by the
compiled train step of the config, and the DRR share: the step's time with DRR rendering removed
(pre-rendered inputs) and the host cost of rendering the same views per volume on the CPU.
"""

import argparse
import importlib.util
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from cvaa_jax.data import dataset, pipeline
from cvaa_jax.train import loop, step as step_lib


def load_config(path):
  spec = importlib.util.spec_from_file_location("cfg", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def timed(fn, n):
  fn()  # compile
  fn()  # a second call can recompile once for the donated, now device-resident state
  t = time.perf_counter()
  for _ in range(n):
    fn()
  return (time.perf_counter() - t) / n


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--config", default="configs/demo.py")
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--workers", type=int, nargs="*", default=[0, 2])
  args = ap.parse_args()
  flags.FLAGS.mark_as_parsed()
  config = load_config(args.config)
  bs = config.train.batch_size
  with tempfile.TemporaryDirectory() as tmp:
    cases = dataset.prepare(config.data.to_dict(), tmp, seed=0, log=lambda *_: None)
    scfg, state = loop.build(config, total_steps=1000)
    fn = jax.jit(lambda s, b: step_lib.train_step(scfg, s, b), donate_argnums=0)
    vol = jnp.asarray(np.stack([np.asarray(c.load()) for c in cases[:bs]]))
    holder = {"s": state}

    def one_step():
      holder["s"], m = fn(holder["s"], {"volume": vol})
      jax.block_until_ready(m)

    step_s = timed(one_step, args.steps)
    render = jax.jit(lambda v: step_lib.render_views(scfg, v))
    drr_s = timed(lambda: jax.block_until_ready(render(vol)), args.steps)
    # The pipeline is timed after the step so its worker processes cannot steal the step's CPU.
    rows = []
    for w in args.workers:
      it = iter(pipeline.train_dataset(cases, bs, seed=0, shift_voxels=2, num_workers=w))
      next(it)
      t = time.perf_counter()
      for _ in range(args.steps * 5):
        next(it)
      rows.append((f"Grain pipeline, {w} workers", bs * args.steps * 5 /
                   (time.perf_counter() - t)))
      del it
    rows.append(("train step (consumes)", bs / step_s))
  print(f"devices: {jax.devices()}, config {args.config}, batch {bs}, volume {config.data.size}^3")
  print("| stage | volumes/s |")
  print("| --- | --- |")
  for name, v in rows:
    print(f"| {name} | {v:.1f} |")
  consume = rows[-1][1]
  for name, v in rows[:-1]:
    print(f"{name}: {v / consume:.0f}x what the step consumes")
  print(f"DRR rendering of the batch (2 views), compiled alone: {drr_s * 1e3:.1f} ms = "
        f"{100 * drr_s / step_s:.1f} % of the {step_s * 1e3:.0f} ms step; rendered in host workers "
        f"it would cost the same CPU time per batch there, plus shipping 2 images per volume.")


if __name__ == "__main__":
  main()
