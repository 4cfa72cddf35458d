"""The GAN train step per model, size and batch: time, XLA FLOPs, rate against matmul, memory.

  python benchmarks/train_step.py [--models cvaa_gan-cvaa,x2ct_gan,...] [--sizes 64,128]
      [--batches 1,4] [--microbatches 0,1] [--config configs/demo.py] [--steps 3]
      [--variants base,train.remat=blocks,model.dtype=bfloat16] [--compile_only] [--max_temp_gib 16]

For each combination: the whole step (DRR rendering, G forward/backward, D three passes, Adam for
both players, EMA) is compiled once, timed over `--steps` calls (median), and reported as seconds
per step, XLA's FLOP count (`cost_analysis`), GFLOP/s, that rate as a fraction of the same run's
jit f32 matmul rate (2048^2 x 2048^2), compile time and XLA's memory analysis (temporaries,
arguments). Widths are the paper's (configs/lumbar.py); the published X2CT-GAN has its own.
A step whose temporaries exceed `--max_temp_gib` is compiled and analysed but not run. Compare
rates as ratios within one run: the development machines' speed varies. On an accelerator the
last column is the allocator's peak since the process started (it only grows: run one
configuration per process for each one's own peak, as `benchmarks/gpu_session.sh` does).

`--microbatches`: `train.microbatch` values (0: the whole batch in one pass). A micro-batched step
does the same update with a second generator forward pass, and XLA counts a loop's body once, so
its GFLOP/step and rate are the one-pass step's FLOPs (the useful work) over its time.

`--variants`: config overrides to compare in the same run, each 'key=value' ('+'-joined for
several; 'base' for none), e.g. the memory levers' step time: `train.remat=blocks`,
`model.dtype=bfloat16`.
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

MODELS = ("cvaa_gan-add", "cvaa_gan-concat", "cvaa_gan-vaa", "cvaa_gan-cvaa", "x2ct_gan", "3dcnn",
          "psr_light")  # the published "psr" (589 M parameters) runs with --models psr


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
  a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32))
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / float(np.median(times)) / 1e9


def config_for(model: str, size: int, batch: int, microbatch: int = 0,
               base: str = "configs/lumbar.py", variant: str = "base"):
  root = pathlib.Path(cvaa_jax.__file__).resolve().parents[1]
  c = sweep.base_config(base, root)
  name, _, fusion = model.partition("-")
  c.model.name = name
  if fusion:
    c.model.fusion = fusion
  c.data.source = "phantom"
  c.data.size = size
  c.data.spacing_mm = 256.0 / size  # the paper's 256 mm field of view
  c.train.batch_size = batch
  c.train.microbatch = microbatch
  for item in variant.split("+"):
    if item != "base":
      key, _, value = item.partition("=")
      section, field = key.split(".")
      old = c[section][field]
      c[section][field] = type(old)(value) if not isinstance(old, bool) else value == "True"
  return c


def flops_of(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0]
  return float(cost.get("flops", float("nan")))


def measure(model: str, size: int, batch: int, steps: int, compile_only: bool,
            max_temp_gib: float, microbatch: int = 0, base: str = "configs/lumbar.py",
            variant: str = "base") -> dict:
  config = config_for(model, size, batch, microbatch, base, variant)
  scfg, abstract = loop.build(config, 1000, abstract=True)
  vol = jax.ShapeDtypeStruct((batch, size, size, size), jnp.float32)
  step = jax.jit(lambda s, b: step_lib.train_step(scfg, s, b), donate_argnums=0)
  t = time.perf_counter()
  compiled = step.lower(abstract, {"volume": vol}).compile()
  row = {"compile_s": time.perf_counter() - t, "gflop": flops_of(compiled) / 1e9}
  mem = compiled.memory_analysis()
  row["temp_gib"] = mem.temp_size_in_bytes / 2 ** 30
  row["arg_gib"] = mem.argument_size_in_bytes / 2 ** 30
  if compile_only or row["temp_gib"] > max_temp_gib:
    return row
  _, state = loop.build(config, 1000)
  rng = np.random.default_rng(0)
  batch_ = {"volume": jnp.asarray(rng.random((batch, size, size, size), np.float32) * 0.3)}
  state, m = compiled(state, batch_)
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, m = compiled(state, batch_)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  row["step_s"] = float(np.median(times))
  stats = jax.devices()[0].memory_stats()  # accelerators: the allocator's peak so far (None on CPU)
  if stats and "peak_bytes_in_use" in stats:
    row["peak_gib"] = stats["peak_bytes_in_use"] / 2 ** 30
  return row


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--sizes", default="64,128")
  p.add_argument("--batches", default="1,4")
  p.add_argument("--microbatches", default="0")
  p.add_argument("--variants", default="base", help="comma-separated config overrides")
  p.add_argument("--no_one_pass_flops", action="store_true",
                 help="micro-batch rows without the one-pass FLOP count (saves its compile)")
  p.add_argument("--config", default="configs/lumbar.py",
                 help="base config for the widths (e.g. configs/demo.py); sizes set the grid")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--compile_only", action="store_true")
  p.add_argument("--max_temp_gib", type=float, default=16.0)
  a = p.parse_args(argv)
  dev = jax.devices()[0]
  rate = matmul_gflops()
  print(f"{dev.platform} ({dev.device_kind}), {jax.device_count()} device(s); jit f32 matmul "
        f"2048^2: {rate:.1f} GFLOP/s")
  print("| model | variant | size | batch | micro-batch | s/step | GFLOP/step | GFLOP/s "
        "| of matmul rate | compile s | temporaries GiB | arguments GiB | device peak GiB |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  micros = [int(m) for m in a.microbatches.split(",")]
  for model, variant in ((m, v) for m in a.models.split(",") for v in a.variants.split(",")):
    for size in (int(s) for s in a.sizes.split(",")):
      for batch in (int(b) for b in a.batches.split(",")):
        one_pass_gflop = None  # the useful work of a micro-batched step: the one-pass count
        for micro in sorted({0 if m >= batch else m for m in micros if not batch % max(m, 1)}):
          r = measure(model, size, batch, a.steps, a.compile_only, a.max_temp_gib, micro,
                      a.config, variant)
          if not micro:
            one_pass_gflop = r["gflop"]
          else:
            if one_pass_gflop is None and not a.no_one_pass_flops:
              one_pass_gflop = measure(model, size, batch, 0, True, 0.0, 0, a.config,
                                       variant)["gflop"]
            r["gflop"] = one_pass_gflop
          _print_row(f"{model} | {variant}", size, batch, micro or batch, r, rate)
  return 0


def _print_row(model: str, size: int, batch: int, micro: int, r: dict, rate: float) -> None:
  if r["gflop"] is None:
    timing = f"{r['step_s']:.3f} | – | – | –" if "step_s" in r else "not run | – | – | –"
  elif "step_s" in r:
    gfs = r["gflop"] / r["step_s"]
    timing = f"{r['step_s']:.3f} | {r['gflop']:.1f} | {gfs:.1f} | {gfs / rate:.0%}"
  else:
    timing = f"not run | {r['gflop']:.1f} | – | –"
  peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "–"
  print(f"| {model} | {size}³ | {batch} | {micro} | {timing} | {r['compile_s']:.0f} | "
        f"{r['temp_gib']:.2f} | {r['arg_gib']:.3f} | {peak} |", flush=True)


if __name__ == "__main__":
  sys.exit(main())
