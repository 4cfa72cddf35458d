"""Reading CT volumes (NIfTI, DICOM series) into Hounsfield units, and writing NIfTI.

Every failure caused by the file itself is raised as `InputError` naming the file and the fix; a
caller never sees a traceback from nibabel, pydicom or zlib.
"""

from __future__ import annotations

import os
import pathlib
import threading
import zlib
from typing import Any

import nibabel as nib
import numpy as np

from cvaa_jax.data.volume import Volume
from cvaa_jax.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Plausibility limits for a CT scan; outside them the data is almost surely not a CT in HU.
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0
AIR_HU_BELOW = -500.0  # a CT of a body always contains air below this.
TISSUE_HU_ABOVE = -200.0  # ... and tissue above this.

PathLike = str | os.PathLike


def is_nifti(path: PathLike) -> bool:
  return str(path).lower().endswith(NIFTI_SUFFIXES)


def load_ct(path: PathLike, check_hu: bool = True, unoriented_axcodes: str = "") -> Volume:
  """Loads a NIfTI file or a folder holding one DICOM series as a float32 HU `Volume`.

  Args:
    path: a `.nii`/`.nii.gz` file, or a folder of DICOM slices of one series.
    check_hu: reject volumes whose intensities do not look like Hounsfield units.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise InputError(f"{path}: no such file or folder; check the path (config.data.ct_dir for "
                     "training data).")
  if path.is_dir():
    vol = load_dicom_series(path)
  elif is_nifti(path):
    vol = load_nifti(path, unoriented_axcodes)
  else:
    raise InputError(f"{path}: unknown CT format; give a .nii/.nii.gz file or a folder holding a "
                     "DICOM series.")
  check_volume(vol, check_hu=check_hu)
  return vol


MAX_VOXELS = 2 ** 31  # 8 GiB as float32: far beyond any CT; a header claiming more is corrupt


def _raw_header(path: pathlib.Path):
  """The header as stored: nibabel's loader 'fixes' some fields (pixdim 0 -> 1) before we see them."""
  import gzip  # pylint: disable=g-import-not-at-top
  try:
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    with opener(path, "rb") as f:
      block = f.read(348)
    return nib.Nifti1Header(binaryblock=block, check=False) if len(block) == 348 else None
  except (OSError, EOFError, ValueError, zlib.error):
    return None


def check_nifti_header(img, path: pathlib.Path, unoriented_axcodes: str = "") -> np.ndarray:
  """What nibabel reads without complaint but must not be used, checked before any voxel is read:
  non-scalar data, absurd dimensions, zero/negative pixdim (nibabel silently takes 1), and no
  orientation (qform and sform codes 0: nibabel returns a guessed affine). Returns the affine."""
  hdr = _raw_header(path) or img.header
  dtype = hdr.get_data_dtype()
  if dtype.names or dtype.kind not in "biuf":
    raise InputError(f"{path}: NIfTI data type {dtype} is not a scalar CT intensity (RGB or "
                     "complex data); export the CT as one grey-level volume in HU.")
  shape = tuple(int(s) for s in img.shape)
  if any(s <= 0 for s in shape) or int(np.prod(shape, dtype=np.float64)) > MAX_VOXELS:
    raise InputError(f"{path}: the header claims {'x'.join(map(str, shape))} voxels, which no CT "
                     "has; the header is corrupt: re-export the scan.")
  if path.suffix == ".nii":  # uncompressed: the data must fit in the file
    need = int(hdr["vox_offset"]) + int(np.prod(shape)) * dtype.itemsize
    if path.stat().st_size < need:
      raise InputError(f"{path}: the file holds {path.stat().st_size} bytes but its header needs "
                       f"{need}; it is truncated: re-export or re-download it.")
  pixdim = np.asarray(hdr["pixdim"][1:4], np.float64)
  if np.any(~np.isfinite(pixdim)) or np.any(pixdim <= 0):
    raise InputError(f"{path}: pixdim (voxel size) is {pixdim.tolist()}: zero, negative or "
                     "missing voxel sizes; re-export with voxel sizes (nibabel would silently use "
                     "1 mm).")
  codes = (int(hdr["sform_code"]), int(hdr["qform_code"]))
  if codes == (0, 0):
    if not unoriented_axcodes:
      raise InputError(f"{path}: no orientation in the header (qform/sform codes 0); re-export "
                       "with orientation, or set config.data.unoriented_axcodes (e.g. 'LPS') to "
                       "state it.")
    try:
      ornt = nib.orientations.axcodes2ornt(tuple(unoriented_axcodes.upper()))
    except Exception:  # pylint: disable=broad-except
      ornt = None
    if ornt is None or len(unoriented_axcodes) != 3 or np.isnan(ornt).any():
      raise InputError(f"config.data.unoriented_axcodes: {unoriented_axcodes!r} is not three axis "
                       "codes such as 'RAS' or 'LPS'.")
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for i, (axis, flip) in enumerate(ornt):
      affine[int(axis), i] = flip * pixdim[i]
    return affine
  return np.asarray(img.affine, np.float64)


