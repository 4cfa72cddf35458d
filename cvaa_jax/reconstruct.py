"""Reconstruct a CT from a frontal + lateral X-ray pair with a trained model.

  python -m cvaa_jax.reconstruct --frontal=AP.dcm --lateral=LAT.dcm --out=ct.nii.gz \\
      [--workdir=runs/lumbar] [--which=best] [--png] [--domain=display] [--iso=x,y,z]
      [--frontal_side=ap|pa] [--lateral_side=left|right] [--beam=cone|parallel] [--sid=MM]
      [--sdd=MM] [--pixel_mm=ROW[,COL]] (each also per view: --frontal_sid, --lateral_sdd, ...)
  python -m cvaa_jax.reconstruct --workdir=runs/lumbar --pairs=folder_of_cases --out=out_folder

Each view's acquisition geometry (beam, SID, SDD, pixel pitch, principal point, side, image
orientation) is taken from the flags, else from the file (DICOM DX/CR tags, 2-D NIfTI affines), else
from the run's training geometry (`cvaa_jax.acquisition`); the images are resampled onto the model's
canonical views with it, the models lift them with it, and the consistency re-rendering uses it.
The output NIfTI (HU, RAS, `spacing_mm` isotropic) is centred on the isocentre: `--iso`, or where
the central rays of two located 2-D NIfTI detectors meet, else the world origin (the report says
which). `reconstruct_report.json` records every geometry value with its source, and a
projection-consistency score per view (no ground truth needed).

Without --workdir the shipped model is used (cvaa_jax/pretrained/real64: its README is the model
card); the first line printed names the model. A folder of pairs holds one sub-folder per case with two images whose names start with
'frontal'/'ap'/'pa' and 'lateral'/'lat'.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from cvaa_jax import acquisition, cli, viz, xray_io
from cvaa_jax import config as config_lib
from cvaa_jax.data import io, transforms
from cvaa_jax.data.volume import Volume
from cvaa_jax.errors import CvaaError, InputError
from cvaa_jax.models import projection

FLAGS = flags.FLAGS
VIEWS = ("frontal", "lateral")
METHODS = ("gan", "atlas", "hybrid")
# The default is the method with the best leave-one-patient-out result (benchmarks/atlas_loo.py).
DEFAULT_METHOD, DEFAULT_REFINE = "hybrid", True


def define_flags() -> None:
  """Command-line flags, defined only when run as a program (the module stays importable)."""
  flags.DEFINE_string("workdir", None, "A folder launch.py trained in (config.json, checkpoints), "
                      "or a model folder (config.json + weights.npz); default: the shipped model "
                      "(cvaa_jax/pretrained).")
  flags.DEFINE_string("frontal", None, "Frontal (AP or PA) radiograph.")
  flags.DEFINE_string("lateral", None, "Lateral radiograph.")
  flags.DEFINE_string("pairs", None, "Folder with one sub-folder per case (instead of --frontal/--lateral).")
  flags.DEFINE_string("out", None, "Output .nii.gz (one pair) or folder (--pairs).")
  flags.DEFINE_enum("which", "best", ["best", "latest"], "Checkpoint to use (EMA generator).")
  flags.DEFINE_enum("domain", "display", ["display", "intensity"],
                    "'display': bright = dense (PACS exports); 'intensity': raw detector signal.")
  flags.DEFINE_bool("png", True, "Also write a PNG of mid-slices and bone MIPs.")
  flags.DEFINE_enum("method", DEFAULT_METHOD, list(METHODS),
                    "'gan': the network; 'atlas': reference CTs registered to the pair through the "
                    "DRR renderer and fused; 'hybrid': the network's volume with the atlases' "
                    "skeleton (default: the best in leave-one-patient-out, benchmarks/RESULTS.md).")
  flags.DEFINE_bool("refine", DEFAULT_REFINE, "Adjust the volume so its DRRs agree with the two "
                    "radiographs (test-time consistency, kept near the start); --norefine: off.")
  flags.DEFINE_string("atlases", None, "Folder of atlases (python -m cvaa_jax.fit.build_atlases); "
                      "default: the shipped ones (cvaa_jax/fit/atlases).")
  flags.DEFINE_integer("atlas_k", 3, "How many of the best-matching atlases are fused.")
  flags.DEFINE_list("exclude_atlases", [], "Atlases to leave out, e.g. the patient the pair was "
                    "rendered from (make_example renders shipped atlas abdomen_totalseg).")
  flags.DEFINE_string("iso", None, "Isocentre x,y,z in mm (RAS, patient frame) to centre the output on.")
  flags.DEFINE_enum("beam", None, ["cone", "parallel"], "Beam of both views (per view: --frontal_beam).")
  flags.DEFINE_float("sid", None, "Source-isocentre distance of both views, mm.")
  flags.DEFINE_float("sdd", None, "Source-detector distance of both views, mm.")
  flags.DEFINE_string("pixel_mm", None, "Detector pixel pitch of both views: 'p' or 'row,col' mm.")
  flags.DEFINE_enum("pixel_at", None, list(acquisition.PIXEL_PLANES),
                    "Where the given pitch is measured: 'detector' (default) or 'isocentre' (an "
                    "image scaled to the patient, e.g. laid over the CT); per view: "
                    "--frontal_pixel_at.")
  for view in VIEWS:
    sides = acquisition.SIDES[view]
    flags.DEFINE_enum(f"{view}_side", None, list(sides),
                      f"Side the {view} was taken from ({' / '.join(sides)}"
                      + ("; the side the detector is on)" if view == "lateral" else ")"))
    flags.DEFINE_enum(f"{view}_beam", None, ["cone", "parallel"], f"Beam of the {view}.")
    flags.DEFINE_float(f"{view}_sid", None, f"Source-isocentre distance of the {view}, mm.")
    flags.DEFINE_float(f"{view}_sdd", None, f"Source-detector distance of the {view}, mm.")
    flags.DEFINE_string(f"{view}_pixel_mm", None, f"Detector pitch of the {view}: 'p' or 'row,col'.")
    flags.DEFINE_enum(f"{view}_pixel_at", None, list(acquisition.PIXEL_PLANES),
                      f"Where the {view}'s pitch is measured: 'detector' or 'isocentre'.")
    flags.DEFINE_string(f"{view}_orientation", None,
                        f"Patient directions of the {view}'s increasing column and row, e.g. "
                        f"{','.join(acquisition.CANONICAL[view])} (DICOM PatientOrientation).")
    flags.DEFINE_string(f"{view}_center", None,
                        f"Principal point of the {view} as row,col pixel indices (default: centre).")


def view_flags(view: str) -> dict[str, Any]:
  """The geometry flags of one view (per-view flags over the shared ones)."""
  out = {}
  for field in ("beam", "sid", "sdd", "pixel_mm", "pixel_at"):
    v = getattr(FLAGS, f"{view}_{field}")
    out[field] = v if v is not None else getattr(FLAGS, field)
  for field in ("side", "orientation", "center"):
    out[field] = getattr(FLAGS, f"{view}_{field}")
  return out


def defaulted_lines(report: dict) -> list[str]:
  """One line per view naming the geometry values taken from defaults (not the file, not a flag),
  and one for a default isocentre; printed right after the line naming the method and model."""
  lines = []
  for v in VIEWS:
    r = report[v]
    used = [(f, src[len("default ("):-1]) for f, src in r["sources"].items()
            if src.startswith("default")]
    if used:
      shown = ", ".join(f"{f} {_fmt(r['values'][f])} ({why})" for f, why in used)
      lines.append(f"{r['file']}: not in the file or flags, defaults used: {shown}")
  if str(report.get("iso_source", "")).startswith("default"):
    lines.append("isocentre: not given (--iso) nor located by the files: the output is centred on "
                 "the world origin")
  return lines


def _fmt(value) -> str:
  if isinstance(value, (list, tuple)):
    return ",".join(_fmt(x) for x in value)
  return f"{value:g}" if isinstance(value, float) else str(value)


def parse_iso(text: str | None) -> np.ndarray | None:
  if text is None:
    return None
  try:
    iso = np.array([float(v) for v in text.split(",")])
  except ValueError:
    iso = np.zeros(0)
  if iso.shape != (3,) or not np.all(np.isfinite(iso)):
    raise InputError(f"--iso={text}: give three numbers x,y,z in mm (RAS), e.g. --iso=0,-20,35.")
  return iso


@dataclasses.dataclass
class PreparedPair:
  """Both views on the model's canonical grid, their geometry and where the output goes."""

  frontal: np.ndarray  # (S, S) float32 in [0, 1]
  lateral: np.ndarray
  geometry: np.ndarray  # (2,) signed inverse source distances (frontal, lateral)
  iso: np.ndarray  # (3,) isocentre, RAS mm
  report: dict


