"""Compiled memory of the paper's training step (128^3, batch 4) from XLA's memory analysis.

  python benchmarks/train_memory.py [--variants f32 bf16+remat]

Compiles (does not run) the full GAN step: DRR rendering, G forward/backward, D forward/backward
twice, Adam for both players, EMA. On a CPU-only machine this measures the CPU backend's buffer
assignment, which is indicative of, not identical to, a GPU's.
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, ".")
from configs import lumbar  # noqa: E402
from cvaa_jax.train import loop, step as step_lib  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--variants", nargs="*", default=["f32", "bf16+remat"])
  args = ap.parse_args()
  print(f"devices: {jax.devices()}")
  print("| variant | compile s | temporaries GiB | arguments GiB | outputs GiB |")
  print("| --- | --- | --- | --- | --- |")
  for variant in args.variants:
    config = lumbar.get_config()
    config.data.source = "phantom"
    config.model.dtype = "bfloat16" if "bf16" in variant else "float32"
    config.train.remat = "remat" in variant
    scfg, state = loop.build(config, total_steps=1000, abstract=True)
    batch = {"volume": jax.ShapeDtypeStruct((4, 128, 128, 128), jnp.float32)}
    t = time.perf_counter()
    compiled = jax.jit(lambda s, b: step_lib.train_step(scfg, s, b)).lower(state, batch).compile()
    mem = compiled.memory_analysis()
    g = 2 ** 30
    print(f"| {variant} | {time.perf_counter() - t:.0f} | {mem.temp_size_in_bytes / g:.2f} | "
          f"{mem.argument_size_in_bytes / g:.3f} | {mem.output_size_in_bytes / g:.3f} |")


if __name__ == "__main__":
  main()
