"""Reconstruction from an X-ray pair and the multi-run evaluator, on a tiny checkpointed model."""

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from absl import flags
from PIL import Image

from cvaa_jax import evaluate, reconstruct, xray_io
from cvaa_jax.data import dataset, pipeline
from cvaa_jax.errors import CvaaError, InputError
from cvaa_jax.train import checkpoint, loop
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def workdir(tiny_workdir):
  return tiny_workdir


def _png(path, img, bits=16):
  scaled = (img - img.min()) / np.ptp(img)
  arr = (scaled * (65535 if bits == 16 else 255)).astype(np.uint16 if bits == 16 else np.uint8)
  Image.fromarray(arr).save(path)
  return path


@pytest.fixture(scope="module")
def xray_pair(workdir, tmp_path_factory):
  rec = reconstruct.Reconstructor(workdir, "latest")
  case = dataset.load_index(workdir / "data")[0]
  f, l = rec._render(np.asarray(case.load())[None])  # pylint: disable=protected-access
  d = tmp_path_factory.mktemp("xrays")
  # Real exports are larger and not square: 40 x 36 pixels, as a 16-bit and an 8-bit PNG.
  big = lambda im: np.pad(np.kron(np.asarray(im[0]), np.ones((2, 2))), ((4, 4), (2, 2)),
                          mode="edge")
  return _png(d / "AP.png", big(f)), _png(d / "LAT.png", big(l), bits=8), rec


def test_reconstruct_writes_hu_nifti_on_the_model_grid(xray_pair, tmp_path):
  ap, lat, rec = xray_pair
  out = tmp_path / "ct.nii.gz"
  result = reconstruct.reconstruct_pair(rec, ap, lat, out)
  img = nib.load(str(out))
  assert img.shape == (16, 16, 16)
  assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
  np.testing.assert_allclose(img.header.get_zooms(), (16.0, 16.0, 16.0))
  np.testing.assert_allclose(img.affine[:3, 3], -(16 - 1) / 2 * 16.0)  # centred on the isocentre
  data = img.get_fdata()
  assert -1000 <= data.min() and data.max() <= 4096
  for k in ("frontal_ncc", "lateral_ncc", "frontal_mae", "lateral_mae"):
    assert np.isfinite(result[k])
  assert out.with_name("ct.png").exists()


def test_reconstruct_cli_for_a_folder_of_pairs_and_its_errors(workdir, xray_pair, tmp_path):
  ap, lat, _ = xray_pair
  pairs = tmp_path / "pairs"
  for case in ("a", "b"):
    (pairs / case).mkdir(parents=True)
    shutil.copy(ap, pairs / case / "frontal.png")
    shutil.copy(lat, pairs / case / "lateral.png")
  cli = lambda *a: subprocess.run([sys.executable, "-m", "cvaa_jax.reconstruct",
                                   f"--workdir={workdir}", "--which=latest", *a], cwd=ROOT,
                                  capture_output=True, text=True, timeout=600,
                                  env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
  # The hybrid method with a folder of two atlases: each case gets its CT, its uncertainty and
  # its line saying which atlases won.
  atlases = tmp_path / "atlases"
  atlases.mkdir()
  for name in ("crlm_ct_1004", "lungdx_a0002"):
    shutil.copy(ROOT / "cvaa_jax" / "fit" / "atlases" / f"{name}.npz", atlases)
  r = cli(f"--pairs={pairs}", f"--out={tmp_path / 'out'}", "--nopng", "--method=hybrid",
          f"--atlases={atlases}", "--atlas_k=2")
  assert r.returncode == 0, r.stderr[-2000:]
  for case in ("a", "b"):
    assert (tmp_path / "out" / f"{case}.nii.gz").exists()
    assert (tmp_path / "out" / f"{case}_uncertainty.nii.gz").exists()
  report = json.loads((tmp_path / "out" / "reconstruct_report.json").read_text())
  assert len(report) == 2 and report[0]["method"] == "hybrid"
  assert {a["name"] for a in report[0]["atlas_fit"]["atlases"]} == {"crlm_ct_1004", "lungdx_a0002"}
  assert r.stdout.count("atlases fused:") == 2
  for flag, match in ((f"--atlases={tmp_path / 'none'}", "no such folder"),
                      ("--exclude_atlases=nobody", "no atlas named nobody")):
    r = cli(f"--frontal={ap}", f"--lateral={lat}", f"--out={tmp_path / 'y.nii.gz'}", flag,
            "--method=atlas")
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and match in err[0], r.stderr[-2000:]
  r = cli(f"--frontal={ap}", f"--out={tmp_path / 'x.nii.gz'}")
  assert r.returncode == 2 and "--lateral is missing" in r.stderr
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"not an image")
  r = cli(f"--frontal={ap}", f"--lateral={bad}", f"--out={tmp_path / 'x.nii.gz'}")
  err = r.stderr.strip().splitlines()  # exactly one line, nothing from the libraries
  assert r.returncode == 2 and len(err) == 1 and err[0].startswith("error:") and str(bad) in err[0]


@pytest.mark.parametrize("case,match", [
    ("empty", "empty"), ("missing", "not found"), ("3d", "2D radiograph"),
    ("constant", "constant"), ("tiny", "too small")])
