"""Reading radiographs (PNG/TIFF/JPEG, DICOM DX/CR, 2D NIfTI) and bringing them to the model's input
domain: a square (S, S) image in [0, 1] where bright means high attenuation, like the DRRs it was
trained on.

How far this goes (README, "Real radiographs"): the image is converted to the line-integral domain
(displayed radiographs already are, up to a monotone display curve; raw detector intensities are
log-transformed), MONOCHROME1 DICOMs are inverted, and intensities are matched to the training
DRRs by the same per-image percentile scaling (`drr.normalize_projection`). Scatter, beam hardening,
the display LUT's non-linearity, collimation and grids are not modelled.
"""

from __future__ import annotations

import pathlib

import numpy as np
from scipy import ndimage

from cvaa_jax.acquisition import VIEW_POSITIONS
from cvaa_jax.errors import InputError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


def read_xray(path: str | pathlib.Path) -> np.ndarray:
  """A 2D float64 image, bright = high attenuation (MONOCHROME1 inverted)."""
  return read_xray_meta(path)[0]


def _letter(vec: np.ndarray) -> str:
  """The patient direction (R/L/A/P/H/F) a RAS vector mostly points to."""
  axis = int(np.argmax(np.abs(vec)))
  return ("R", "A", "H")[axis] if vec[axis] > 0 else ("L", "P", "F")[axis]


def _dicom_meta(ds, path) -> dict:
  """Acquisition values a DX/CR header carries: field -> (value, where it came from)."""
  meta: dict = {}

  def number(keyword, tag):
    if keyword not in ds or ds.data_element(keyword).value in (None, ""):
      return None
    try:
      value = float(ds.data_element(keyword).value)
    except (TypeError, ValueError):
      raise InputError(f"{path}: DICOM {keyword} {tag} is {ds.data_element(keyword).value!r}, not a "
                       "number; fix the header or give the value as a flag.") from None
    if not np.isfinite(value) or value <= 0:
      raise InputError(f"{path}: DICOM {keyword} {tag} is {value!r}; it must be a positive "
                       "distance: fix the header or give the value as a flag.")
    return value

  sdd = number("DistanceSourceToDetector", "(0018,1110)")
  sid = number("DistanceSourceToPatient", "(0018,1111)")
  if sdd is not None:
    meta["sdd"] = (sdd, "tag DistanceSourceToDetector (0018,1110)")
  if sid is not None:
    meta["sid"] = (sid, "tag DistanceSourceToPatient (0018,1111)")
  for keyword, tag in (("ImagerPixelSpacing", "(0018,1164)"), ("PixelSpacing", "(0028,0030)")):
    if keyword in ds and ds.data_element(keyword).value not in (None, ""):
      vals = [float(v) for v in ds.data_element(keyword).value]
      if len(vals) != 2 or not all(np.isfinite(v) and v > 0 for v in vals):
        raise InputError(f"{path}: DICOM {keyword} {tag} is {vals}; it must be two positive pitches "
                         "(row, column) in mm: fix the header or give --<view>_pixel_mm.")
      meta["pixel_mm"] = (tuple(vals), f"tag {keyword} {tag}")
      if keyword == "ImagerPixelSpacing":  # defined at the detector's front face
        meta["pixel_at"] = ("detector", f"tag {keyword} {tag} (the detector's pitch)")
      break
  if "ViewPosition" in ds and str(ds.ViewPosition).strip():
    vp = str(ds.ViewPosition).strip().upper()
    if vp in VIEW_POSITIONS:
      meta["side"] = (VIEW_POSITIONS[vp], f"tag ViewPosition (0018,5101) = {vp}")
    else:
      meta["side_unknown"] = (vp, f"ViewPosition (0018,5101) = {vp!r}")
  if "PatientOrientation" in ds and ds.PatientOrientation:
    po = list(ds.PatientOrientation) if not isinstance(ds.PatientOrientation, str) \
        else str(ds.PatientOrientation).split("\\")
    if len(po) == 2 and all(str(x).strip() for x in po):
      shown = "\\".join(map(str, po))
      meta["orientation"] = (tuple(str(x).strip() for x in po),
                             f"tag PatientOrientation (0020,0020) = {shown}")
  return meta


