"""One train step per Conv3D implementation, interleaved in one run (before/after ratios).

  python benchmarks/conv_step.py [--model cvaa_gan-cvaa] [--size 64] [--batch 1] [--rounds 3]
      [--impls sliced,folded]

Builds the whole GAN step of `train_step.py`'s config for each implementation (`layers.CONV3D_IMPLS`),
then times them in alternation, so a slow phase of a shared machine hits every one alike. Prints the
median seconds per step and each implementation's speed relative to the first.
"""

import argparse
import time

import jax
import numpy as np

from cvaa_jax.models import layers
from cvaa_jax.train import loop, step as step_lib

import train_step  # benchmarks/train_step.py: the same config  # pylint: disable=wrong-import-order


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--model", default="cvaa_gan-cvaa")
  ap.add_argument("--size", type=int, default=64)
  ap.add_argument("--batch", type=int, default=1)
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--impls", default="sliced,folded")
  args = ap.parse_args()
  config = train_step.config_for(args.model, args.size, args.batch)
  rng = np.random.default_rng(0)
  batch = {"volume": jax.numpy.asarray(rng.random((args.batch,) + (args.size,) * 3, np.float32)
                                       * 0.3)}
  runs = {}
  for impl in args.impls.split(","):
    layers.set_conv3d_impl(impl)  # read at trace time: each jit below traces with its own
    scfg, state = loop.build(config, 1000)
    fn = jax.jit(lambda s, b, scfg=scfg: step_lib.train_step(scfg, s, b))
    t = time.perf_counter()
    state, m = fn(state, batch)
    jax.block_until_ready(m)
    runs[impl] = {"fn": fn, "state": state, "times": [], "first_s": time.perf_counter() - t}
  layers.set_conv3d_impl("auto")
  for _ in range(args.rounds):
    for r in runs.values():
      t = time.perf_counter()
      r["state"], m = r["fn"](r["state"], batch)
      jax.block_until_ready(m)
      r["times"].append(time.perf_counter() - t)
  first = None
  print(f"\n{args.model}, {args.size}^3, batch {args.batch}, {jax.devices()[0].device_kind}\n")
  print("| Conv3D | s/step (median) | compile + first step s | speed vs first row |")
  print("| --- | --- | --- | --- |")
  for impl, r in runs.items():
    med = float(np.median(r["times"]))
    first = first or med
    print(f"| {impl} | {med:.2f} | {r['first_s']:.0f} | {first / med:.2f}x |")


if __name__ == "__main__":
  main()
