"""A model trained at one fixed geometry versus one trained with a geometry drawn per sample, both
tested on held-out phantoms X-rayed at the training geometry and at others.

  python benchmarks/geometry.py [--workdir runs/bench_geometry] [--steps 300]

Trains (or resumes) two demo-size CVAA-GANs (configs/demo.py: 32^3 x 8 mm phantoms) that differ
only in `config.drr`: fixed (cone, SID 750 / SDD 1000, AP + left lateral) and randomised (SID drawn
in [600, 1600] mm, 20 % parallel views, 30 % of views from the other side). Each test case is then
rendered on a real detector (2x finer than the model grid, its own pitch) at each test geometry and
goes through the same path as `reconstruct`: resolve the geometry, resample onto the canonical
views, lift with it. "geometry ignored" feeds the same images as if they were taken at the training
geometry (what reconstruct did before it could be told the geometry). Prints one markdown table.
"""

import argparse
import pathlib
import sys
import time

import jax
import numpy as np
from absl import flags, logging

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvaa_jax import acquisition, drr, reconstruct, run as run_lib, xray_io  # noqa: E402
from cvaa_jax.data import dataset  # noqa: E402
from cvaa_jax.eval import bone, metrics  # noqa: E402
from cvaa_jax.models import projection  # noqa: E402

RANDOM = {"sid_range": (600.0, 1600.0), "parallel_share": 0.2, "opposite_side_share": 0.3}
# name: (beam, sid, sdd, frontal side, lateral side)
GEOMETRIES = {
    "training: cone 750/1000, AP + left": ("cone", 750.0, 1000.0, "ap", "left"),
    "cone 1000/1500, AP + left": ("cone", 1000.0, 1500.0, "ap", "left"),
    "parallel, AP + left": ("parallel", None, None, "ap", "left"),
    "cone 1000/1500, PA + right": ("cone", 1000.0, 1500.0, "pa", "right"),
}
THETA = {"ap": "ap", "pa": "pa", "left": "lateral", "right": "right_lateral"}


def train(name: str, workdir: pathlib.Path, steps: int) -> None:
  from configs import demo  # pylint: disable=g-import-not-at-top
  c = demo.get_config()
  c.train.num_steps = steps
  fixed = {"sid_range": (0.0, 0.0), "parallel_share": 0.0, "opposite_side_share": 0.0}
  for k, v in (RANDOM if name == "randomised" else fixed).items():
    setattr(c.drr, k, v)
  t = time.time()
  run_lib.run(c, str(workdir))
  print(f"trained {name} in {time.time() - t:.0f} s", flush=True)


def views_of(volume_unit, geometry, ref: acquisition.Reference):
  """Renders a model-grid volume on a real detector and places it as reconstruct would; returns the
  canonical images, their kappa, and the same images read as the training geometry."""
  beam, sid, sdd, fside, lside = geometry
  sp, origin = projection.grid(ref.size, ref.fov_mm)
  mu = drr.unit_to_mu(np.asarray(volume_unit, np.float32))
  n = 2 * ref.size
  out, naive, kappa = [], [], []
  for view, side in (("frontal", fside), ("lateral", lside)):
    if beam == "parallel":
      pitch = ref.fov_mm / n
      g = drr.parallel_beam(THETA[side], (n, n), pitch)
      fl = {"beam": "parallel", "pixel_mm": pitch, "side": side}
    else:
      pitch = ref.fov_mm * sdd / sid / n
      g = drr.cone_beam(THETA[side], (n, n), pitch, sid=sid, sdd=sdd)
      fl = {"beam": "cone", "sid": sid, "sdd": sdd, "pixel_mm": pitch, "side": side}
    img = np.asarray(drr.project(mu, sp, origin, g), np.float64)
    acq = acquisition.resolve(view, img.shape, {}, fl, ref, view)
    out.append(xray_io.normalize(acquisition.to_canonical_view(img, acq, ref)))
    kappa.append(acq.inv_sid)
    blind = acquisition.resolve(view, img.shape, {}, {}, ref, view)
    naive.append(xray_io.normalize(acquisition.to_canonical_view(img, blind, ref)))
  return out, np.array(kappa, np.float32), naive, np.array([blind.inv_sid] * 2, np.float32)


def scores(pred, truth, spacing) -> dict:
  m = metrics.all_metrics(pred[None], truth[None], data_range=1.0)
  b = bone.bone_metrics(pred, truth, spacing)
  return {"psnr": float(m["psnr"][0]), "ssim": float(m["ssim"][0]), "dice": b["bone/dice"]}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", default="runs/bench_geometry")
  ap.add_argument("--steps", type=int, default=300)
  args = ap.parse_args()
  flags.FLAGS.mark_as_parsed()
  logging.set_verbosity(logging.WARNING)
  root = pathlib.Path(args.workdir)
  recs = {}
  for name in ("fixed", "randomised"):
    work = root / name
    if not (work / "summary.json").exists():
      train(name, work, args.steps)
    recs[name] = reconstruct.Reconstructor(work, "latest")
  rec0 = recs["fixed"]
  ref = rec0.reference
  cases = [c for c in dataset.load_index(root / "fixed" / "data") if c.split == "test"]
  spacing = ref.fov_mm / ref.size
  rows = []
  for gname, geometry in GEOMETRIES.items():
    per = {}
    for case in cases:
      truth = np.asarray(case.load(), np.float32)
      (f, l), kappa, (nf, nl), nk = views_of(truth, geometry, ref)
      for name, rec in recs.items():
        per.setdefault((name, "geometry given"), []).append(
            scores(rec(f, l, kappa)[0], truth, spacing))
      per.setdefault(("fixed", "geometry ignored"), []).append(
          scores(rec0(nf, nl, nk)[0], truth, spacing))
    for (name, mode), vals in per.items():
      mean = {k: np.mean([v[k] for v in vals]) for k in vals[0]}
      std = {k: np.std([v[k] for v in vals]) for k in vals[0]}
      rows.append((gname, name, mode, mean, std, len(vals)))
  print(f"\n{jax.devices()[0].device_kind}; {len(cases)} held-out phantoms, demo model "
        f"({ref.size}^3 x {spacing:g} mm), {args.steps} steps each; randomised: {RANDOM}")
  print("\n| test geometry | trained | input | PSNR (dB) | SSIM | bone Dice |")
  print("| --- | --- | --- | --- | --- | --- |")
  for gname, name, mode, mean, std, _ in rows:
    print(f"| {gname} | {name} | {mode} | {mean['psnr']:.2f} ± {std['psnr']:.2f} | "
          f"{mean['ssim']:.3f} ± {std['ssim']:.3f} | {mean['dice']:.3f} ± {std['dice']:.3f} |")


if __name__ == "__main__":
  main()