def _nifti_meta(img, path) -> dict:
  """Pitch and orientation of a 2-D NIfTI from its affine, the detector plane's world position,
  and beam/SID/SDD where this project's exporter wrote them into the description."""
  meta: dict = {}
  hdr = img.header
  codes = (int(hdr["sform_code"]), int(hdr["qform_code"]))
  if codes == (0, 0):
    return meta  # no orientation in the header: nothing to trust beyond the pixels
  aff = np.asarray(img.affine, np.float64)
  col_vec, row_vec = aff[:3, 0], aff[:3, 1]  # i (columns) and j (rows) of the stored image
  pitch = (float(np.linalg.norm(row_vec)), float(np.linalg.norm(col_vec)))
  if not all(np.isfinite(p) and p > 0 for p in pitch):
    raise InputError(f"{path}: the NIfTI affine gives pixel pitch {pitch}; fix the header's pixdim.")
  meta["pixel_mm"] = (pitch, "NIfTI affine (pixel pitch)")
  meta["orientation"] = ((_letter(col_vec), _letter(row_vec)), "NIfTI affine (orientation)")
  shape = img.shape[:2]
  centre = aff @ np.array([(shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0, 0.0, 1.0])
  meta["detector"] = {"center": centre[:3], "normal": np.cross(col_vec, row_vec)}
  descrip = hdr["descrip"].tobytes().split(b"\0")[0].decode("ascii", "replace")
  if descrip.startswith("cvaa_jax"):
    for item in descrip.split()[1:]:
      key, _, value = item.partition("=")
      if key in ("beam", "sid", "sdd", "side"):
        meta[key] = (value if key in ("beam", "side") else float(value), "NIfTI description")
  return meta


def read_xray_meta(path: str | pathlib.Path) -> tuple[np.ndarray, dict]:
  """A 2D float64 image (bright = high attenuation, rows top-down as stored) and the acquisition
  values the file carries (field -> (value, source); 'detector' for a located 2-D NIfTI)."""
  path = pathlib.Path(path)
  if not path.exists():
    raise InputError(f"{path}: X-ray not found; check the path.")
  if path.is_dir():
    raise InputError(f"{path}: is a folder; give one radiograph file.")
  if path.stat().st_size == 0:
    raise InputError(f"{path}: the file is empty; re-export the radiograph.")
  name = path.name.lower()
  meta: dict = {}
  try:
    if name.endswith(IMAGE_SUFFIXES):
      from PIL import Image  # pylint: disable=g-import-not-at-top
      with Image.open(path) as im:
        if getattr(im, "n_frames", 1) > 1:
          raise InputError(f"{path}: holds {im.n_frames} pages/frames; give one radiograph per file.")
        if im.mode in ("RGB", "RGBA", "P", "LA", "CMYK"):
          im = im.convert("L")
        img = np.asarray(im, dtype=np.float64)
    elif name.endswith((".nii", ".nii.gz")):
      import nibabel as nib  # pylint: disable=g-import-not-at-top
      nii = nib.load(str(path))
      if len(nii.shape) > 2 and int(np.prod(nii.shape[2:])) != 1:
        raise InputError(f"{path}: expected a 2D radiograph, got a NIfTI of shape {nii.shape}.")
      data = np.asarray(nii.dataobj)
      if data.dtype.names or not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{path}: NIfTI data type {data.dtype} is not a grey-level image; export "
                         "the radiograph as one scalar channel.")
      data = np.asarray(data, dtype=np.float64).reshape(nii.shape[:2])
      meta = _nifti_meta(nii, path)
      # Stored (i, j) -> image [row = j, col = i]; with no header orientation, the old convention
      # (j pointing up) is kept and the orientation falls back to the default.
      img = data.T if meta else data.T[::-1]
    else:
      import pydicom  # pylint: disable=g-import-not-at-top
      ds = pydicom.dcmread(str(path))
      if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise InputError(f"{path}: a multi-frame DICOM ({ds.NumberOfFrames} frames); give one "
                         "radiograph per file.")
      img = ds.pixel_array.astype(np.float64)
      img = img * float(getattr(ds, "RescaleSlope", 1.0)) + float(getattr(ds, "RescaleIntercept", 0))
      if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        img = img.max() - img
      meta = _dicom_meta(ds, path)
  except InputError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise InputError(f"{path}: cannot read the radiograph ({type(e).__name__}: {e}); give a "
                     "PNG/TIFF/JPEG, a DICOM (DX/CR) or a 2D NIfTI file.") from None
  img = np.squeeze(img)
  if img.ndim != 2:
    raise InputError(f"{path}: expected a 2D radiograph, got shape {img.shape}.")
  if min(img.shape) < 16:
    raise InputError(f"{path}: image {img.shape} is too small (need at least 16 x 16 pixels).")
  if not np.all(np.isfinite(img)):
    raise InputError(f"{path}: the image holds NaN or infinite pixels.")
  if np.ptp(img) <= 0:
    raise InputError(f"{path}: the image is constant; it holds no radiograph.")
  return img, meta