def load_nifti(path: PathLike, unoriented_axcodes: str = "") -> Volume:
  """Reads a 3D NIfTI file (a 4D one with a single volume is squeezed) into HU.

  unoriented_axcodes: for files without orientation (qform and sform codes 0), the axis codes the
  user states they have (e.g. 'LPS'); without it such files are rejected.
  """
  path = pathlib.Path(path)
  if path.stat().st_size == 0:
    raise InputError(f"{path}: the file is empty (0 bytes); re-export or re-download it.")
  try:
    img = nib.load(str(path))
  except (nib.filebasedimages.ImageFileError, EOFError, OSError, zlib.error, ValueError) as e:
    raise InputError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e}); the file is "
                     "corrupt or truncated: re-export it.") from None
  header_affine = check_nifti_header(img, path, unoriented_axcodes)
  try:
    array = np.asarray(img.dataobj, dtype=np.float32)  # applies scl_slope / scl_inter
  except (EOFError, OSError, zlib.error, ValueError, MemoryError) as e:
    raise InputError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e}); the file is "
                     "corrupt or truncated: re-export it.") from None
  if array.ndim == 4 and array.shape[3] == 1:
    array = array[..., 0]
  if array.ndim != 3:
    raise InputError(f"{path}: expected a 3D CT volume, got a {array.ndim}D image of shape "
                     f"{array.shape}; give one 3D volume per file.")
  affine = header_affine
  if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
    raise InputError(f"{path}: the NIfTI header has no valid voxel-to-world affine; fix the "
                     "header (sform/qform) before use.")
  return Volume(array, affine, source=str(path),
                history=({"op": "load_nifti", "path": str(path), "shape": list(array.shape)},))


def _read_dicom_slices(folder: pathlib.Path) -> list[Any]:
  import pydicom  # pylint: disable=g-import-not-at-top
  files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
  if not files:
    raise InputError(f"{folder}: the folder is empty; it should hold the DICOM slices of one series.")
  slices = []
  for f in files:
    try:
      ds = pydicom.dcmread(str(f), force=False)
    except Exception:  # pylint: disable=broad-except
      continue  # not DICOM (e.g. a README or DICOMDIR companion): skip it.
    if "PixelData" in ds and "ImagePositionPatient" in ds:
      slices.append(ds)
  if not slices:
    raise InputError(f"{folder}: holds no DICOM image slices with ImagePositionPatient; give a "
                     "folder with the slices of one CT series.")
  return slices


