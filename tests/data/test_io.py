"""Loading real scans into HU with correct geometry, writing NIfTI, and clear errors on bad input."""

import gzip
import pathlib

import nibabel as nib
import numpy as np
import pytest

from cvaa_jax.data import io
from cvaa_jax.data.volume import Volume
from cvaa_jax.errors import InputError
from tests.conftest import BUNDLED_CT

# file, axcodes, spacing, (min HU, max HU) as the data README states them.
SCANS = [
    ("abdomen_totalseg.nii.gz", ("R", "A", "S"), (3, 3, 3), (-1207, 3382)),
    ("abdomen_totalseg_slab.nii.gz", ("R", "A", "S"), (3, 3, 3), (-1100, 1207)),
    ("chest_lidc.nii.gz", ("L", "A", "S"), (0.703125, 0.703125, 2.5), (-2048, 3071)),
    ("chest_rtplan.nii.gz", ("L", "P", "S"), (0.9765625, 0.9765625, 2.0), (-1024, 2976)),
]


@pytest.mark.parametrize("name,axcodes,spacing,hu", SCANS)
def test_nifti_scans_load_in_hu_with_nibabels_geometry(shared_ct, name, axcodes, spacing, hu):
  vol = io.load_ct(shared_ct / name)
  ref = nib.load(str(shared_ct / name))
  assert vol.shape == ref.shape
  np.testing.assert_array_equal(vol.affine, ref.affine)
  assert vol.axcodes == axcodes
  np.testing.assert_allclose(vol.spacing, spacing, rtol=1e-6)
  assert vol.array.dtype == np.float32
  np.testing.assert_allclose([vol.array.min(), vol.array.max()], hu)
  np.testing.assert_array_equal(vol.array, np.asarray(ref.get_fdata(), np.float32))


def test_bundled_scan_is_the_shared_one(shared_ct):
  assert BUNDLED_CT.read_bytes() == (shared_ct / "abdomen_totalseg.nii.gz").read_bytes()
  assert (BUNDLED_CT.parent / "LICENSE-Apache-2.0.txt").exists()


def test_dicom_series_sorted_rescaled_and_in_ras(shared_ct):
  vol = io.load_ct(shared_ct / "abdomen_slab_dicom")
  assert vol.shape == (512, 512, 20)
  assert vol.axcodes == ("L", "P", "S")  # DICOM's LPS array order, expressed in RAS world
  np.testing.assert_allclose(vol.spacing, (0.9765625, 0.9765625, 2.0), rtol=1e-6)
  np.testing.assert_allclose([vol.array.min(), vol.array.max()], (-1024, 1839))
  # First voxel sits at the first slice's ImagePositionPatient (LPS -> RAS flips x and y).
  import pydicom
  positions = sorted(
      np.asarray(pydicom.dcmread(str(f), stop_before_pixels=True).ImagePositionPatient, float)[2]
      for f in (shared_ct / "abdomen_slab_dicom").iterdir())
  first = pydicom.dcmread(str(next(iter(sorted((shared_ct / "abdomen_slab_dicom").iterdir())))),
                          stop_before_pixels=True)
  x, y, _ = np.asarray(first.ImagePositionPatient, float)
  np.testing.assert_allclose(vol.affine[:3, 3], (-x, -y, positions[0]))
  np.testing.assert_allclose(vol.affine[2, 2], positions[1] - positions[0])


def test_save_then_load_round_trips_array_and_affine(tmp_path):
  rng = np.random.default_rng(0)
  c, s = np.cos(0.3), np.sin(0.3)  # an oblique (gantry-tilted) LPS-like scan: rotation x spacing
  affine = np.eye(4)
  affine[:3, :3] = np.array([[-c, -s, 0], [s, -c, 0], [0, 0, 1]]) @ np.diag([0.8, 0.8, 2.5])
  affine[:3, 3] = (120, -80, 33)
  arr = rng.uniform(-1000, 3000, size=(9, 7, 5)).astype(np.float32)
  arr[0, 0, 0] = -1024
  path = io.save_nifti(Volume(arr, affine), tmp_path / "out" / "x.nii.gz")
  back = io.load_ct(path)
  np.testing.assert_array_equal(back.array, arr)
  np.testing.assert_allclose(back.affine, affine, atol=1e-5)
  img = nib.load(str(path))
  np.testing.assert_allclose(img.get_qform(), affine, atol=1e-5)
  assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
  assert not list(tmp_path.glob("out/*.partial*"))


def _write(tmp_path, arr, name="bad.nii.gz", affine=np.eye(4)):
  path = tmp_path / name
  nib.save(nib.Nifti1Image(arr, affine), str(path))
  return path


def _ct_like(shape=(8, 8, 8)):
  a = np.full(shape, -1000.0, np.float32)
  a[2:-2, 2:-2, 2:-2] = 40.0
  return a


