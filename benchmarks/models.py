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


CONV_SHAPES = [((1, 64, 64, 64), 16, 16, 3), ((1, 64, 64, 64), 64, 16, 3),
               ((2, 32, 32, 32), 32, 32, 3), ((1, 128, 128, 128), 8, 8, 3),
               ((1, 64, 64, 64), 16, 2, 7)]


def conv_table(repeats=5):
  """Conv3D forward + backward (gradients of input and kernel) per implementation, best of N."""
  impls = ("native", "sliced", "folded")  # folded = sliced unless Cout <= TAP_STACK_MAX_OUT
  print("\n| Conv3D fwd+bwd, shape x Cin->Cout, k | " + " | ".join(f"{i} ms" for i in impls) +
        " | native/folded | sliced/folded |")
  print("| --- |" + " --- |" * (len(impls) + 2))
  for shape, cin, cout, k in CONV_SHAPES:
    x = jax.random.normal(jax.random.key(0), shape + (cin,))
    w = jax.random.normal(jax.random.key(1), (k, k, k, cin, cout))
    fns = {impl: jax.jit(jax.grad(lambda a, b, impl=impl: jnp.sum(layers.conv3d(a, b, impl=impl)
                                                                     ** 2), argnums=(0, 1)))
           for impl in impls}
    times = {impl: float("inf") for impl in impls}
    for f in fns.values():
      jax.block_until_ready(f(x, w))
    for _ in range(repeats):  # interleaved, so a slow phase of the machine hits all alike
      for impl, f in fns.items():
        t = time.perf_counter()
        jax.block_until_ready(f(x, w))
        times[impl] = min(times[impl], time.perf_counter() - t)
    print(f"| {shape}x{cin}->{cout}, {k} | " + " | ".join(f"{times[i] * 1e3:.1f}" for i in impls)
          + f" | {times['native'] / times['folded']:.2f} | {times['sliced'] / times['folded']:.2f} |",
          flush=True)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--size", type=int, default=128)
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--skip-compile", action="store_true")
  ap.add_argument("--conv_only", action="store_true", help="only the Conv3D table")
  args = ap.parse_args()
  if args.conv_only:
    conv_table()
    return
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