def prepare_pair(frontal_path, lateral_path, ref: acquisition.Reference,
                 flags_by_view: dict[str, dict] | None = None, iso: np.ndarray | None = None,
                 domain: str = "display") -> PreparedPair:
  """Reads, checks and places both views; every problem is one InputError naming the file."""
  flags_by_view = flags_by_view or {v: {} for v in VIEWS}
  paths = {"frontal": pathlib.Path(frontal_path), "lateral": pathlib.Path(lateral_path)}
  if paths["frontal"].exists() and paths["lateral"].exists() and \
      paths["frontal"].resolve() == paths["lateral"].resolve():
    raise InputError(f"{frontal_path}: given as both the frontal and the lateral view; pass the two "
                     "radiographs of the exam.")
  read = {v: xray_io.read_xray_meta(paths[v]) for v in VIEWS}
  (fimg, fmeta), (limg, lmeta) = read["frontal"], read["lateral"]
  if fimg.shape == limg.shape and np.array_equal(fimg, limg):
    raise InputError(f"{frontal_path} and {lateral_path}: the two files hold the same image; pass "
                     "the frontal and the lateral radiograph of the exam.")
  report: dict[str, Any] = {}
  sides: dict[str, str | None] = {v: None for v in VIEWS}
  if iso is not None:
    report["iso"], report["iso_source"] = iso.tolist(), "flag --iso"
  if "detector" in fmeta and "detector" in lmeta:
    try:
      located, gap = acquisition.isocentre_from_detectors(fmeta["detector"], lmeta["detector"])
    except InputError as e:
      if iso is None:
        raise InputError(f"{frontal_path} and {lateral_path}: {e}; give the isocentre with "
                         "--iso=x,y,z (mm, RAS) and the sides with --frontal_side and "
                         "--lateral_side.") from None
      located, gap = None, None
    where = iso if iso is not None else located
    for v, meta in (("frontal", fmeta), ("lateral", lmeta)):
      sides[v] = acquisition.side_from_detector(v, meta["detector"]["center"], where)
      if sides[v] is None:  # the image lies on the isocentre plane: a pitch there, no side
        what = "NIfTI affine (the image lies on the plane through the isocentre)"
        meta["side_unknown"] = (None, what)
        meta["pixel_at"] = ("isocentre", what)
    if iso is None:
      iso = located
      report["iso"] = iso.tolist()
      report["iso_source"] = f"central rays of the two NIfTI detectors (they pass {gap:.2f} mm apart)"
  if iso is None:
    iso = np.zeros(3)
    report["iso"], report["iso_source"] = [0.0, 0.0, 0.0], (
        "default: the world origin (no --iso, and the files do not locate their detectors); the "
        "output is centred on the isocentre, not placed in the patient frame")
  acqs = {}
  for v, (img, meta) in read.items():
    acqs[v] = acquisition.resolve(v, img.shape, meta, flags_by_view.get(v, {}), ref,
                                  str(paths[v]), side_from_position=sides[v])
  defaulted = [v for v in VIEWS if acqs[v].sources["pixel_mm"].startswith("default")]
  if len(defaulted) == 2:
    (r1, c1), (r2, c2) = fimg.shape, limg.shape
    if abs(r1 / r2 - 1) > 0.02 or abs(c1 / c2 - 1) > 0.02:
      raise InputError(f"{frontal_path} ({r1}x{c1}) and {lateral_path} ({r2}x{c2}): different pixel "
                       "grids and no pixel pitch known for either; give --frontal_pixel_mm and "
                       "--lateral_pixel_mm (or DICOM files with ImagerPixelSpacing).")
  views = {}
  for v, (img, _) in read.items():
    if min(img.shape) < ref.size:
      raise InputError(f"{paths[v]}: image {img.shape[0]}x{img.shape[1]} is smaller than the "
                       f"model's {ref.size}x{ref.size} input; give the full-resolution export.")
    line = xray_io.to_line_integral(img, domain)
    views[v] = xray_io.normalize(acquisition.to_canonical_view(line, acqs[v], ref))
    report[v] = {"file": str(paths[v]), "shape": list(img.shape), **acqs[v].report()}
  geometry = np.array([acqs["frontal"].inv_sid, acqs["lateral"].inv_sid], np.float32)
  return PreparedPair(views["frontal"], views["lateral"], geometry, np.asarray(iso, float), report)


