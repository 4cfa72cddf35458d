"""Registration speed: one shipped atlas fitted to a pair at the shipped model's grid, timed alone.

  python benchmarks/atlas_fit.py [--repeats 3] [--size 64]

The pair is rendered from another shipped atlas (abdomen_totalseg's model grid is not needed: the
timing does not depend on the anatomy). Prints compile + first fit, then the steady fit time per
atlas (all 9 shipped atlases share one compiled program), and the stages' step counts.
"""

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvaa_jax import drr  # noqa: E402
from cvaa_jax.fit import atlas as atlas_lib, register, warp  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--size", type=int, default=64)
  args = ap.parse_args()
  atlases = atlas_lib.load_all()
  size, fov = args.size, 256.0
  kappa = (1 / 750.0, 1 / 750.0)
  source = atlases[0]
  hu, _ = register.warped(source, warp.init_params(), size, fov, deform=False)
  views = np.asarray(drr.normalize_projection(register.render(
      drr.hu_to_mu(jnp.asarray(hu)), register.geometries(size, fov, kappa), fov)))
  target = register.Target(views, kappa, fov)
  shape_to = register.pad_shape(atlases)
  cfg = register.FitConfig()
  t = time.perf_counter()
  register.fit_atlas(atlases[1], target, cfg, shape_to)
  first = time.perf_counter() - t
  times = []
  for i in range(args.repeats):
    a = atlases[2 + i % (len(atlases) - 2)]
    t = time.perf_counter()
    register.fit_atlas(a, target, cfg, shape_to)
    times.append(time.perf_counter() - t)
  print("| grid | starts | steps (coarse/fine/deform) | first fit incl. compile | fit per atlas |")
  print("| --- | --- | --- | --- | --- |")
  print(f"| {size}^3 ({fov / size:g} mm) | {len(cfg.starts_z_mm) * len(cfg.starts_y_mm)} | "
        f"{cfg.coarse_steps}/{cfg.fine_steps}/{cfg.deform_steps} | {first:.1f} s | "
        f"{np.median(times):.2f} s (median of {len(times)}; {min(times):.2f}-{max(times):.2f}) |")
  print(f"machine: {jax.devices()[0].device_kind}, {jax.device_count()} device(s)")


if __name__ == "__main__":
  main()
