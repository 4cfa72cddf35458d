"""Reference CTs ("atlases") for 2D/3D registration, and the ones shipped with the package.

An atlas is a whole scan in HU, RAS, isotropic `spacing_mm`, cropped to its body box (plus a margin)
left-right and front-back and kept whole along the body axis, stored as int16. Its coordinates are
millimetres in the *atlas frame*: the origin is the body box's centre (x, y) and the middle of the
scan range (z). `fit.register` maps model-grid points (mm, isocentre frame) into this frame.

Atlases are built with `from_volume` (or `python -m cvaa_jax.fit.build_atlases`, which writes the
shipped set) and stored as compressed `.npz` files next to a LICENSES.md naming each one's source.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from cvaa_jax.data import transforms
from cvaa_jax.data.volume import Volume
from cvaa_jax.errors import InputError

SHIPPED_DIR = pathlib.Path(__file__).resolve().parent / "atlases"
HU_RANGE = (-1000, 3071)  # int16 storage; metal above 3071 HU is rare in the shipped scans
MARGIN_MM = 16.0  # air kept around the body box left-right and front-back


@dataclasses.dataclass(frozen=True)
class Atlas:
  """A reference CT in the atlas frame (module docstring)."""

  name: str
  hu: np.ndarray  # (X, Y, Z) int16 HU, RAS
  spacing_mm: float
  origin: np.ndarray  # (3,) atlas-frame mm of voxel (0, 0, 0)
  region: str = ""  # e.g. 'chest', 'abdomen', 'pelvis' (informational)
  source: str = ""  # where the scan came from and its licence
  world_centre: tuple = (0.0, 0.0, 0.0)  # RAS mm of the atlas frame's origin in the source scan

  @property
  def extent_mm(self) -> np.ndarray:
    """(3,) length of the scan along x, y, z in mm."""
    return np.asarray(self.hu.shape) * self.spacing_mm

  def save(self, path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"name": self.name, "spacing_mm": self.spacing_mm, "origin": self.origin.tolist(),
            "region": self.region, "source": self.source,
            "world_centre": [float(v) for v in self.world_centre]}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, hu=self.hu.astype(np.int16), meta=json.dumps(meta))
    tmp.replace(path)
    return path


def load(path: str | pathlib.Path) -> Atlas:
  """Reads an atlas `.npz`; a damaged or foreign file is an InputError naming it."""
  path = pathlib.Path(path)
  try:
    with np.load(path) as z:
      hu, meta = np.asarray(z["hu"]), json.loads(str(z["meta"]))
    atlas = Atlas(meta["name"], hu, float(meta["spacing_mm"]), np.asarray(meta["origin"], float),
                  meta.get("region", ""), meta.get("source", ""),
                  tuple(meta.get("world_centre", (0.0, 0.0, 0.0))))
  except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
    raise InputError(f"{path}: not a readable atlas ({type(e).__name__}: {e}); rebuild it with "
                     "python -m cvaa_jax.fit.build_atlases.") from None
  if atlas.hu.ndim != 3 or min(atlas.hu.shape) < 4:
    raise InputError(f"{path}: atlas array has shape {atlas.hu.shape}; expected a 3-D scan.")
  return atlas


def shipped_names(folder: str | pathlib.Path = SHIPPED_DIR) -> list[str]:
  return sorted(p.name[:-4] for p in pathlib.Path(folder).glob("*.npz"))


def load_all(folder: str | pathlib.Path = SHIPPED_DIR, exclude: tuple[str, ...] = ()) -> list[Atlas]:
  """Every atlas in `folder` (default: the shipped set) except the names in `exclude`."""
  names = [n for n in shipped_names(folder) if n not in exclude]
  if not names:
    raise InputError(f"{folder}: no atlases (*.npz) found; build them with "
                     "python -m cvaa_jax.fit.build_atlases --ct_dir=<CTs> --out=" + str(folder))
  return [load(pathlib.Path(folder) / f"{n}.npz") for n in names]


def from_volume(vol: Volume, name: str, spacing_mm: float = 4.0, region: str = "",
                source: str = "", body_threshold_hu: float = -400.0) -> Atlas:
  """A CT `Volume` (HU, any orientation) as an atlas: RAS, `spacing_mm`, body-cropped in x and y."""
  vol = transforms.spacing(transforms.ras(vol), spacing_mm)
  lo, hi = transforms.body_box(vol, body_threshold_hu)
  m = int(round(MARGIN_MM / spacing_mm))
  lo = np.maximum(lo - m, 0)
  hi = np.minimum(hi + m, np.asarray(vol.shape) - 1)
  lo[2], hi[2] = 0, vol.shape[2] - 1
  box = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
  hu = np.clip(np.rint(vol.array[box]), *HU_RANGE).astype(np.int16)
  centre = (np.asarray(hu.shape) - 1) / 2.0
  origin = -centre * spacing_mm
  world = vol.voxel_to_world(lo + centre)
  return Atlas(name, hu, float(spacing_mm), origin, region, source, tuple(float(v) for v in world))

