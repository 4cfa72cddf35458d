"""Cost of few-CT augmentation per training volume, against the train step it feeds.

  python benchmarks/augment.py [--ct path/to/ct.nii.gz] [--repeats 10] [--no_step]

For the presets configs/real64.py (64^3 x 4 mm) and its cpu32 variant (32^3 x 8 mm), and the
paper's grid (128^3 x 2 mm): milliseconds per volume for each part added in turn (placement only,
+ rotation and scaling, + elastic, + HU jitter), then one train step of the preset with its batch
(same process, so the ratio holds through the machine's speed phases). The augmentation runs in
the Grain workers (NumPy on the host), where it overlaps the step.
"""

import argparse
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvaa_jax.data import augment, dataset, io  # noqa: E402

PARTS = {
    "placement": dict(placement=True),
    "+ rotation, scaling": dict(placement=True, rotate_deg=10, scale=0.1),
    "+ elastic": dict(placement=True, rotate_deg=10, scale=0.1, elastic_mm=6),
    "+ HU gain/offset/noise": dict(placement=True, rotate_deg=10, scale=0.1, elastic_mm=6,
                                   hu_gain=0.05, hu_offset=20, hu_noise=10),
}


def step_seconds(config, repeats=3):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from cvaa_jax.train import loop, step as step_lib  # pylint: disable=g-import-not-at-top
  scfg, state = loop.build(config, 1000)
  f = jax.jit(lambda s, b: step_lib.train_step(scfg, s, b), donate_argnums=0)
  s = config.data.size
  batch = {"volume": jnp.asarray(np.random.rand(config.train.batch_size, s, s, s)
                                 .astype(np.float32) * 0.3)}
  state, m = f(state, batch)
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(repeats):
    state, m = f(state, batch)
  jax.block_until_ready(m)
  return (time.perf_counter() - t) / repeats


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--ct", default=str(ROOT / "cvaa_jax" / "data" / "assets" /
                                       "abdomen_totalseg.nii.gz"))
  ap.add_argument("--repeats", type=int, default=10)
  ap.add_argument("--no_step", action="store_true")
  args = ap.parse_args()
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  from configs import real64  # pylint: disable=g-import-not-at-top
  vol = io.load_ct(args.ct)
  presets = {"cpu32 (32³ × 8 mm)": real64.get_config("cpu32"),
             "real64 (64³ × 4 mm)": real64.get_config(""),
             "paper grid (128³ × 2 mm)": None}
  print("| grid | " + " | ".join(PARTS) + " | train step (batch) | augmentation / step |")
  print("| --- |" + " --- |" * (len(PARTS) + 2))
  for name, cfg in presets.items():
    size, sp = (cfg.data.size, cfg.data.spacing_mm) if cfg else (128, 2.0)
    scan, lo, hi = dataset.preprocess_scan(vol, {"spacing_mm": sp, "hu_min": -1000.0,
                                                 "hu_max": 4096.0, "body_threshold_hu": -400.0})
    cells, full = [], 0.0
    for kw in PARTS.values():
      acfg = augment.AugmentConfig(size=size, spacing_mm=sp, **kw)
      rng = np.random.default_rng(0)
      augment.sample_volume(scan, lo, hi, acfg, rng)
      t = time.perf_counter()
      for _ in range(args.repeats):
        augment.sample_volume(scan, lo, hi, acfg, rng)
      full = (time.perf_counter() - t) / args.repeats
      cells.append(f"{full * 1e3:.1f} ms")
    if cfg is not None and not args.no_step:
      st = step_seconds(cfg)
      b = cfg.train.batch_size
      tail = f"{st:.2f} s ({b}) | {100 * full * b / st:.1f} %"
    else:
      tail = "– | –"
    print(f"| {name} | " + " | ".join(cells) + f" | {tail} |", flush=True)


if __name__ == "__main__":
  main()