@pytest.mark.parametrize("case,match", [
    ("missing", "no such file"),
    ("empty", "empty"),
    ("truncated", "corrupt or truncated"),
    ("garbage", "corrupt or truncated"),
    ("2d", "expected a 3D CT volume"),
    ("4d", "expected a 3D CT volume"),
    ("nan", "NaN"),
    ("constant", "constant"),
    ("spacing", "spacing"),
    ("not_hu", "Hounsfield"),
    ("format", "unknown CT format"),
    ("empty_dir", "empty"),
    ("not_dicom_dir", "no DICOM"),
])
def test_bad_input_names_the_file_and_the_fix(tmp_path, case, match):
  if case == "missing":
    path = tmp_path / "nope.nii.gz"
  elif case == "empty":
    path = tmp_path / "e.nii.gz"
    path.write_bytes(b"")
  elif case == "truncated":
    good = _write(tmp_path, _ct_like((32, 32, 32)), "good.nii.gz")
    path = tmp_path / "t.nii.gz"
    path.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
  elif case == "garbage":
    path = tmp_path / "g.nii.gz"
    path.write_bytes(gzip.compress(b"this is not nifti" * 50))
  elif case == "2d":
    path = _write(tmp_path, np.zeros((8, 8), np.float32))
  elif case == "4d":
    path = _write(tmp_path, np.zeros((8, 8, 8, 2), np.float32))
  elif case == "nan":
    a = _ct_like()
    a[3, 3, 3] = np.nan
    path = _write(tmp_path, a)
  elif case == "constant":
    path = _write(tmp_path, np.full((8, 8, 8), 5.0, np.float32))
  elif case == "spacing":
    path = _write(tmp_path, _ct_like(), affine=np.diag([1.0, 1.0, 500.0, 1.0]))
  elif case == "not_hu":
    path = _write(tmp_path, _ct_like() / 4096 + 0.25)  # [0, 1]-normalised data
  elif case == "format":
    path = tmp_path / "scan.mha"
    path.write_bytes(b"x")
  elif case == "empty_dir":
    path = tmp_path / "series"
    path.mkdir()
  elif case == "not_dicom_dir":
    path = tmp_path / "series"
    path.mkdir()
    (path / "notes.txt").write_text("hello")
  with pytest.raises(InputError, match=match) as info:
    io.load_ct(path)
  assert str(path) in str(info.value)


def test_4d_with_single_volume_is_accepted(tmp_path):
  path = _write(tmp_path, _ct_like()[..., None], "one.nii.gz")
  assert io.load_ct(path).shape == (8, 8, 8)


def test_save_to_unwritable_place_is_a_clear_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(InputError, match="cannot create the output folder"):
    io.save_nifti(Volume(_ct_like(), np.eye(4)), blocker / "sub" / "x.nii.gz")


def _header_case(tmp_path, case):
  """NIfTI files nibabel reads without an error but that must be refused."""
  arr = _ct_like()
  img = nib.Nifti1Image(arr, np.diag([2.0, 2.0, 3.0, 1.0]))
  img.set_qform(img.affine, code=1)
  if case == "pixdim_zero":
    img.header["pixdim"][1:4] = [2.0, 0.0, 3.0]
  elif case == "pixdim_negative":
    img.header["pixdim"][1:4] = [2.0, -2.0, 3.0]
  elif case == "no_orientation":
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
  elif case == "rgb":
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    img = nib.Nifti1Image(rgb, np.eye(4))
  elif case == "huge":
    img.header.set_data_shape((30000, 30000, 3000))
  path = tmp_path / ("x.nii" if case == "huge" else "x.nii.gz")
  nib.save(img, str(path)) if case != "huge" else path.write_bytes(
      img.header.binaryblock + b"\0" * 4 + arr.tobytes())
  return path


@pytest.mark.parametrize("case,match", [
    ("pixdim_zero", "pixdim"), ("pixdim_negative", "pixdim"),
    ("no_orientation", "no orientation in the header"), ("rgb", "not a scalar"),
    ("huge", "header claims")])
def test_headers_nibabel_silently_fixes_are_refused(tmp_path, case, match):
  path = _header_case(tmp_path, case)
  with pytest.raises(InputError, match=match) as e:
    io.load_ct(path)
  assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_unoriented_nifti_reads_with_the_stated_axes(tmp_path):
  path = _header_case(tmp_path, "no_orientation")
  vol = io.load_ct(path, unoriented_axcodes="LPS")
  assert nib.aff2axcodes(vol.affine) == ("L", "P", "S")
  np.testing.assert_allclose(vol.spacing, [2.0, 2.0, 3.0])
  with pytest.raises(InputError, match="unoriented_axcodes"):
    io.load_ct(path, unoriented_axcodes="XYZ")
