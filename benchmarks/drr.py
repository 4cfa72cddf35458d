"""DRR speed: 128^3 (2 mm) volume -> AP + lateral at 128^2, single and batch of 8, forward and
forward+backward; ms per view and rays per second. Where `diffdrr` imports, the same table for it.

  python benchmarks/drr.py [--size 128] [--det 128] [--repeats 5]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from cvaa_jax import drr
from cvaa_jax.data.phantom import lumbar_phantom


def _time(fn, *args, repeats):
  jax.block_until_ready(fn(*args))  # compile + warm up
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t)
  return best


def ours(volume_hu, spacing, origin, det, repeats, method):
  geos = drr.biplanar((det, det), pixel_size=256.0 / det * drr.geometry.DEFAULT_SDD_MM /
                      drr.geometry.DEFAULT_SID_MM)

  def views(v):
    mu = drr.hu_to_mu(v)
    return jnp.stack([drr.project(mu, spacing, origin, g, method=method) for g in geos])

  fwd1 = jax.jit(views)
  fwd8 = jax.jit(jax.vmap(views))
  bwd1 = jax.jit(jax.grad(lambda v: jnp.sum(views(v) ** 2)))
  bwd8 = jax.jit(jax.grad(lambda v: jnp.sum(jax.vmap(views)(v) ** 2)))
  v1 = jnp.asarray(volume_hu)
  v8 = jnp.stack([v1] * 8)
  rows = []
  for name, fn, arg, n_vol in [("forward, 1 volume", fwd1, v1, 1), ("forward, 8 volumes", fwd8, v8, 8),
                               ("fwd+bwd, 1 volume", bwd1, v1, 1), ("fwd+bwd, 8 volumes", bwd8, v8, 8)]:
    t = _time(fn, arg, repeats=repeats)
    rows.append((f"cvaa_jax {method}", name, t, n_vol))
  return rows


def diffdrr_rows(volume_hu, spacing, det, repeats):
  try:
    import torch
    from diffdrr.drr import DRR
    from diffdrr.data import read
  except Exception as e:  # pylint: disable=broad-except
    print(f"(diffdrr not importable: {type(e).__name__}; skipping its rows)")
    return []
  import tempfile
  import nibabel as nib
  with tempfile.TemporaryDirectory() as tmp:
    path = f"{tmp}/v.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(volume_hu, np.float32), np.diag([*spacing, 1.0])), path)
    subject = read(path)
  rot = torch.tensor([[0.0, 0.0, 0.0], [torch.pi / 2, 0.0, 0.0]])
  xyz = torch.tensor([[0.0, drr.geometry.DEFAULT_SID_MM, 0.0]] * 2)
  rows = []
  for renderer, extra in [("siddon", {}), ("trilinear", {"n_points": 250})]:
    drr_mod = DRR(subject, sdd=drr.geometry.DEFAULT_SDD_MM, height=det, renderer=renderer,
                  delx=256.0 / det * drr.geometry.DEFAULT_SDD_MM / drr.geometry.DEFAULT_SID_MM)

    def run(n, grad, drr_mod=drr_mod, extra=extra):
      r, x = rot.repeat(n, 1), xyz.repeat(n, 1)
      if grad:
        drr_mod.density.requires_grad_(True)
        img = drr_mod(r, x, parameterization="euler_angles", convention="ZXY", **extra)
        img.square().sum().backward()
      else:
        with torch.no_grad():
          drr_mod(r, x, parameterization="euler_angles", convention="ZXY", **extra)

    for name, n, grad in [("forward, 1 volume", 1, False), ("forward, 8 volumes", 8, False),
                          ("fwd+bwd, 1 volume", 1, True)]:
      run(n, grad)
      best = float("inf")
      for _ in range(repeats):
        t = time.perf_counter()
        run(n, grad)
        best = min(best, time.perf_counter() - t)
      rows.append((f"diffdrr {renderer}", name, best, n))
  return rows


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--size", type=int, default=128)
  ap.add_argument("--det", type=int, default=128)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--raymarch", action="store_true", help="also time the general ray marcher")
  args = ap.parse_args()
  sp = 256.0 / args.size
  vol = lumbar_phantom(0, shape=(args.size,) * 3, spacing_mm=sp).volume
  spacing, origin = drr.grid_from_affine(vol.affine)
  print(f"devices: {jax.devices()}  volume {args.size}^3 at {sp:g} mm -> AP + lateral {args.det}^2")
  rows = ours(vol.array, spacing, origin, args.det, args.repeats, "joseph")
  if args.raymarch:
    rows += ours(vol.array, spacing, origin, args.det, max(1, args.repeats // 3), "raymarch")
  theirs = diffdrr_rows(vol.array, spacing, args.det, args.repeats)
  rows += theirs
  rays = 2 * args.det * args.det
  print(f"| renderer | case | total ms | ms per view | rays/s |")
  print(f"| --- | --- | --- | --- | --- |")
  for who, case, t, n in rows:
    print(f"| {who} | {case} | {t * 1e3:.1f} | {t * 1e3 / (2 * n):.2f} | {rays * n / t:.3g} |")
  ours_t = {case: t for who, case, t, _ in rows if who == "cvaa_jax joseph"}
  for who, case, t, _ in theirs:
    print(f"speed-up over {who}, {case}: {t / ours_t[case]:.1f}x")


if __name__ == "__main__":
  main()
