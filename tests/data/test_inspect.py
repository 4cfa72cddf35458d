"""`python -m cvaa_jax.inspect`: one line per input, exactly as training and reconstruct load it."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.conftest import BUNDLED_CT, ROOT


def test_inspect_lists_good_inputs_names_bad_ones_and_writes_previews(tmp_path):
  folder = tmp_path / "cts"
  folder.mkdir()
  (folder / "ct.nii.gz").write_bytes(BUNDLED_CT.read_bytes())
  (folder / "broken.nii.gz").write_bytes(b"not a nifti")
  (folder / "README.txt").write_text("notes beside the scans are skipped, not errors")
  xray = tmp_path / "ap.png"
  Image.fromarray((np.random.default_rng(0).random((40, 32)) * 255).astype(np.uint8)).save(xray)
  r = subprocess.run([sys.executable, "-m", "cvaa_jax.inspect", str(folder), str(xray),
                      f"--out={tmp_path / 'out'}", "--size=32", "--spacing_mm=8"], cwd=ROOT,
                     capture_output=True, text=True, timeout=300,
                     env={**os.environ, "PYTHONPATH": str(ROOT)})
  lines = r.stdout.strip().splitlines()
  assert r.returncode == 1, r.stderr[-2000:]  # one bad input
  assert len(lines) == 4, r.stdout
  assert lines[0].startswith("skip") and "README.txt" in lines[0]
  assert lines[1].startswith("error:") and "broken.nii.gz" in lines[1]
  assert lines[2].startswith("CT") and "122x101x112 voxels" in lines[2] and "RAS" in lines[2]
  assert "HU -1" in lines[2] and "body box" in lines[2]
  assert lines[3].startswith("X-ray") and "40x32 pixels" in lines[3]
  assert (tmp_path / "out" / "ct.nii.gz").exists() and (tmp_path / "out" / "ct.png").exists()
  assert not r.stderr.strip()


def test_a_ct_collection_gets_the_verdict_training_gives(tmp_path):
  """Inside a CT folder a 2-D or single-slice NIfTI, a sub-folder without DICOM and a NIfTI whose
  voxel sizes are zero are errors (training rejects them), each one line naming it, and stderr
  stays empty (nibabel's own 'fixing' messages included); `--as=xray` reads 2-D NIfTIs as X-rays."""
  import nibabel as nib
  from cvaa_jax.data import io
  folder = tmp_path / "cts"
  folder.mkdir()
  (folder / "ct.nii.gz").write_bytes(BUNDLED_CT.read_bytes())
  rng = np.random.default_rng(0)
  nib.save(nib.Nifti1Image(rng.random((40, 40)).astype(np.float32), np.eye(4)),
           str(folder / "flat.nii.gz"))
  nib.save(nib.Nifti1Image(rng.random((40, 40, 1)).astype(np.float32) * 100, np.eye(4)),
           str(folder / "slice.nii.gz"))
  zero = nib.Nifti1Image(rng.random((20, 20, 20)).astype(np.float32) * 100, np.eye(4))
  zero.header["pixdim"][1:4] = 0
  nib.save(zero, str(folder / "zero_pixdim.nii.gz"))
  (folder / "pngs").mkdir()
  Image.fromarray((rng.random((40, 32)) * 255).astype(np.uint8)).save(folder / "pngs" / "a.png")
  run = lambda *a: subprocess.run([sys.executable, "-m", "cvaa_jax.inspect", *a], cwd=ROOT,
                                  capture_output=True, text=True, timeout=300,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
  r = run(str(folder))
  lines = r.stdout.strip().splitlines()
  assert r.returncode == 1 and not r.stderr.strip(), r.stderr[-2000:]
  assert len(lines) == 5, lines
  errors = [l for l in lines if l.startswith("error:")]
  assert len(errors) == 4 and all(any(n in e for e in errors) for n in (
      "flat.nii.gz", "slice.nii.gz", "zero_pixdim.nii.gz", "pngs"))
  assert any(l.startswith("CT") and "ct.nii.gz" in l for l in lines), lines
  # The same verdict as the training's loader, case by case.
  for case in io.list_ct_files(folder):
    try:
      io.load_ct(case)
      ok = True
    except Exception:  # pylint: disable=broad-except
      ok = False
    assert ok == any(l.startswith("CT") and str(case) in l for l in lines), case
  r = run("--as=xray", str(folder / "flat.nii.gz"))
  assert r.returncode == 0 and r.stdout.startswith("X-ray"), r.stdout + r.stderr
