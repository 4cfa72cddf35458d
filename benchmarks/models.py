"""Model sizes and costs: parameter counts of every model at the paper's size, compiled memory of
the paper-size forward pass (XLA's memory analysis; compiled, not run), and Conv3D native vs folded.

  python benchmarks/models.py [--size 128] [--batch 4] [--skip-compile]
"""

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from cvaa_jax import models
from cvaa_jax.models import layers


def conv_table(repeats=5):
  print("\n| Conv3D 3^3, shape | native ms | folded ms | native/folded |")
  print("| --- | --- | --- | --- |")
  for shape, cin, cout in [((1, 64, 64, 64), 16, 16), ((2, 32, 32, 32), 32, 32),
                           ((1, 128, 128, 128), 8, 8)]:
    x = jax.random.normal(jax.random.key(0), shape + (cin,))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, cin, cout))
    times = {}
    for impl in ("native", "folded"):
      f = jax.jit(lambda a, b, impl=impl: layers.conv3d(a, b, impl=impl))
      f(x, w).block_until_ready()
      best = float("inf")
      for _ in range(repeats):
        t = time.perf_counter()
        f(x, w).block_until_ready()
        best = min(best, time.perf_counter() - t)
      times[impl] = best
    print(f"| {shape}x{cin}->{cout} | {times['native'] * 1e3:.1f} | {times['folded'] * 1e3:.1f} | "
          f"{times['native'] / times['folded']:.2f} |")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--size", type=int, default=128)
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--skip-compile", action="store_true")
  args = ap.parse_args()
  print(f"devices: {jax.devices()}")
  cfg = models.GeneratorConfig(size=args.size)
  print(f"\n| model (size {args.size}) | parameters |")
  print("| --- | --- |")
  for name in models.GENERATORS:
    g = models.abstract(models.generator_ctor(name, cfg))
    print(f"| {name} | {dict(models.param_table(g))['total']:,} |")
  d = models.abstract(models.discriminator_ctor(cfg))
  print(f"| patch discriminator | {dict(models.param_table(d))['total']:,} |")
  if not args.skip_compile:
    g = models.abstract(models.generator_ctor("cvaa_gan", cfg))
    graphdef, state = nnx.split(g)
    x = jax.ShapeDtypeStruct((args.batch, args.size, args.size), jnp.float32)
    t = time.perf_counter()
    compiled = jax.jit(lambda s, a, b: nnx.merge(graphdef, s)(a, b)[0]).lower(state, x, x).compile()
    mem = compiled.memory_analysis()
    print(f"\ncvaa_gan forward, batch {args.batch} at {args.size}^3: compiled in "
          f"{time.perf_counter() - t:.0f} s; temp {mem.temp_size_in_bytes / 2**30:.2f} GiB, "
          f"arguments {mem.argument_size_in_bytes / 2**30:.3f} GiB, "
          f"output {mem.output_size_in_bytes / 2**30:.3f} GiB")
  conv_table()


if __name__ == "__main__":
  main()
