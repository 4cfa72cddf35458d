"""DRR speed: 128^3 (2 mm) attenuation volume -> AP + lateral at 128^2, single and batch of 8,
forward and forward+backward; ms per view and rays per second. Where `diffdrr` imports (needs torch),
and where ITK-RTK imports (`pip install itk-rtk`, its C++ Joseph projector, no gradients), the same
rows for them on the same volume and geometry, timed in the same run, interleaved round by round so
that a slow spell of a shared machine hits every renderer alike. RTK's images are also compared with
ours (an independent implementation of the same Joseph sampling).

  python benchmarks/drr.py [--size 128] [--det 128] [--repeats 5] [--raymarch]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from cvaa_jax import drr
from cvaa_jax.data.phantom import lumbar_phantom

CASES = ("forward, 1 volume", "forward, 8 volumes", "fwd+bwd, 1 volume", "fwd+bwd, 8 volumes")


def _pitch(det: int) -> float:
  """Detector pitch for a 256 mm field of view at the isocentre."""
  return 256.0 / det * drr.geometry.DEFAULT_SDD_MM / drr.geometry.DEFAULT_SID_MM


def ours(mu, spacing, origin, det, method):
  """{case: (zero-argument timed call, volumes)} for our renderer."""
  geos = drr.biplanar((det, det), pixel_size=_pitch(det))

  def views(v):
    return jnp.stack([drr.project(v, spacing, origin, g, method=method) for g in geos])

  v1 = jnp.asarray(mu)
  v8 = jnp.stack([v1] * 8)
  fns = [jax.jit(views), jax.jit(jax.vmap(views)),
         jax.jit(jax.grad(lambda v: jnp.sum(views(v) ** 2))),
         jax.jit(jax.grad(lambda v: jnp.sum(jax.vmap(views)(v) ** 2)))]
  calls = {}
  for case, fn, arg, n in zip(CASES, fns, (v1, v8, v1, v8), (1, 8, 1, 8)):
    calls[case] = ((lambda fn=fn, arg=arg: jax.block_until_ready(fn(arg))), n)
  return calls


def rtk_calls(mu, det):
  """ITK-RTK's CPU Joseph forward projector on the same volume and views, plus its two images in
  our convention (None where itk-rtk is not installed)."""
  try:
    import itk
    from itk import RTK as rtk
  except Exception as e:  # pylint: disable=broad-except
    print(f"(itk-rtk not importable: {type(e).__name__}; skipping its rows)")
    return {}, None
  # RTK's frame: x_r = -x (RAS), y_r = z (rotation axis), z_r = y; angle 0 puts the source at +z_r
  # (anterior: our AP) and 270 at -x_r (the patient's right: our left lateral). ITK arrays are
  # indexed (z_r, y_r, x_r); RTK's detector rows run upwards (flipped against ours).
  n = mu.shape[0]
  arr = np.ascontiguousarray(np.asarray(mu, np.float32)[::-1].transpose(1, 2, 0))
  img = itk.image_from_array(arr)
  img.SetSpacing([256.0 / n] * 3)
  img.SetOrigin([-(n - 1) / 2 * 256.0 / n] * 3)
  image_t = itk.Image[itk.F, 3]
  geom = rtk.ThreeDCircularProjectionGeometry.New()
  for angle in (0.0, 270.0):
    geom.AddProjection(drr.geometry.DEFAULT_SID_MM, drr.geometry.DEFAULT_SDD_MM, angle)
  pitch = _pitch(det)
  stack = rtk.ConstantImageSource[image_t].New()
  stack.SetOrigin([-(det - 1) / 2 * pitch] * 2 + [0.0])
  stack.SetSpacing([pitch, pitch, 1.0])
  stack.SetSize([det, det, 2])
  stack.Update()
  fp = rtk.JosephForwardProjectionImageFilter[image_t, image_t].New()
  fp.SetInput(0, stack.GetOutput())
  fp.SetInput(1, img)
  fp.SetGeometry(geom)
  fp.Update()
  images = np.array(itk.array_from_image(fp.GetOutput())[:, ::-1, :])

  def run(times):
    for _ in range(times):
      stack.Modified()  # the projector writes in place into the (zero) stack: refill it
      fp.Update()

  return {CASES[0]: (lambda: run(1), 1), CASES[1]: (lambda: run(8), 8)}, images


def diffdrr_calls(volume_hu, spacing, det):
  try:
    import torch
    from diffdrr.drr import DRR
    from diffdrr.data import read
  except Exception as e:  # pylint: disable=broad-except
    print(f"(diffdrr not importable: {type(e).__name__}; skipping its rows)")
    return {}
  import tempfile
  import nibabel as nib
  with tempfile.TemporaryDirectory() as tmp:
    path = f"{tmp}/v.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(volume_hu, np.float32), np.diag([*spacing, 1.0])), path)
    subject = read(path)
  rot = torch.tensor([[0.0, 0.0, 0.0], [torch.pi / 2, 0.0, 0.0]])
  xyz = torch.tensor([[0.0, drr.geometry.DEFAULT_SID_MM, 0.0]] * 2)
  out = {}
  for renderer, extra in [("siddon", {}), ("trilinear (250 pts)", {"n_points": 250})]:
    drr_mod = DRR(subject, sdd=drr.geometry.DEFAULT_SDD_MM, height=det,
                  renderer=renderer.split()[0], delx=_pitch(det))

    def run(n, grad, drr_mod=drr_mod, extra=extra):
      r, x = rot.repeat(n, 1), xyz.repeat(n, 1)
      if grad:
        drr_mod.density.requires_grad_(True)
        img = drr_mod(r, x, parameterization="euler_angles", convention="ZXY", **extra)
        img.square().sum().backward()
      else:
        with torch.no_grad():
          drr_mod(r, x, parameterization="euler_angles", convention="ZXY", **extra)

    out[f"diffdrr {renderer}"] = {case: ((lambda n=n, g=g, run=run: run(n, g)), n)
                                  for case, n, g in [(CASES[0], 1, False), (CASES[1], 8, False),
                                                     (CASES[2], 1, True)]}
  return out


def time_interleaved(renderers: dict, repeats: int) -> list:
  """Best-of-`repeats` seconds per (renderer, case); each round runs every call once."""
  for calls in renderers.values():
    for fn, _ in calls.values():
      fn()  # compile + warm up
  best = {(who, case): float("inf") for who, calls in renderers.items() for case in calls}
  for _ in range(repeats):
    for who, calls in renderers.items():
      for case, (fn, _) in calls.items():
        time.sleep(0.2)  # lets the previous renderer's worker threads stop spinning (OpenMP, ITK)
        t = time.perf_counter()
        fn()
        best[who, case] = min(best[who, case], time.perf_counter() - t)
  return [(who, case, best[who, case], n) for who, calls in renderers.items()
          for case, (_, n) in calls.items()]


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
  mu = np.asarray(drr.hu_to_mu(jnp.asarray(vol.array)))  # every renderer gets the same attenuation
  print(f"devices: {jax.devices()}  volume {args.size}^3 at {sp:g} mm -> AP + lateral {args.det}^2")
  renderers = {"cvaa_jax joseph": ours(mu, spacing, origin, args.det, "joseph")}
  rtk, rtk_images = rtk_calls(mu, args.det)
  if rtk:
    renderers["itk-rtk joseph (C++, no gradient)"] = rtk
  renderers.update(diffdrr_calls(vol.array, spacing, args.det))
  rows = time_interleaved(renderers, args.repeats)
  if args.raymarch:
    rows += time_interleaved({"cvaa_jax raymarch": ours(mu, spacing, origin, args.det, "raymarch")},
                             max(1, args.repeats // 3))
  rays = 2 * args.det * args.det
  print("| renderer | case | total ms | ms per view | rays/s |")
  print("| --- | --- | --- | --- | --- |")
  for who, case, t, n in rows:
    print(f"| {who} | {case} | {t * 1e3:.1f} | {t * 1e3 / (2 * n):.2f} | {rays * n / t:.3g} |")
  ours_t = {case: t for who, case, t, _ in rows if who == "cvaa_jax joseph"}
  for who, case, t, _ in rows:
    if not who.startswith("cvaa_jax"):
      print(f"{who}, {case}: ours takes {ours_t[case] / t:.2f}x its time ({t / ours_t[case]:.1f}x "
            "its speed)")
  if rtk_images is not None:
    geos = drr.biplanar((args.det, args.det), pixel_size=_pitch(args.det))
    for name, g, theirs in zip(("AP", "lateral"), geos, rtk_images):
      mine = np.asarray(drr.project(jnp.asarray(mu), spacing, origin, g))
      diff = np.abs(mine - theirs)
      print(f"agreement with itk-rtk, {name}: max |diff| {diff.max() / mine.max():.2%} of the image "
            f"maximum, mean |diff| {diff.mean() / mine.mean():.2%} of the image mean")


if __name__ == "__main__":
  main()
