"""Writes a frontal + lateral radiograph pair to try `reconstruct` on, with its ground truth.

  python -m cvaa_jax.make_example --out=example/

Renders the bundled CT (`data/assets/abdomen_totalseg.nii.gz`, TotalSegmentator test data,
Apache-2.0) as a clinical cone-beam pair at a geometry other than the training one -- source 1000 mm
from the isocentre, detector 1500 mm from the source, 40 x 40 cm detector at 0.5 mm pitch -- an AP
frontal and a left lateral, drawn as seen from the source. Each view is written three ways:
  frontal.dcm / lateral.dcm        DICOM DX with the geometry tags (ViewPosition, PatientOrientation,
                                   ImagerPixelSpacing, DistanceSourceToPatient / ToDetector)
  frontal.png / lateral.png        16-bit PNG, the same pixels; the geometry goes in as flags
  frontal.nii.gz / lateral.nii.gz  2-D NIfTI whose affine places the detector in patient space
plus ground_truth.nii.gz (the CT on the model grid centred on the isocentre, HU) and README.txt with
the geometry and the commands.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from absl import flags

from cvaa_jax import cli, drr, xray_io
from cvaa_jax.data import io, transforms
from cvaa_jax.errors import CvaaError, InputError

FLAGS = flags.FLAGS
BUNDLED_CT = pathlib.Path(__file__).resolve().parent / "data" / "assets" / "abdomen_totalseg.nii.gz"
SID_MM, SDD_MM, PITCH_MM, DETECTOR_PX = 1000.0, 1500.0, 0.5, 800


def define_flags() -> None:
  flags.DEFINE_string("out", None, "Folder to write the example into.")
  flags.DEFINE_string("ct", str(BUNDLED_CT), "CT to render (NIfTI or DICOM folder, HU).")
  flags.DEFINE_integer("size", 128, "Ground-truth grid edge (voxels).")
  flags.DEFINE_float("spacing_mm", 2.0, "Ground-truth voxel size (mm).")
  flags.DEFINE_integer("detector_px", DETECTOR_PX, "Detector edge in pixels.")
  flags.DEFINE_float("pitch_mm", PITCH_MM, "Detector pixel pitch (mm).")


def isocentre(vol) -> np.ndarray:
  """The body's centre across (x, y) and the scan's centre along z, world mm."""
  lo, hi = transforms.body_box(vol)
  centre = (lo + hi) / 2.0
  centre[2] = (vol.shape[2] - 1) / 2.0
  return (vol.affine @ np.append(centre, 1.0))[:3]


def make_example(out: str | pathlib.Path, ct: str | pathlib.Path = BUNDLED_CT, size: int = 128,
                 spacing_mm: float = 2.0, detector_px: int = DETECTOR_PX,
                 pitch_mm: float = PITCH_MM) -> dict:
  out = pathlib.Path(out)
  try:
    out.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise InputError(f"--out={out}: cannot create the folder ({e.strerror or e}).") from None
  vol = transforms.ras(io.load_ct(ct))
  iso = isocentre(vol)
  spacing, origin = drr.grid_from_affine(vol.affine)
  mu = drr.hu_to_mu(np.asarray(vol.array, np.float32))
  shape = (detector_px, detector_px)
  views = {"frontal": ("ap", "AP", ("L", "F")), "lateral": ("lateral", "LL", ("A", "F"))}
  info = {"ct": str(ct), "isocentre_mm_ras": iso.round(3).tolist(), "beam": "cone", "sid_mm": SID_MM,
          "sdd_mm": SDD_MM, "pixel_mm": pitch_mm, "detector_px": detector_px, "views": {}}
  for name, (view, position, orient) in views.items():
    g = drr.cone_beam(view, shape, pitch_mm, sid=SID_MM, sdd=SDD_MM, isocenter=iso)
    pixels = xray_io.to_uint16(np.asarray(drr.project(mu, spacing, origin, g)))
    xray_io.write_dicom_dx(out / f"{name}.dcm", pixels, view_position=position,
                           orientation=orient, pixel_mm=(pitch_mm, pitch_mm), sid=SID_MM,
                           sdd=SDD_MM)
    xray_io.write_png16(out / f"{name}.png", pixels)
    xray_io.write_nifti2d(out / f"{name}.nii.gz", pixels, g, beam="cone", sid=SID_MM,
                          side="ap" if name == "frontal" else "left")
    info["views"][name] = {"view_position": position, "orientation": ",".join(orient)}
  affine = np.diag([spacing_mm] * 3 + [1.0])
  affine[:3, 3] = iso - (size - 1) / 2.0 * spacing_mm
  truth = transforms.resample_to_grid(vol, (size,) * 3, affine)
  io.save_nifti(truth, out / "ground_truth.nii.gz", dtype=np.int16)
  iso_flag = ",".join(f"{v:.3f}" for v in iso)
  # The scan may be one of the shipped atlases (the bundled CT is): leave it out of the fit, or the
  # patient would be reconstructed from its own CT.
  from cvaa_jax.fit import atlas as atlas_lib  # pylint: disable=g-import-not-at-top
  stem = pathlib.Path(ct).name.replace(".nii.gz", "").replace(".nii", "")
  own = stem in atlas_lib.shipped_names()
  excl = f" --exclude_atlases={stem}" if own else ""
  info["exclude_atlases"] = [stem] if own else []
  (out / "example.json").write_text(json.dumps(info, indent=1))
  (out / "README.txt").write_text(f"""\
