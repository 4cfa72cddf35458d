"""Where one GAN train step's time goes: a `jax.profiler` trace of one step, per-op times summed
by kind, with XLA's FLOPs and the rate for the convolutions.

  python benchmarks/step_profile.py [--model cvaa_gan-cvaa] [--size 64] [--batch 1] [--microbatch 0] [--top 12]

The step is `benchmarks/train_step.py`'s (paper widths, whole GAN step). The trace's complete
events carry the names of the compiled program's operations (on XLA:CPU, `ynn_fusion.N` are the
YNNPACK convolutions and dots, `*_fusion.N` the elementwise loops); each name is looked up in the
compiled HLO text to tell a convolution's forward or input-gradient form (a k x k window) from its
kernel-gradient form (the window spans the image: XLA writes the weight gradient as a convolution
over the activations) and to count its FLOPs. Read the shares, not the absolute times: tracing adds
a little, and the development machines' speed varies.
"""

import argparse
import collections
import gzip
import json
import pathlib
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import train_step  # noqa: E402  (the same step and config as the step benchmark)

from cvaa_jax.train import loop, step as step_lib  # noqa: E402

_CONV = re.compile(r"= f32\[([\d,]+)\]\S* convolution\(([^)]*)\), window=\{size=([\dx]+)")


def op_times(trace_dir: str) -> dict[str, float]:
  """Summed duration (s) of every named complete event in the trace under `trace_dir`."""
  files = sorted(pathlib.Path(trace_dir).rglob("*perfetto_trace.json.gz"))
  if not files:
    raise SystemExit(f"no perfetto trace written under {trace_dir}")
  data = json.load(gzip.open(files[-1]))
  events = data["traceEvents"] if isinstance(data, dict) else data
  out: dict[str, float] = collections.defaultdict(float)
  for e in events:
    if e.get("ph") == "X":
      out[e["name"]] += e.get("dur", 0) / 1e6
  return out


def fusion_bodies(hlo: str) -> dict[str, str]:
  """Instruction name -> text of the computation it calls (fusions)."""
  comps = {m.group(1): m.group(2) for m in re.finditer(r"\n%([\w.\-]+) \([^\n]*\{\n(.*?)\n\}",
                                                       hlo, re.S)}
  return {m.group(1): comps.get(m.group(2), "")
          for m in re.finditer(r"%([\w.\-]+) = [^\n]*?calls=%([\w.\-]+)", hlo)}


def conv_kind(body: str) -> tuple[str, float]:
  """('conv' | 'kernel grad' | 'dot' | 'other', FLOPs) of one fusion's body."""
  m = _CONV.search(body)
  if m is None:
    return ("dot", 0.0) if " dot(" in body else ("other", 0.0)
  out = [int(s) for s in m.group(1).split(",")]
  window = [int(s) for s in m.group(3).split("x")]
  lhs_name = m.group(2).split(",")[0].strip().lstrip("%")
  lhs = re.search(rf"%{re.escape(lhs_name)} = f32\[([\d,]+)\]", body)
  cin = int(lhs.group(1).split(",")[-1]) if lhs else 0  # channels-last ('b01f') input features
  flops = 2.0 * float(np.prod(out)) * float(np.prod(window)) * cin
  return ("kernel grad" if max(window) > 8 else "conv"), flops


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="cvaa_gan-cvaa")
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--microbatch", type=int, default=0, help="train.microbatch (0: one pass)")
  p.add_argument("--top", type=int, default=12)
  a = p.parse_args(argv)
  config = train_step.config_for(a.model, a.size, a.batch, a.microbatch)
  scfg, state = loop.build(config, 1000)
  step = jax.jit(lambda s, b: step_lib.train_step(scfg, s, b))
  rng = np.random.default_rng(0)
  batch = {"volume": jnp.asarray(rng.random((a.batch,) + (a.size,) * 3, np.float32) * 0.3)}
  compiled = step.lower(state, batch).compile()
  bodies = fusion_bodies(compiled.as_text())
  jax.block_until_ready(compiled(state, batch))  # warm
  t = time.perf_counter()
  jax.block_until_ready(compiled(state, batch))
  untraced = time.perf_counter() - t
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp, create_perfetto_trace=True)
    jax.block_until_ready(compiled(state, batch))
    jax.profiler.stop_trace()
    times = op_times(tmp)
  kinds: dict[str, list] = collections.defaultdict(lambda: [0.0, 0.0, 0])
  for name, sec in times.items():
    if name.startswith(("ThunkExecutor", "PjitFunction", "$")):  # executor and Python spans
      continue
    base = re.sub(r"\.\d+$", "", name)
    flops = 0.0
    if base == "ynn_fusion":
      kind, flops = conv_kind(bodies.get(name, ""))
      base = f"ynn_fusion ({kind})"
    row = kinds[base]
    row[0] += sec
    row[1] += flops
    row[2] += 1
  total = sum(r[0] for r in kinds.values())
  dev = jax.devices()[0]
  print(f"{a.model} {a.size}³ batch {a.batch} on {dev.platform} ({dev.device_kind}): step "
        f"{untraced:.2f} s untraced; {total:.2f} s of operations in the traced step; jit f32 "
        f"matmul 2048²: {train_step.matmul_gflops():.1f} GFLOP/s")
  print("| operation kind | ops | s | share | GFLOP | GFLOP/s |")
  print("| --- | --- | --- | --- | --- | --- |")
  for name, (sec, flops, n) in sorted(kinds.items(), key=lambda kv: -kv[1][0])[:a.top]:
    rate = f"{flops / 1e9:.1f} | {flops / sec / 1e9:.1f}" if flops else "| "
    print(f"| {name} | {n} | {sec:.3f} | {sec / total:.1%} | {rate} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