class Reconstructor:
  """Loads a generator once; `__call__` reconstructs one prepared pair.

  `workdir`: a trained run (its 'best' or 'latest' EMA generator), or a model folder
  (`cvaa_jax.pretrained`: config.json + weights.npz); None: the shipped model.
  """

  def __init__(self, workdir: str | pathlib.Path | None = None, which: str = "best"):
    from cvaa_jax import pretrained  # pylint: disable=g-import-not-at-top
    from cvaa_jax.train import loop, step as step_lib  # pylint: disable=g-import-not-at-top
    path = pathlib.Path(workdir) if workdir is not None else pretrained.DEFAULT
    if workdir is None or pretrained.is_model_dir(path):
      self.config, self.scfg, self.params = pretrained.load(path)
      step = (path / "step.txt").read_text().strip() if (path / "step.txt").exists() else "?"
      self.step = int(step) if step.isdigit() else -1
      shipped = " (shipped with cvaa_jax)" if path == pretrained.DEFAULT else ""
      self.model = (f"{path}{shipped}: {self.config.model.name} at {self.config.data.size}^3 x "
                    f"{self.config.data.spacing_mm:g} mm, trained {step} steps, weights sha256 "
                    f"{pretrained.sha256(path / pretrained.WEIGHTS)[:12]}")
    else:
      self.config = config_lib.load_run_config(workdir)
      which = loop.resolve_which(workdir, which)
      self.scfg, self.params, self.step = loop.restore_for_inference(self.config, workdir, which)
      self.model = f"{workdir} ({which} checkpoint, step {self.step})"
    self.size = self.config.data.size
    self.forward: Callable = jax.jit(
        lambda p, f, l, g: step_lib.g_apply(self.scfg, p, f, l, g)[0])
    self._render_at = jax.jit(lambda v, g: step_lib.render_views(self.scfg, v, geometry=g))

  @property
  def reference(self) -> acquisition.Reference:
    return acquisition.Reference.from_config(self.config)

  def default_geometry(self) -> np.ndarray:
    return np.array([s.inv_sid for s in self.scfg.views], np.float32)

  def _render(self, volume, geometry=None):
    """DRRs of (B, S, S, S) volumes at per-sample canonical geometry (B, 2), default: training."""
    volume = jnp.asarray(volume)
    if geometry is None:
      geometry = np.broadcast_to(self.default_geometry(), (volume.shape[0], 2))
    return self._render_at(volume, jnp.asarray(geometry, jnp.float32))

  def __call__(self, frontal: np.ndarray, lateral: np.ndarray, geometry: np.ndarray | None = None
               ) -> tuple[np.ndarray, dict]:
    """Canonical model-input images (S, S) and their geometry (2,) -> ([0, 1] volume (S, S, S),
    consistency scores of its re-rendering in the same geometry)."""
    g = jnp.asarray((self.default_geometry() if geometry is None else geometry)[None], jnp.float32)
    f, l = jnp.asarray(frontal)[None], jnp.asarray(lateral)[None]
    vol = self.forward(self.params, f, l, g)
    rf, rl = self._render_at(vol, g)
    scores = {}
    for name, a, b in (("frontal", f, rf), ("lateral", l, rl)):
      a, b = np.asarray(a[0], np.float64), np.asarray(b[0], np.float64)
      ncc = float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
      scores[f"{name}_mae"] = float(np.abs(a - b).mean())
      scores[f"{name}_ncc"] = ncc
    return np.asarray(vol[0]), scores

  def volume(self, unit: np.ndarray, iso=(0.0, 0.0, 0.0)) -> Volume:
    """The model-grid volume in HU with its RAS affine, centred on the isocentre `iso` (mm)."""
    d = self.config.data
    sp, origin = projection.grid(self.size, self.size * d.spacing_mm)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(sp)
    affine[:3, 3] = origin + np.asarray(iso, float)
    vol = Volume(unit, affine, source="reconstruction",
                 history=({"op": "scale_intensity_range", "a_min": d.hu_min, "a_max": d.hu_max,
                           "b_min": 0.0, "b_max": 1.0, "clip": True},))
    return transforms.unit_to_hu(vol)