def to_line_integral(img: np.ndarray, domain: str = "display") -> np.ndarray:
  """'display' images (bright = dense) are used as they are; 'intensity' ones get -log."""
  if domain not in ("display", "intensity"):
    raise InputError(f"X-ray domain must be 'display' or 'intensity', got {domain!r}.")
  if domain == "intensity":
    return -np.log(np.maximum(img, 1e-6) / max(float(img.max()), 1e-6))
  return img


def normalize(img: np.ndarray) -> np.ndarray:
  """Per-image percentile scaling to [0, 1], as the training DRRs (`drr.normalize_projection`)."""
  lo, hi = np.percentile(img, 0.0), np.percentile(img, 99.5)
  return np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def to_model_input(img: np.ndarray, size: int, domain: str = "display") -> np.ndarray:
  """Centre-crops to a square, resizes to (size, size) (anti-aliased), converts to the line-integral
  domain and scales to [0, 1] like the training DRRs.

  domain: 'display' (bright = dense, e.g. a PACS export; used as is) or 'intensity' (raw detector
  signal, bright = air; -log applied).
  """
  if domain not in ("display", "intensity"):
    raise InputError(f"X-ray domain must be 'display' or 'intensity', got {domain!r}.")
  h, w = img.shape
  s = min(h, w)
  img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
  if domain == "intensity":
    img = -np.log(np.maximum(img, 1e-6) / max(float(img.max()), 1e-6))
  factor = size / s
  if factor < 1:
    img = ndimage.gaussian_filter(img, sigma=max(0.0, (1 / factor - 1) / 2))
  img = ndimage.zoom(img, factor, order=1, mode="nearest")[:size, :size]
  lo, hi = np.percentile(img, 0.0), np.percentile(img, 99.5)
  return np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def check_pair(frontal: np.ndarray, lateral: np.ndarray, frontal_path, lateral_path) -> None:
  """The two views should be of one exam: similar shapes (both square-ish or both portrait)."""
  ra = frontal.shape[0] / frontal.shape[1]
  rb = lateral.shape[0] / lateral.shape[1]
  if max(ra, rb) / min(ra, rb) > 1.5:
    raise InputError(f"{frontal_path} ({frontal.shape}) and {lateral_path} ({lateral.shape}): "
                     "aspect ratios differ by more than 1.5x; are these views of one exam?")


