"""Builds atlases (fit/atlas.py) from a folder of CTs: the shipped set, or your own.

  python -m cvaa_jax.fit.build_atlases --ct_dir=../shared/data/ct --out=cvaa_jax/fit/atlases \\
      [--names=abdomen_totalseg,chest_lidc,...] [--spacing_mm=4]

Every NIfTI or DICOM series in --ct_dir (top level; sub-folders such as noncommercial/ are not
entered) becomes <out>/<name>.npz; --names keeps only those. Use atlases with
`reconstruct --method=atlas|hybrid --atlases=<out>`. Ship only scans whose licence allows it, and
record each one's source in <out>/LICENSES.md.
"""

from __future__ import annotations

import pathlib
import time

from absl import flags

from cvaa_jax import cli
from cvaa_jax.data import io
from cvaa_jax.errors import CvaaError, InputError
from cvaa_jax.fit import atlas as atlas_lib

FLAGS = flags.FLAGS


def build(ct_dir: str | pathlib.Path, out: str | pathlib.Path, names: tuple[str, ...] = (),
          spacing_mm: float = 4.0) -> list[pathlib.Path]:
  """Writes one atlas per CT in `ct_dir` (only `names` when given); returns the files."""
  root = pathlib.Path(ct_dir)
  paths = io.list_ct_files(root)
  found = dict(zip(io.case_names(root, paths), paths))
  missing = [n for n in names if n not in found]
  if missing:
    raise InputError(f"{root}: no CT named {', '.join(missing)} (found: {', '.join(sorted(found))}).")
  written = []
  for name in (names or sorted(found)):
    t = time.perf_counter()
    atlas = atlas_lib.from_volume(io.load_ct(found[name]), name, spacing_mm)
    written.append(atlas.save(pathlib.Path(out) / f"{name}.npz"))
    print(f"{written[-1]}: {atlas.hu.shape} voxels of {spacing_mm:g} mm, "
          f"{time.perf_counter() - t:.1f} s")
  return written


def main(argv):
  del argv
  cli.setup_logging(info=False)
  try:
    if not FLAGS.ct_dir or not FLAGS.out:
      raise InputError("--ct_dir and --out are required.")
    names = tuple(n for n in (FLAGS.names or "").split(",") if n)
    build(FLAGS.ct_dir, FLAGS.out, names, FLAGS.spacing_mm)
  except CvaaError as e:
    cli.fail(str(e))


def define_flags() -> None:
  flags.DEFINE_string("ct_dir", None, "Folder of CTs (NIfTI files or DICOM series folders).")
  flags.DEFINE_string("out", None, "Folder to write the atlases to.")
  flags.DEFINE_string("names", None, "Comma-separated case names to keep (default: all).")
  flags.DEFINE_float("spacing_mm", 4.0, "Atlas voxel size, mm.")


def cli_main() -> None:
  """Console entry point cvaa-build-atlases; same as `python -m cvaa_jax.fit.build_atlases`."""
  define_flags()
  cli.run_app(main, __name__)


if __name__ == "__main__":
  cli_main()