class AtlasFitter:
  """Fits and fuses the atlases (cvaa_jax.fit) for pairs on one model grid; loads them once."""

  def __init__(self, folder: str | pathlib.Path | None = None, k: int = 3,
               exclude: tuple[str, ...] = ()):
    from cvaa_jax.fit import atlas as atlas_lib  # pylint: disable=g-import-not-at-top
    self.folder = pathlib.Path(folder) if folder else atlas_lib.SHIPPED_DIR
    if not self.folder.is_dir():
      raise InputError(f"--atlases={self.folder}: no such folder; build one with python -m "
                       "cvaa_jax.fit.build_atlases, or leave the flag out for the shipped atlases.")
    known = atlas_lib.shipped_names(self.folder)
    unknown = [n for n in exclude if n not in known]
    if unknown:
      raise InputError(f"--exclude_atlases: no atlas named {', '.join(unknown)} in {self.folder} "
                       f"(it has: {', '.join(known)}).")
    self.atlases = atlas_lib.load_all(self.folder, exclude=tuple(exclude))
    if k < 1:
      raise InputError(f"--atlas_k={k}: fuse at least one atlas.")
    self.k = k

  def __call__(self, pair: "PreparedPair", ref: acquisition.Reference) -> tuple[np.ndarray, dict]:
    """(fused HU (S, S, S), per-voxel std HU) and what won: the atlases, weights and scores."""
    from cvaa_jax.fit import fuse, register  # pylint: disable=g-import-not-at-top
    target = register.Target(np.stack([pair.frontal, pair.lateral]),
                             tuple(float(g) for g in pair.geometry), ref.fov_mm)
    shape_to = register.pad_shape(self.atlases)
    fits = [register.fit_atlas(a, target, shape_to=shape_to) for a in self.atlases]
    hu, std, chosen = fuse.fuse(fits, self.k)
    info = {"atlases": [{"name": n, "weight": w} for n, w in chosen],
            "ranking": [{"name": f.name, "score": f.score, "covered_share": f.covered_share,
                         "similarity": f.similarity, "seconds": f.seconds}
                        for f in fuse.rank(fits)]}
    return hu, std, info