def test_bad_xrays_are_named(tmp_path, case, match):
  path = tmp_path / "x.png"
  if case == "empty":
    path.write_bytes(b"")
  elif case == "3d":
    path = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(20, 20, 3).astype(np.float32), np.eye(4)), str(path))
  elif case == "constant":
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(path)
  elif case == "tiny":
    Image.fromarray((np.random.rand(8, 8) * 255).astype(np.uint8)).save(path)
  with pytest.raises(InputError, match=match) as e:
    xray_io.read_xray(path)
  assert str(path) in str(e.value)


def test_mismatched_pair_and_wrong_workdir(tmp_path, workdir):
  with pytest.raises(InputError, match="aspect ratios"):
    xray_io.check_pair(np.zeros((100, 40)), np.zeros((40, 100)), "a.png", "b.png")
  with pytest.raises(CvaaError, match="config.json"):
    reconstruct.Reconstructor(tmp_path)
  other = tmp_path / "other"
  shutil.copytree(workdir, other)
  cfg = json.loads((other / "config.json").read_text())
  cfg["model"]["base_channels_3d"] = 6  # a checkpoint of another model config
  (other / "config.json").write_text(json.dumps(cfg))
  # Named from the checkpoint's metadata, before any array is read.
  with pytest.raises(CvaaError, match=r"does not match the model .*: g_params/\S+ is "
                                      r"float32\[[\d, ]+\] in the checkpoint, float32\[[\d, ]+\]"):
    reconstruct.Reconstructor(other, "latest")
  # From the command line: that one line only. A restore that failed part-way used to leave
  # Orbax's reads running, which printed 'Event loop is closed' tracebacks at exit.
  r = subprocess.run([sys.executable, "-m", "cvaa_jax.evaluate", f"--workdir={other}",
                      f"--out={tmp_path / 'eval'}"], cwd=ROOT, capture_output=True, text=True,
                     timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
  err = [line for line in r.stderr.strip().splitlines() if not line.startswith(("W", "I"))]
  assert r.returncode == 2 and len(err) == 1 and "does not match the model" in err[0], r.stderr


def test_reading_a_run_takes_latest_without_best_and_leaves_unfinished_writes(workdir, tmp_path):
  """A run without a validation split (configs/real64.py) has an empty best/: the default
  --which=best falls back to the latest checkpoint and says so (it used to fail with 'no
  checkpoint; train first'). Reading a workdir while a training writes to it must not delete
  that training's checkpoint in flight (an unfinished, temporary step folder): a writer's start
  does, a reader's must not."""
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  assert (run / "best").is_dir() and not any((run / "best").iterdir())  # as real64 leaves it
  in_flight = run / "checkpoints" / "7.orbax-checkpoint-tmp"
  shutil.copytree(run / "checkpoints" / "1", in_flight)
  rec = reconstruct.Reconstructor(run)  # which="best"
  assert "latest checkpoint, step 1" in rec.model
  name, step, *_ = evaluate.evaluate_run(run, "best", "test", (0.0, 2500.0))
  assert step == 1
  assert in_flight.is_dir(), "a reader deleted a checkpoint write in flight"
  import time
  writer = checkpoint.Checkpointer(run, keep=1)  # a training's start cleans it up (in the
  for _ in range(100):                            # background)
    if not in_flight.exists():
      break
    time.sleep(0.05)
  writer.close()
  assert not in_flight.exists()


def test_evaluator_puts_runs_in_one_table_and_figure(workdir, tmp_path):
  second = tmp_path / "second_run"
  shutil.copytree(workdir, second)
  rows = evaluate.run_report([workdir, second], tmp_path / "report", which="latest",
                             split="test")
  assert len(rows) == 2
  for s in rows.values():
    assert {"mae", "psnr", "ssim", "x2ct/psnr_3d", "x2ct/ssim_avg", "bone/dice"} <= set(s)
  md = (tmp_path / "report" / "summary.md").read_text()
  assert "X2CT-GAN's conventions" in md and md.count("cvaa_gan-cvaa") >= 2
  assert (tmp_path / "report" / "figure.png").stat().st_size > 1000
  assert (tmp_path / "report" / f"{second.name}_cases.csv").exists()


def _write_dicom_dx(path, pixels, photometric):
  import pydicom  # pylint: disable=g-import-not-at-top
  from pydicom.dataset import FileDataset, FileMetaDataset  # pylint: disable=g-import-not-at-top
  from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # pylint: disable=g-import-not-at-top
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
  meta.MediaStorageSOPInstanceUID = generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
  ds.Modality = "DX"
  ds.Rows, ds.Columns = pixels.shape
  ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
  ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
  ds.RescaleSlope, ds.RescaleIntercept = 2.0, 10.0
  ds.PixelData = pixels.astype(np.uint16).tobytes()
  pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
  return path


def test_dicom_radiographs_are_rescaled_and_monochrome1_inverted(tmp_path):
  pixels = np.tile(np.arange(32, dtype=np.uint16)[None, :] * 100, (24, 1))
  m2 = xray_io.read_xray(_write_dicom_dx(tmp_path / "a.dcm", pixels, "MONOCHROME2"))
  np.testing.assert_allclose(m2, pixels * 2.0 + 10.0)
  m1 = xray_io.read_xray(_write_dicom_dx(tmp_path / "b.dcm", pixels, "MONOCHROME1"))
  np.testing.assert_allclose(m1, m2.max() - m2)  # bright = dense after inversion
  model_in = xray_io.to_model_input(m2, 16)
  assert model_in.shape == (16, 16) and model_in.min() == 0.0 and model_in.max() == 1.0