def find_pair(case_dir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """The one 'frontal*'/'ap*' and one 'lateral*'/'lat*' image of a case folder."""
  case_dir = pathlib.Path(case_dir)
  files = [p for p in case_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
  pick = lambda prefixes: [p for p in files if p.name.lower().startswith(prefixes)]
  fr, la = pick(("frontal", "ap", "pa")), pick(("lateral", "lat"))
  if len(fr) != 1 or len(la) != 1:
    raise InputError(f"{case_dir}: needs exactly one 'frontal*'/'ap*'/'pa*' and one 'lateral*'/'lat*' "
                     f"image, found {len(fr)} and {len(la)}.")
  return fr[0], la[0]


# --- Writing radiographs (make_example, tests, users exporting DRRs) -------------------------------


def to_uint16(img: np.ndarray) -> np.ndarray:
  """A line-integral image scaled to the full 16-bit range (bright = dense)."""
  img = np.asarray(img, np.float64)
  return np.round((img - img.min()) / max(float(np.ptp(img)), 1e-12) * 65535).astype(np.uint16)


def write_png16(path: str | pathlib.Path, pixels: np.ndarray) -> pathlib.Path:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  Image.fromarray(np.asarray(pixels, np.uint16)).save(path)
  return path


def write_dicom_dx(path: str | pathlib.Path, pixels: np.ndarray, *, view_position: str,
                   orientation: tuple[str, str], pixel_mm: tuple[float, float] | None,
                   sid: float | None, sdd: float | None) -> pathlib.Path:
  """A DX 'for presentation' file (MONOCHROME2, 16-bit) carrying the acquisition tags the reader
  uses: ViewPosition, PatientOrientation, ImagerPixelSpacing, DistanceSourceToPatient/Detector."""
  import pydicom  # pylint: disable=g-import-not-at-top
  from pydicom.dataset import FileDataset, FileMetaDataset  # pylint: disable=g-import-not-at-top
  from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
  meta.MediaStorageSOPInstanceUID = generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
  ds.SOPClassUID = meta.MediaStorageSOPClassUID
  ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  ds.Modality = "DX"
  ds.PatientName = "cvaa_jax^example"
  ds.ViewPosition = view_position
  ds.PatientOrientation = list(orientation)
  if pixel_mm is not None:
    ds.ImagerPixelSpacing = [f"{p:.6g}" for p in pixel_mm]
  if sid is not None:
    ds.DistanceSourceToPatient = f"{sid:.6g}"
  if sdd is not None:
    ds.DistanceSourceToDetector = f"{sdd:.6g}"
  pixels = np.asarray(pixels, np.uint16)
  ds.Rows, ds.Columns = pixels.shape
  ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
  ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
  ds.RescaleSlope, ds.RescaleIntercept = 1.0, 0.0
  ds.PixelData = pixels.tobytes()
  pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
  return path


def write_nifti2d(path: str | pathlib.Path, pixels: np.ndarray, geometry, beam: str | None = None,
                  sid: float | None = None, side: str | None = None) -> pathlib.Path:
  """A 2-D NIfTI whose affine puts every detector pixel where it is in patient space (RAS mm):
  stored (i, j) = image (col, row), columns along geometry.u, rows along geometry.v. Beam, SID, SDD
  and side go into the header's description, which `read_xray_meta` reads back."""
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  pixels = np.asarray(pixels)
  rows, cols = pixels.shape
  u, v = (np.asarray(x, np.float64) for x in (geometry.u, geometry.v))
  pr, pc = (float(x) for x in np.asarray(geometry.pixel_size))
  dc = np.asarray(geometry.detector_center, np.float64)
  aff = np.eye(4)
  aff[:3, 0], aff[:3, 1] = u * pc, v * pr
  aff[:3, 2] = np.cross(u, v)
  aff[:3, 3] = dc - (rows - 1) / 2.0 * pr * v - (cols - 1) / 2.0 * pc * u
  img = nib.Nifti1Image(pixels.T[..., None].copy(), aff)
  img.set_sform(aff, code=1)
  img.set_qform(aff, code=1)
  img.header.set_xyzt_units("mm")
  if beam is not None:
    sdd = float(np.linalg.norm(dc - np.asarray(geometry.source, np.float64)))
    parts = [f"beam={beam}"]
    if beam == "cone":
      parts.append(f"sdd={sdd:.6g}")
      if sid is not None:
        parts.append(f"sid={sid:.6g}")
    if side:
      parts.append(f"side={side}")
    img.header["descrip"] = ("cvaa_jax " + " ".join(parts)).encode()[:79]
  nib.save(img, str(path))
  return path