def _stem(path: pathlib.Path) -> str:
  return path.name.replace(".nii.gz", "").replace(".nii", "")


def reconstruct_pair(rec: "Reconstructor | None", frontal_path, lateral_path, out_path,
                     domain="display", png=True, flags_by_view=None, iso=None,
                     prepared: PreparedPair | None = None, method: str = "gan",
                     refine: bool = False, fitter: AtlasFitter | None = None,
                     ref: acquisition.Reference | None = None) -> dict:
  """Reconstructs one pair with `method` ('gan': the network; 'atlas': fused atlas fits; 'hybrid':
  the network's volume with the atlases' skeleton, fit/hybrid.py), optionally `refine`d for
  consistency with the radiographs (fit/refine.py). Writes the CT (HU, RAS), for atlas and hybrid
  the per-voxel uncertainty (`*_uncertainty.nii.gz`, std in HU, same grid), and a PNG of slices and
  bone MIPs; returns the report: re-projection agreement per view before and after refinement."""
  from cvaa_jax.fit import hybrid, refine as refine_lib, register  # pylint: disable=g-import-not-at-top
  if method not in METHODS:
    raise InputError(f"--method={method}: use one of {', '.join(METHODS)}.")
  ref = ref or rec.reference
  pair = prepared or prepare_pair(frontal_path, lateral_path, ref, flags_by_view, iso, domain)
  d = (rec.config.data if rec is not None else None)
  hu_min, hu_max = (d.hu_min, d.hu_max) if d is not None else (-1000.0, 4096.0)
  span = hu_max - hu_min
  t_all = time.perf_counter()
  timing, std, info, scores = {}, None, {}, {}
  if method in ("gan", "hybrid"):
    t = time.perf_counter()
    unit, scores = rec(pair.frontal, pair.lateral, pair.geometry)
    timing["network_s"] = time.perf_counter() - t
  if method in ("atlas", "hybrid"):
    t = time.perf_counter()
    fitter = fitter or AtlasFitter()
    atlas_hu, std, info = fitter(pair, ref)
    timing["atlas_fit_s"] = time.perf_counter() - t
  target = register.Target(np.stack([pair.frontal, pair.lateral]),
                           tuple(float(g) for g in pair.geometry), ref.fov_mm)
  if method == "atlas":
    unit = np.clip((atlas_hu - hu_min) / span, 0.0, 1.0).astype(np.float32)
  elif method == "hybrid":
    atlas_unit = np.clip((atlas_hu - hu_min) / span, 0.0, 1.0)
    soft = hybrid.choose_soft(refine_lib.agreement(unit, target, hu_min, hu_max),
                              refine_lib.agreement(atlas_unit, target, hu_min, hu_max))
    info["soft_tissue_from"] = soft
    fused_hu = hybrid.combine(unit * span + hu_min, atlas_hu, soft_from=soft)
    unit = np.clip((fused_hu - hu_min) / span, 0.0, 1.0).astype(np.float32)
  agreement = {"before_refine": refine_lib.agreement(unit, target, hu_min, hu_max)}
  if refine:
    t = time.perf_counter()
    unit = refine_lib.refine(unit, target, hu_min=hu_min, hu_max=hu_max)
    timing["refine_s"] = time.perf_counter() - t
    agreement["after_refine"] = refine_lib.agreement(unit, target, hu_min, hu_max)
  final = agreement.get("after_refine", agreement["before_refine"])
  for v in VIEWS:
    scores[f"{v}_ncc"] = final[v]["ncc"]
    scores[f"{v}_psnr"] = final[v]["psnr"]
    scores.setdefault(f"{v}_mae", float("nan"))
  timing["total_s"] = time.perf_counter() - t_all
  out_path = pathlib.Path(out_path)
  volume = volume_on_grid(unit, pair.iso, ref, hu_min, hu_max)
  io.save_nifti(volume, out_path)
  written = {"ct": str(out_path)}
  if std is not None:
    unc = out_path.with_name(_stem(out_path) + "_uncertainty.nii.gz")
    io.save_nifti(Volume(np.asarray(std, np.float32), volume.affine, source="uncertainty"), unc)
    written["uncertainty"] = str(unc)
  if png:
    fig = out_path.with_name(_stem(out_path) + ".png")
    viz.save_bone_figure({f"{method}{' + refine' if refine else ''}": unit}, fig,
                         uncertainty=std, hu_min=hu_min, hu_max=hu_max,
                         title=f"{_stem(out_path)}: slices (-200..400 HU), bone MIPs (150..1200 HU)")
    written["png"] = str(fig)
  model = rec.model if rec is not None else "none (atlas method)"
  return {"frontal": str(frontal_path), "lateral": str(lateral_path), "out": str(out_path),
          "written": written, "method": method, "refine": refine, "model": model,
          "seconds": timing["total_s"], "timing": timing, **scores, "reprojection": agreement,
          **({"atlas_fit": info} if info else {}), "geometry": pair.report}