def load_dicom_series(folder: PathLike) -> Volume:
  """Reads one DICOM series (a folder of slices) into a HU `Volume` with a RAS+ affine.

  Slices are ordered by their position along the slice normal (UIDs may be missing), and each slice's
  RescaleSlope/RescaleIntercept is applied.
  """
  folder = pathlib.Path(folder)
  slices = _read_dicom_slices(folder)
  orient = np.asarray(slices[0].ImageOrientationPatient, dtype=np.float64)
  row_cos, col_cos = orient[:3], orient[3:]
  normal = np.cross(row_cos, col_cos)
  slices.sort(key=lambda s: float(np.dot(normal, np.asarray(s.ImagePositionPatient, float))))
  positions = np.array([np.asarray(s.ImagePositionPatient, float) for s in slices])
  for s in slices:
    if not np.allclose(np.asarray(s.ImageOrientationPatient, float), orient, atol=1e-4):
      raise InputError(f"{folder}: slices have different ImageOrientationPatient; the folder "
                       "mixes series: put one series per folder.")
  try:
    planes = []
    for s in slices:
      slope = float(getattr(s, "RescaleSlope", 1.0))
      intercept = float(getattr(s, "RescaleIntercept", 0.0))
      planes.append(s.pixel_array.astype(np.float32) * slope + intercept)
  except Exception as e:  # pylint: disable=broad-except
    raise InputError(f"{folder}: cannot decode DICOM pixel data ({type(e).__name__}: {e}); for "
                     "compressed series install a decoder (pip install pylibjpeg "
                     "pylibjpeg-openjpeg).") from None
  if len({p.shape for p in planes}) != 1:
    raise InputError(f"{folder}: slices have different sizes; the folder mixes series.")
  # pixel_array is (rows, cols); rows step along col_cos, columns along row_cos.
  array = np.stack(planes, axis=-1).transpose(1, 0, 2)  # (cols, rows, slices) = (i, j, k)
  dr, dc = (float(v) for v in slices[0].PixelSpacing)  # row spacing, column spacing
  if len(slices) > 1:
    steps = np.diff(positions @ normal)
    if np.any(steps <= 1e-6):
      raise InputError(f"{folder}: two slices share a position; the folder holds duplicate or "
                       "mixed series.")
    if steps.max() - steps.min() > 0.1 * np.median(steps):
      raise InputError(f"{folder}: slice spacing is irregular ({steps.min():.2f}..{steps.max():.2f}"
                       " mm): slices are missing; export the complete series.")
    slice_vec = (positions[-1] - positions[0]) / (len(slices) - 1)
  else:
    thickness = float(getattr(slices[0], "SliceThickness", 1.0) or 1.0)
    slice_vec = normal * thickness
  lps = np.eye(4)
  lps[:3, 0] = row_cos * dc
  lps[:3, 1] = col_cos * dr
  lps[:3, 2] = slice_vec
  lps[:3, 3] = positions[0]
  ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
  return Volume(array, ras, source=str(folder),
                history=({"op": "load_dicom_series", "path": str(folder), "slices": len(slices),
                          "shape": list(array.shape)},))


def check_volume(vol: Volume, check_hu: bool = True) -> None:
  """Rejects volumes no model should see: NaNs, constant values, absurd spacing, non-HU data."""
  a = vol.array
  if min(a.shape) < 2:
    raise InputError(f"{vol.source}: volume of shape {a.shape} is too thin to be a CT (needs at "
                     "least 2 voxels per axis).")
  n_bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
  if n_bad:
    raise InputError(f"{vol.source}: {n_bad} voxels are NaN or infinite; repair or re-export the "
                     "scan (e.g. replace NaN with -1000 HU).")
  lo, hi = float(a.min()), float(a.max())
  if hi - lo < 1e-6:
    raise InputError(f"{vol.source}: the volume is constant ({lo:g}); it holds no image.")
  sp = vol.spacing
  if np.any(sp < MIN_SPACING_MM) or np.any(sp > MAX_SPACING_MM):
    raise InputError(f"{vol.source}: voxel spacing {np.round(sp, 4).tolist()} mm is outside "
                     f"[{MIN_SPACING_MM}, {MAX_SPACING_MM}] mm; the header's pixdim/affine is wrong: "
                     "fix it.")
  if check_hu and not (lo < AIR_HU_BELOW and hi > TISSUE_HU_ABOVE):
    raise InputError(f"{vol.source}: intensities {lo:g}..{hi:g} do not look like Hounsfield units "
                     f"(a CT has air below {AIR_HU_BELOW:g} and tissue above {TISSUE_HU_ABOVE:g}); "
                     "convert it to HU (apply slope/intercept) or pass check_hu=False.")


