"""Compiled memory of the paper's training step (128^3, batch 4) from XLA's memory analysis.

  python benchmarks/train_memory.py [--variants f32 generator blocks bf16+blocks] [--size 128]

A variant is '+'-joined levers: 'bf16' (model.dtype bfloat16), 'generator' or 'blocks'
(train.remat: one checkpoint around the generator, or one per 3D block / decoder level /
discriminator stage), 'micro1' / 'micro2' (train.microbatch: the batch in passes of 1 or 2
samples, gradients accumulated; `--accum_form scan` compiles the accelerators' loop, the
default 'auto' the backend's own); 'f32' alone is the baseline.

Compiles (does not run) the full GAN step: DRR rendering, G forward/backward, D forward/backward
twice, Adam for both players, EMA. On a CPU-only machine this measures the CPU backend's buffer
assignment, which is indicative of, not identical to, a GPU's.
"""

import argparse
import dataclasses
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, ".")
from configs import lumbar  # noqa: E402
from cvaa_jax.models import layers  # noqa: E402
from cvaa_jax.train import loop, step as step_lib  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--variants", nargs="*", default=["f32", "generator", "blocks", "bf16+blocks"])
  ap.add_argument("--size", type=int, default=128)
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--conv3d", default="auto", choices=layers.CONV3D_IMPLS,
                  help="Conv3D implementation: 'native' is the form GPUs run ('auto' on CPU: "
                       "folded)")
  ap.add_argument("--accum_form", default="auto", choices=("auto", "scan", "unrolled"),
                  help="micro-batch loop (step.accumulation_form); 'scan' is the accelerators'")
  args = ap.parse_args()
  layers.set_conv3d_impl(args.conv3d)
  print(f"devices: {jax.devices()}; Conv3D {args.conv3d}; {args.size}^3, batch {args.batch}; "
        f"micro-batch loop {args.accum_form}")
  print("| variant | compile s | temporaries GiB | arguments GiB | outputs GiB |")
  print("| --- | --- | --- | --- | --- |")
  for variant in args.variants:
    config = lumbar.get_config()
    config.data.source = "phantom"
    levers = set(variant.split("+"))
    config.model.dtype = "bfloat16" if "bf16" in levers else "float32"
    config.train.remat = ("blocks" if "blocks" in levers else
                          "generator" if "generator" in levers else "none")
    micro = [int(v[5:]) for v in levers if v.startswith("micro")]
    config.train.microbatch = micro[0] if micro else 0
    config.train.batch_size = args.batch
    config.data.size = args.size
    config.data.spacing_mm = 256.0 / args.size
    scfg, state = loop.build(config, total_steps=1000, abstract=True)
    scfg = dataclasses.replace(scfg, accum_form=args.accum_form)
    batch = {"volume": jax.ShapeDtypeStruct((args.batch,) + (args.size,) * 3, jnp.float32)}
    t = time.perf_counter()
    compiled = jax.jit(lambda s, b: step_lib.train_step(scfg, s, b)).lower(state, batch).compile()
    mem = compiled.memory_analysis()
    g = 2 ** 30
    print(f"| {variant} | {time.perf_counter() - t:.0f} | {mem.temp_size_in_bytes / g:.2f} | "
          f"{mem.argument_size_in_bytes / g:.3f} | {mem.output_size_in_bytes / g:.3f} |")


if __name__ == "__main__":
  main()
