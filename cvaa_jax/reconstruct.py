"""Reconstruct a CT from a frontal + lateral X-ray pair with a trained model.

  python -m cvaa_jax.reconstruct --workdir=runs/lumbar --frontal=AP.png --lateral=LAT.png \\
      --out=ct.nii.gz [--which=best] [--png] [--domain=display]
  python -m cvaa_jax.reconstruct --workdir=runs/lumbar --pairs=folder_of_cases --out=out_folder

A folder of pairs holds one sub-folder per case with two images whose names start with
'frontal'/'ap' and 'lateral'/'lat'. Output: NIfTI in HU on the model grid (RAS, `spacing_mm`
isotropic, centred on the isocentre: X-rays carry no patient coordinates), optional mid-slice PNG,
and a projection-consistency score per case: the reconstruction is re-projected with the DRR
renderer in the training geometry and compared with its own inputs (no ground truth needed).
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from cvaa_jax import config as config_lib
from cvaa_jax import viz, xray_io
from cvaa_jax.data import io, transforms
from cvaa_jax.data.volume import Volume
from cvaa_jax.errors import CvaaError, InputError
from cvaa_jax.models import projection

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags, defined only when run as a program (the module stays importable)."""
  flags.DEFINE_string("workdir", None, "A folder launch.py trained in (has config.json, checkpoints).")
  flags.DEFINE_string("frontal", None, "Frontal (AP) radiograph.")
  flags.DEFINE_string("lateral", None, "Lateral radiograph.")
  flags.DEFINE_string("pairs", None, "Folder with one sub-folder per case (instead of --frontal/--lateral).")
  flags.DEFINE_string("out", None, "Output .nii.gz (one pair) or folder (--pairs).")
  flags.DEFINE_enum("which", "best", ["best", "latest"], "Checkpoint to use (EMA generator).")
  flags.DEFINE_enum("domain", "display", ["display", "intensity"],
                    "'display': bright = dense (PACS exports); 'intensity': raw detector signal.")
  flags.DEFINE_bool("png", True, "Also write a mid-slice PNG.")


class Reconstructor:
  """Loads a run's EMA generator once; `__call__` reconstructs one pair."""

  def __init__(self, workdir: str | pathlib.Path, which: str = "best"):
    from cvaa_jax.train import loop, step as step_lib  # pylint: disable=g-import-not-at-top
    self.config = config_lib.load_run_config(workdir)
    if which == "best" and not (pathlib.Path(workdir) / "best").is_dir():
      which = "latest"
    self.scfg, self.params, self.step = loop.restore_for_inference(self.config, workdir, which)
    self.size = self.config.data.size
    self._forward = jax.jit(lambda p, f, l: step_lib.g_apply(self.scfg, p, f, l)[0])
    self._render = jax.jit(lambda v: step_lib.render_views(self.scfg, v))

  def __call__(self, frontal: np.ndarray, lateral: np.ndarray) -> tuple[np.ndarray, dict]:
    """Model-input images (S, S) -> ([0, 1] volume (S, S, S), consistency scores)."""
    f, l = jnp.asarray(frontal)[None], jnp.asarray(lateral)[None]
    vol = self._forward(self.params, f, l)
    rf, rl = self._render(vol)
    scores = {}
    for name, a, b in (("frontal", f, rf), ("lateral", l, rl)):
      a, b = np.asarray(a[0], np.float64), np.asarray(b[0], np.float64)
      ncc = float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
      scores[f"{name}_mae"] = float(np.abs(a - b).mean())
      scores[f"{name}_ncc"] = ncc
    return np.asarray(vol[0]), scores

  def volume(self, unit: np.ndarray) -> Volume:
    """The model-grid volume in HU with its RAS affine (isocentre at the origin)."""
    d = self.config.data
    sp, origin = projection.grid(self.size, self.size * d.spacing_mm)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(sp)
    affine[:3, 3] = origin
    vol = Volume(unit, affine, source="reconstruction",
                 history=({"op": "scale_intensity_range", "a_min": d.hu_min, "a_max": d.hu_max,
                           "b_min": 0.0, "b_max": 1.0, "clip": True},))
    return transforms.unit_to_hu(vol)


def reconstruct_pair(rec: Reconstructor, frontal_path, lateral_path, out_path, domain="display",
                     png=True) -> dict:
  fr, la = xray_io.read_xray(frontal_path), xray_io.read_xray(lateral_path)
  xray_io.check_pair(fr, la, frontal_path, lateral_path)
  f = xray_io.to_model_input(fr, rec.size, domain)
  l = xray_io.to_model_input(la, rec.size, domain)
  t = time.perf_counter()
  unit, scores = rec(f, l)
  latency = time.perf_counter() - t
  out_path = pathlib.Path(out_path)
  io.save_nifti(rec.volume(unit), out_path)
  if png:
    viz.save_slices_png({"reconstruction": unit}, out_path.with_name(
        out_path.name.replace(".nii.gz", "").replace(".nii", "") + ".png"), vmax=0.35)
  return {"frontal": str(frontal_path), "lateral": str(lateral_path), "out": str(out_path),
          "seconds": latency, **scores}


def main(argv):
  del argv
  try:
    if not FLAGS.workdir or not FLAGS.out:
      raise InputError("--workdir and --out are required.")
    if FLAGS.pairs is None and not (FLAGS.frontal and FLAGS.lateral):
      missing = "--frontal" if not FLAGS.frontal else "--lateral"
      raise InputError(f"{missing} is missing: give both views, or --pairs=<folder>.")
    # Check every input before loading the model, so bad files fail fast with one line.
    jobs = []
    if FLAGS.pairs:
      cases = sorted(p for p in pathlib.Path(FLAGS.pairs).iterdir() if p.is_dir()) \
          if pathlib.Path(FLAGS.pairs).is_dir() else []
      if not cases:
        raise InputError(f"{FLAGS.pairs}: no case sub-folders found.")
      for case in cases:
        fr, la = xray_io.find_pair(case)
        jobs.append((fr, la, pathlib.Path(FLAGS.out) / f"{case.name}.nii.gz"))
    else:
      jobs.append((FLAGS.frontal, FLAGS.lateral, FLAGS.out))
    for fr, la, _ in jobs:
      xray_io.check_pair(xray_io.read_xray(fr), xray_io.read_xray(la), fr, la)
    rec = Reconstructor(FLAGS.workdir, FLAGS.which)
    results = [reconstruct_pair(rec, fr, la, out, FLAGS.domain, FLAGS.png) for fr, la, out in jobs]
    for r in results:
      logging.info("%s: consistency NCC frontal %.3f lateral %.3f (MAE %.3f / %.3f), %.2f s",
                   r["out"], r["frontal_ncc"], r["lateral_ncc"], r["frontal_mae"],
                   r["lateral_mae"], r["seconds"])
    report = pathlib.Path(FLAGS.out if FLAGS.pairs else pathlib.Path(FLAGS.out).parent)
    (report / "reconstruct_report.json").write_text(json.dumps(results, indent=1))
  except CvaaError as e:
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  define_flags()
  app.run(main)
