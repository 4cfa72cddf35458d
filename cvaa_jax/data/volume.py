"""A CT volume: voxel array plus its voxel-to-world affine and the record of what was done to it.

Conventions (used everywhere in the package, see docs/conventions.md):
  * World coordinates are nibabel's RAS+ millimetres: +x towards the patient's Right, +y Anterior,
    +z Superior. DICOM's LPS coordinates are converted on load.
  * `affine` maps a voxel index (i, j, k, 1) to world (x, y, z, 1), voxel centres at integer indices.
  * After `orientation(vol, "RAS")` array axis 0 increases to the right, axis 1 anteriorly and
    axis 2 superiorly. The models and the DRR renderer assume this canonical order.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import nibabel as nib
import numpy as np


@dataclasses.dataclass(frozen=True)
class Volume:
  """An immutable 3D image with its geometry.

  Attributes:
    array: (X, Y, Z) voxel values; Hounsfield units unless a step of `history` rescaled them.
    affine: (4, 4) float64 voxel-index-to-world (RAS+ mm) matrix.
    history: one JSON-serialisable dict per operation applied since loading, so that a run can be
      reproduced and inverted (see `transforms.invert`).
    source: where the data came from (a path or a phantom description), for error messages.
  """

  array: np.ndarray
  affine: np.ndarray
  history: tuple[dict[str, Any], ...] = ()
  source: str = "<array>"

  def __post_init__(self):
    if self.array.ndim != 3:
      raise ValueError(f"{self.source}: a Volume is 3D, got shape {self.array.shape}")
    affine = np.asarray(self.affine, dtype=np.float64)
    if affine.shape != (4, 4):
      raise ValueError(f"{self.source}: affine must be 4x4, got {affine.shape}")
    object.__setattr__(self, "affine", affine)

  @property
  def shape(self) -> tuple[int, int, int]:
    return tuple(self.array.shape)  # type: ignore[return-value]

  @property
  def spacing(self) -> np.ndarray:
    """Voxel size in mm along each array axis (norms of the affine's columns)."""
    return np.linalg.norm(self.affine[:3, :3], axis=0)

  @property
  def axcodes(self) -> tuple[str, str, str]:
    """Direction each array axis increases towards, e.g. ('R', 'A', 'S')."""
    return tuple(nib.aff2axcodes(self.affine))  # type: ignore[return-value]

  def replace(self, op: dict[str, Any] | None = None, **changes) -> "Volume":
    """Returns a copy with `changes` applied and `op` appended to the (possibly replaced) history."""
    history = changes.pop("history", self.history) + ((op,) if op is not None else ())
    return dataclasses.replace(self, history=history, **changes)

  def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
    """Maps (..., 3) voxel indices to (..., 3) world mm."""
    ijk = np.asarray(ijk, dtype=np.float64)
    return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

  def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
    """Maps (..., 3) world mm to (..., 3) (fractional) voxel indices."""
    inv = np.linalg.inv(self.affine)
    xyz = np.asarray(xyz, dtype=np.float64)
    return xyz @ inv[:3, :3].T + inv[:3, 3]