def save_nifti(vol: Volume, path: PathLike, dtype: Any = np.float32) -> pathlib.Path:
  """Writes `vol` as NIfTI with both sform and qform set to its affine (3D Slicer reads either)."""
  path = pathlib.Path(path)
  if not is_nifti(path):
    raise InputError(f"{path}: output name must end in .nii or .nii.gz.")
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise InputError(f"{path.parent}: cannot create the output folder ({e}); choose a writable "
                     "path.") from None
  array = np.asarray(vol.array)
  if np.issubdtype(np.dtype(dtype), np.integer):
    info = np.iinfo(dtype)
    array = np.clip(np.rint(array), info.min, info.max)
  img = nib.Nifti1Image(array.astype(dtype), vol.affine)
  img.set_sform(vol.affine, code=1)  # scanner coordinates
  img.set_qform(vol.affine, code=1)
  img.header.set_xyzt_units("mm")
  tmp = path.with_name(path.name + ".partial" + "".join(path.suffixes[-2:]))
  try:
    nib.save(img, str(tmp))
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written result under `path`.
  except OSError as e:
    raise InputError(f"{path}: cannot write ({e}); choose a writable path.") from None
  return path


def _patterns(text: str) -> list[str]:
  return [p.strip() for p in str(text).split(",") if p.strip()]


def list_ct_files(folder: PathLike, glob: str = "", exclude: str = "") -> list[pathlib.Path]:
  """Lists the CT cases of a data folder.

  Default: its NIfTI files and sub-folders (each one DICOM series). `glob`: comma-separated
  patterns under `folder` for nested layouts (e.g. '*/ct.nii.gz', '**/*.nii.gz'); a matching folder
  is a DICOM series. `exclude`: comma-separated fnmatch patterns on the path relative to `folder`
  (e.g. '*seg*,*label*'), so segmentation and label files beside the scans are not read as CTs.
  Hidden entries are always skipped.
  """
  import fnmatch  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise InputError(f"{folder}: data folder not found; set config.data.ct_dir to a folder of "
                     ".nii/.nii.gz files or DICOM series folders.")
  if _patterns(glob):
    found = {p for pattern in _patterns(glob) for p in folder.glob(pattern)}
  else:
    found = set(folder.iterdir())
  skip = _patterns(exclude)
  cases = []
  for p in sorted(found):
    rel = p.relative_to(folder).as_posix()
    if any(part.startswith(".") for part in p.relative_to(folder).parts):
      continue
    if not (is_nifti(p) or p.is_dir()) or any(fnmatch.fnmatch(rel, x) for x in skip):
      continue
    cases.append(p)
  if not cases:
    what = f"files matching {glob!r}" if _patterns(glob) else ".nii/.nii.gz files or DICOM series"
    raise InputError(f"{folder}: holds no {what} (after excluding {exclude!r}); set "
                     "config.data.ct_glob / ct_exclude to match its layout.")
  return cases


def _stem(name: str) -> str:
  return name.replace(".nii.gz", "").replace(".nii", "")


def case_names(folder: PathLike, paths) -> list[str]:
  """Case ids for CT paths under `folder`: the file (or series folder) name without .nii[.gz] where
  those are unique ('sub-verse004_ct'); for layouts where every case has the same file name
  ('s0001/ct.nii.gz') the folders above it joined by '_' ('s0001'); else the whole relative path."""
  rels = [pathlib.Path(p).relative_to(folder) for p in paths]
  stems = [_stem(r.name) for r in rels]
  if len(set(stems)) == len(stems):
    return stems
  parents = ["_".join(r.parts[:-1]) for r in rels]
  if all(parents) and len(set(parents)) == len(parents):
    return parents
  return ["_".join(r.parts[:-1] + (_stem(r.name),)) for r in rels]


_NPY_LOCK = threading.Lock()


def load_npy(path: str, mmap: bool = False) -> np.ndarray:
  """np.load, one thread at a time: it parses each header with `ast.literal_eval`, and CPython 3.11
  (seen on 3.11.7) can fail with "AST constructor recursion depth mismatch" when two threads parse
  at once (Grain reads mixed streams from a thread pool). Header parsing is microseconds; the data
  itself is read (or mapped) outside the parse."""
  with _NPY_LOCK:
    arr = np.load(path, mmap_mode="r")
  return arr if mmap else np.array(arr)
