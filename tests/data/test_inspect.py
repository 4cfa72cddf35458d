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
