"""Check inputs before training or reconstructing: `python -m cvaa_jax.inspect PATH [PATH ...]`.

Each path is a CT (NIfTI file or DICOM series folder), a radiograph (PNG/TIFF/JPEG, DICOM DX/CR,
2-D NIfTI), or a folder of either. A folder holding a 3-D NIfTI or sub-folders is a CT collection
and is listed exactly as `config.data.ct_dir` is (`io.list_ct_files`, `--ct_glob` / `--ct_exclude`
as in the config), every case loaded by the CT loader: a 2-D or single-slice NIfTI or a sub-folder
without DICOM there is an error, as training would find. A folder of images is a folder of
radiographs. `--as=ct|xray` decides instead of the files. Every input is loaded exactly as
training / reconstruct would load it, and gets one line: its kind, shape, spacing,
orientation, HU range and body box (CT) or size, pitch and view tags (X-ray) -- or one `error:` line
naming the file and the fix. `--out DIR` also writes each CT preprocessed onto the model grid (HU
NIfTI) with a preview of its mid-slices and its two DRRs. Exit status 1 when any input is bad.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
from absl import flags

from cvaa_jax import cli, xray_io
from cvaa_jax.data import io, transforms
from cvaa_jax.errors import CvaaError, InputError

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("out", None, "Folder for preprocessed volumes and previews (optional).")
  flags.DEFINE_integer("size", 128, "Model grid edge for --out (config.data.size).")
  flags.DEFINE_float("spacing_mm", 2.0, "Model grid voxel size for --out (config.data.spacing_mm).")
  flags.DEFINE_bool("check_hu", True, "Reject CTs that are not in HU (config.data.check_hu).")
  flags.DEFINE_string("unoriented_axcodes", "", "Axes of NIfTIs without orientation, e.g. LPS.")
  flags.DEFINE_enum("as", "auto", ["auto", "ct", "xray"],
                    "Read the inputs as CTs (files, DICOM series, collections as config.data."
                    "ct_dir) or as radiographs; auto: decided from the files.")
  flags.DEFINE_string("ct_glob", "", "config.data.ct_glob for CT collections.")
  flags.DEFINE_string("ct_exclude", "", "config.data.ct_exclude for CT collections.")


def _is_volume_nifti(path: pathlib.Path) -> bool | None:
  """True for a NIfTI with 3 or more non-singleton axes, False for 2-D, None if unreadable."""
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  try:
    shape = nib.load(str(path)).shape
  except Exception:  # pylint: disable=broad-except
    return None
  return len([s for s in shape if s > 1]) >= 3


def kind_of(path: pathlib.Path, forced: str = "auto") -> str:
  """'ct' (a CT file or one DICOM series), 'collection' (a folder of CT cases, as config.data.ct_dir),
  'xray', or 'xrays' (a folder of radiographs or of pair folders)."""
  if path.is_dir():
    files = [p for p in path.iterdir() if not p.name.startswith(".")]
    series = files and all(p.is_file() and not io.is_nifti(p) and not p.name.lower().endswith(
        xray_io.IMAGE_SUFFIXES) for p in files)
    if forced == "xray":
      return "xrays"
    if series:
      return "ct"  # a folder of slices: one DICOM series
    if forced == "ct" or any(p.is_dir() for p in files) or any(
        io.is_nifti(p) and _is_volume_nifti(p) is not False for p in files):
      return "collection"
    return "xrays"
  if forced != "auto":
    return forced
  if path.name.lower().endswith(xray_io.IMAGE_SUFFIXES):
    return "xray"
  if io.is_nifti(path):
    return "ct" if _is_volume_nifti(path) is not False else "xray"
  return "xray"  # a single DICOM file: a radiograph (DX/CR)


OTHER_SUFFIXES = (".txt", ".md", ".json", ".csv", ".pdf", ".html", ".py", ".yaml", ".yml", ".xml",
                  ".log", ".zip", ".gz")


def _may_be_input(path: pathlib.Path) -> bool:
  """Inside a folder: NIfTI, image and DICOM files (also suffix-less ones) are inputs."""
  name = path.name.lower()
  return io.is_nifti(path) or name.endswith(xray_io.IMAGE_SUFFIXES) or \
      not name.endswith(OTHER_SUFFIXES) and not name.startswith("license")


def describe_ct(path: pathlib.Path, check_hu: bool, axcodes: str):
  loaded = io.load_ct(path, check_hu=check_hu, unoriented_axcodes=axcodes)
  stored = "".join(loaded.axcodes)
  vol = transforms.ras(loaded)
  lo, hi = transforms.body_box(vol)
  box = (hi - lo + 1) * vol.spacing
  a = vol.array
  line = (f"CT     {path}: {'x'.join(map(str, a.shape))} voxels, spacing "
          f"{'x'.join(f'{s:.3g}' for s in vol.spacing)} mm, stored {stored}, HU "
          f"{a.min():.0f}..{a.max():.0f}, body box {'x'.join(f'{b:.0f}' for b in box)} mm")
  oblique = [op for op in vol.history if op["op"] == "to_patient_axes"]
  if oblique:
    line += (f"; oblique grid ({oblique[0]['max_axis_angle_deg']:.1f} deg off the patient axes): "
             "resampled onto them")
  return line, vol


def describe_xray(path: pathlib.Path) -> str:
  img, meta = xray_io.read_xray_meta(path)
  parts = [f"X-ray  {path}: {img.shape[0]}x{img.shape[1]} pixels"]
  if "pixel_mm" in meta:
    parts.append(f"pitch {'x'.join(f'{p:.3g}' for p in meta['pixel_mm'][0])} mm")
  for key in ("side", "orientation", "sid", "sdd"):
    if key in meta:
      value = meta[key][0]
      parts.append(f"{key} {','.join(value) if isinstance(value, tuple) else value}")
  if "detector" in meta:
    parts.append("detector located in patient space")
  return ", ".join(parts)


def write_preview(vol, out: pathlib.Path, size: int, spacing_mm: float) -> pathlib.Path:
  """The CT on the model grid (HU NIfTI) and a PNG of its mid-slices and two training DRRs."""
  from cvaa_jax import drr, viz  # pylint: disable=g-import-not-at-top
  from cvaa_jax.models import projection  # pylint: disable=g-import-not-at-top
  name = pathlib.Path(vol.source).name.replace(".nii.gz", "").replace(".nii", "")
  grid = transforms.preprocess(vol, spacing_mm=spacing_mm, size=(size,) * 3)
  io.save_nifti(transforms.unit_to_hu(grid), out / f"{name}.nii.gz")
  spacing, origin = projection.grid(size, size * spacing_mm)
  mu = drr.unit_to_mu(np.asarray(grid.array, np.float32))
  views = [np.asarray(drr.normalize_projection(drr.project(mu, spacing, origin, spec.geometry(size))))
           for spec in projection.views_for(fov_mm=size * spacing_mm)]
  slices = viz.mid_slices(np.clip(np.asarray(grid.array), 0.0, 0.35))
  return viz.save_panels_png({**slices, "frontal DRR": views[0], "lateral DRR": views[1]},
                             out / f"{name}.png", title=f"{name} on the model grid")


def inspect_paths(paths, out=None, size=128, spacing_mm=2.0, check_hu=True, axcodes="",
                  emit=print, forced: str = "auto", ct_glob: str = "", ct_exclude: str = "") -> int:
  """Prints one line per input; returns the number of bad inputs."""
  bad = 0
  todo = [(pathlib.Path(p), None) for p in paths]  # (path, kind decided by its folder)
  while todo:
    path, kind = todo.pop(0)
    try:
      if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path.")
      kind = kind or kind_of(path, forced)
      if kind == "collection":  # exactly what training reads from config.data.ct_dir
        cases = io.list_ct_files(path, ct_glob, ct_exclude)
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        other = [p for p in entries if p not in cases and not ct_glob]
        if other:
          emit(f"skip   {path}: {len(other)} entr(ies) that training does not read as CTs "
               f"({', '.join(p.name for p in other)[:120]})")
        todo = [(c, "ct") for c in cases] + todo
        continue
      if kind == "xrays":
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        if not entries:
          raise InputError(f"{path}: the folder is empty.")
        inputs = [p for p in entries if p.is_dir() or _may_be_input(p)]
        if len(inputs) < len(entries):  # notes, licences, tables beside the images
          emit(f"skip   {path}: {len(entries) - len(inputs)} file(s) that are no CT or X-ray "
               f"({', '.join(p.name for p in entries if p not in inputs)[:120]})")
        todo = [(p, "xrays" if p.is_dir() else "xray") for p in inputs] + todo
        continue
      if kind == "xray":
        emit(describe_xray(path))
      else:
        line, vol = describe_ct(path, check_hu, axcodes)
        if out is not None:
          out.mkdir(parents=True, exist_ok=True)
          line += f"; wrote {write_preview(vol, out, size, spacing_mm)}"
        emit(line)
    except CvaaError as e:
      bad += 1
      emit("error: " + " ".join(str(e).split()))
  return bad


def main(argv):
  cli.setup_logging(info=False)
  paths = argv[1:]
  if not paths:
    cli.fail("give one or more files or folders: python -m cvaa_jax.inspect PATH [PATH ...]")
  out = pathlib.Path(FLAGS.out) if FLAGS.out else None
  bad = inspect_paths(paths, out, FLAGS.size, FLAGS.spacing_mm, FLAGS.check_hu,
                      FLAGS.unoriented_axcodes, forced=FLAGS["as"].value,
                      ct_glob=FLAGS.ct_glob, ct_exclude=FLAGS.ct_exclude)
  sys.exit(1 if bad else 0)


def cli_main() -> None:
  """Console entry point (pyproject [project.scripts]); same as `python -m cvaa_jax.inspect`."""
  define_flags()
  cli.run_app(main, __name__)


if __name__ == "__main__":
  cli_main()