def volume_on_grid(unit: np.ndarray, iso, ref: acquisition.Reference, hu_min: float = -1000.0,
                   hu_max: float = 4096.0) -> Volume:
  """A [0, 1] model-grid volume in HU with its RAS affine, centred on the isocentre `iso` (mm)."""
  sp, origin = projection.grid(ref.size, ref.fov_mm)
  affine = np.eye(4)
  affine[:3, :3] = np.diag(sp)
  affine[:3, 3] = origin + np.asarray(iso, float)
  vol = Volume(unit, affine, source="reconstruction",
               history=({"op": "scale_intensity_range", "a_min": hu_min, "a_max": hu_max,
                         "b_min": 0.0, "b_max": 1.0, "clip": True},))
  return transforms.unit_to_hu(vol)


def main(argv):
  del argv
  cli.setup_logging(info=False)
  try:
    if not FLAGS.out:
      raise InputError("--out is required (the output .nii.gz, or a folder with --pairs).")
    if FLAGS.pairs is None and not (FLAGS.frontal and FLAGS.lateral):
      missing = "--frontal" if not FLAGS.frontal else "--lateral"
      raise InputError(f"{missing} is missing: give both views, or --pairs=<folder>.")
    iso = parse_iso(FLAGS.iso)
    by_view = {v: view_flags(v) for v in VIEWS}
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
    from cvaa_jax import pretrained  # pylint: disable=g-import-not-at-top
    model_dir = FLAGS.workdir or pretrained.DEFAULT
    if not FLAGS.workdir and not pretrained.is_model_dir(model_dir):
      raise InputError(f"no --workdir given and no shipped model at {model_dir}; pass "
                       "--workdir=<a trained run>.")
    ref = acquisition.Reference.from_config(config_lib.load_run_config(model_dir))
    prepared = [prepare_pair(fr, la, ref, by_view, iso, FLAGS.domain) for fr, la, _ in jobs]
    t_start = time.perf_counter()
    fitter = AtlasFitter(FLAGS.atlases, FLAGS.atlas_k, tuple(FLAGS.exclude_atlases)) \
        if FLAGS.method != "gan" else None
    rec = Reconstructor(FLAGS.workdir, FLAGS.which) if FLAGS.method != "atlas" else None
    print(f"method: {FLAGS.method}{' + refine' if FLAGS.refine else ''}"
          + (f"; model: {rec.model}" if rec else "")
          + (f"; {len(fitter.atlases)} atlases from {fitter.folder}" if fitter else ""))
    for p in prepared:  # what neither the file nor a flag said, on screen (not only in the report)
      for line in defaulted_lines(p.report):
        print(line)
    results = []
    for (fr, la, out), p in zip(jobs, prepared):
      r = reconstruct_pair(rec, fr, la, out, FLAGS.domain, FLAGS.png, prepared=p,
                           method=FLAGS.method, refine=FLAGS.refine, fitter=fitter, ref=ref)
      results.append(r)
      if "atlas_fit" in r:
        soft = r["atlas_fit"].get("soft_tissue_from")
        print(f"{r['out']}: atlases fused: " + ", ".join(
            f"{a['name']} ({a['weight']:.2f})" for a in r["atlas_fit"]["atlases"])
            + (f"; soft tissue from the {soft} (better re-projection agreement), bone from both"
               if soft else ""))
      agree = r["reprojection"]
      line = lambda a: " / ".join(f"{a[v]['ncc']:.3f}" for v in VIEWS)
      print(f"{r['out']}: re-projection NCC frontal / lateral {line(agree['before_refine'])}"
            + (f" -> {line(agree['after_refine'])} after refinement" if "after_refine" in agree
               else "") + "; written: " + ", ".join(r["written"].values()))
    print(f"{len(results)} pair(s) in {time.perf_counter() - t_start:.1f} s wall clock (model "
          "loading, fitting, writing; the per-step times are in the report)")
    report = pathlib.Path(FLAGS.out if FLAGS.pairs else pathlib.Path(FLAGS.out).parent)
    (report / "reconstruct_report.json").write_text(json.dumps(results, indent=1))
  except CvaaError as e:
    cli.fail(str(e))


def cli_main() -> None:
  """Console entry point (pyproject [project.scripts]); same as `python -m cvaa_jax.reconstruct`."""
  define_flags()
  cli.run_app(main, __name__)


if __name__ == "__main__":
  cli_main()