cvaa_jax example pair rendered from {pathlib.Path(ct).name}
cone beam, SID {SID_MM:g} mm, SDD {SDD_MM:g} mm, {detector_px} x {detector_px} detector at \
{pitch_mm:g} mm; AP frontal and left lateral, drawn as seen from the source; isocentre \
{iso_flag} mm (RAS).

DICOM (geometry from the tags):
  python -m cvaa_jax.reconstruct --frontal={out}/frontal.dcm --lateral={out}/lateral.dcm \\
      --iso={iso_flag} --out=recon.nii.gz{excl}
PNG (geometry as flags):
  python -m cvaa_jax.reconstruct --frontal={out}/frontal.png --lateral={out}/lateral.png \\
      --sid={SID_MM:g} --sdd={SDD_MM:g} --pixel_mm={pitch_mm:g} --frontal_side=ap \\
      --lateral_side=left --iso={iso_flag} --out=recon.nii.gz{excl}
2-D NIfTI (detector positions give the isocentre):
  python -m cvaa_jax.reconstruct --frontal={out}/frontal.nii.gz --lateral={out}/lateral.nii.gz \\
      --out=recon.nii.gz{excl}
The default method is 'hybrid' + refinement: the shipped network (cvaa_jax/pretrained/real64; this
patient was among its training scans, so this shows the path works, not how well it generalises)
with the skeleton of the shipped atlases fitted to the pair{(" (--exclude_atlases leaves this " + "patient's own CT out of them)") if own else ""}.
--method=gan|atlas picks one alone; --workdir=runs/demo uses the demo model, or any folder
launch.py trained in.
Compare the result with ground_truth.nii.gz.
""")
  return info


def main(argv):
  del argv
  cli.setup_logging(info=False)
  try:
    if not FLAGS.out:
      raise InputError("--out is required: the folder to write the example pair into.")
    info = make_example(FLAGS.out, FLAGS.ct, FLAGS.size, FLAGS.spacing_mm, FLAGS.detector_px,
                        FLAGS.pitch_mm)
    print(f"wrote {FLAGS.out}: frontal/lateral .dcm .png .nii.gz, ground_truth.nii.gz "
          f"(isocentre {info['isocentre_mm_ras']} mm); see {FLAGS.out}/README.txt")
  except CvaaError as e:
    cli.fail(str(e))


def cli_main() -> None:
  """Console entry point (pyproject [project.scripts]); same as `python -m cvaa_jax.make_example`."""
  define_flags()
  cli.run_app(main, __name__)


if __name__ == "__main__":
  cli_main()
