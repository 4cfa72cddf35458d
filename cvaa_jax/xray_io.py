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

from cvaa_jax.errors import InputError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


def read_xray(path: str | pathlib.Path) -> np.ndarray:
  """A 2D float64 image, bright = high attenuation (MONOCHROME1 inverted)."""
  path = pathlib.Path(path)
  if not path.exists():
    raise InputError(f"{path}: X-ray not found; check the path.")
  if path.is_file() and path.stat().st_size == 0:
    raise InputError(f"{path}: the file is empty; re-export the radiograph.")
  name = path.name.lower()
  try:
    if name.endswith(IMAGE_SUFFIXES):
      from PIL import Image  # pylint: disable=g-import-not-at-top
      with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA", "P", "LA", "CMYK"):
          im = im.convert("L")
        img = np.asarray(im, dtype=np.float64)
    elif name.endswith((".nii", ".nii.gz")):
      import nibabel as nib  # pylint: disable=g-import-not-at-top
      img = np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)
      img = np.squeeze(img)
      if img.ndim == 2:
        img = img.T[::-1]  # NIfTI (i right, j up) -> image rows top-down
    else:
      import pydicom  # pylint: disable=g-import-not-at-top
      ds = pydicom.dcmread(str(path))
      img = ds.pixel_array.astype(np.float64)
      img = img * float(getattr(ds, "RescaleSlope", 1.0)) + float(getattr(ds, "RescaleIntercept", 0))
      if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        img = img.max() - img
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
  return img


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
  fr, la = pick(("frontal", "ap")), pick(("lateral", "lat"))
  if len(fr) != 1 or len(la) != 1:
    raise InputError(f"{case_dir}: needs exactly one 'frontal*'/'ap*' and one 'lateral*'/'lat*' "
                     f"image, found {len(fr)} and {len(la)}.")
  return fr[0], la[0]
