"""X-ray imaging geometry as data: where the source is, where the detector is, how its pixels lie.

Conventions (world = RAS+ mm, see docs/conventions.md):
  * A view is a gantry angle `theta` about the patient's superior (z) axis through the isocentre.
    theta = 0 is AP (anteroposterior): the source is anterior (+y), the detector posterior.
    theta = 90 deg is a left lateral: the source is on the patient's right (+x), the detector on the
    left. In general the source direction from the isocentre is (sin theta, cos theta, 0).
  * Images are indexed `[row, col]`, seen from the source (the radiographer's view): rows run from
    superior (row 0) to inferior (v = -z), columns along u = (-cos theta, sin theta, 0). So an AP image
    shows the patient's right on the left (the radiological convention); a left lateral shows anterior
    on the right. Pixel centres are at integer (row, col); the detector centre lies between the two
    middle pixels of an even-sized detector.
  * Cone beam: rays run from `source` to each pixel centre. Parallel beam: rays run along
    `detector_center - source` through each pixel centre (`source` only sets the direction).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cvaa_jax.errors import InputError

# Realistic defaults for lumbar spine radiography: source-to-image distance 100 cm is the standard
# for a lumbar series; the isocentre (the spine) sits about 25 cm in front of the detector.
DEFAULT_SDD_MM = 1000.0  # source to detector
DEFAULT_SID_MM = 750.0  # source to isocentre
VIEWS = {"ap": 0.0, "pa": 180.0, "lateral": 90.0, "left_lateral": 90.0, "right_lateral": -90.0}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Geometry:
  """One X-ray view. Array fields are pytree leaves (jit/vmap/grad-able), the rest is static.

  Attributes:
    source: (3,) source position, world mm.
    detector_center: (3,) world position of the detector's centre.
    u: (3,) unit vector along image columns (increasing column index).
    v: (3,) unit vector along image rows (increasing row index).
    pixel_size: (2,) (row, column) pixel pitch in mm on the detector.
    shape: (rows, cols).
    parallel: parallel beam (rays along detector_center - source) instead of cone beam.
    aligned_axis: 0 or 1 when the detector is perpendicular to that world axis with rows along z and
      columns along the other horizontal axis (AP, PA, laterals): the renderer then uses its fast
      separable path. None for any other orientation.
  """

  source: jax.Array
  detector_center: jax.Array
  u: jax.Array
  v: jax.Array
  pixel_size: jax.Array
  shape: tuple[int, int] = dataclasses.field(metadata={"static": True}, default=(128, 128))
  parallel: bool = dataclasses.field(metadata={"static": True}, default=False)
  aligned_axis: int | None = dataclasses.field(metadata={"static": True}, default=None)

  def pixel_centers(self) -> jax.Array:
    """(rows, cols, 3) world positions of the pixel centres."""
    rows, cols = self.shape
    r = (jnp.arange(rows) - (rows - 1) / 2.0) * self.pixel_size[0]
    c = (jnp.arange(cols) - (cols - 1) / 2.0) * self.pixel_size[1]
    return (self.detector_center + r[:, None, None] * self.v + c[None, :, None] * self.u)

  def replace(self, **changes: Any) -> "Geometry":
    return dataclasses.replace(self, **changes)


def _view_angle(view: str | float) -> float:
  if isinstance(view, str):
    if view.lower() not in VIEWS:
      raise InputError(f"unknown view {view!r}; use one of {sorted(VIEWS)} or an angle in degrees.")
    return VIEWS[view.lower()]
  return float(view)


def _aligned(theta_deg: float) -> int | None:
  t = theta_deg % 180.0
  if np.isclose(t, 0.0, atol=1e-9) or np.isclose(t, 180.0, atol=1e-9):
    return 1  # rays along y
  if np.isclose(t, 90.0, atol=1e-9):
    return 0  # rays along x
  return None


def _frame(theta_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  t = np.deg2rad(theta_deg)
  to_source = np.array([np.sin(t), np.cos(t), 0.0])
  u = np.array([-np.cos(t), np.sin(t), 0.0])
  v = np.array([0.0, 0.0, -1.0])
  # Snap round-off so that axis-aligned views are exactly axis-aligned.
  return tuple(np.where(np.abs(a) < 1e-12, 0.0, a) for a in (to_source, u, v))  # type: ignore


def cone_beam(view: str | float = "ap", shape: tuple[int, int] = (128, 128),
              pixel_size: float | tuple[float, float] = 2.0, sid: float = DEFAULT_SID_MM,
              sdd: float = DEFAULT_SDD_MM, isocenter=(0.0, 0.0, 0.0)) -> Geometry:
  """A clinical cone-beam view: source `sid` mm from the isocentre, detector `sdd` mm from the source.

  `pixel_size` is the detector pitch; the field of view at the isocentre is shape * pitch * sid / sdd.
  """
  if not 0 < sid < sdd:
    raise InputError(f"cone_beam: need 0 < sid ({sid}) < sdd ({sdd}) mm.")
  theta = _view_angle(view)
  to_source, u, v = _frame(theta)
  iso = np.asarray(isocenter, dtype=np.float64)
  return _make(iso + sid * to_source, iso - (sdd - sid) * to_source, u, v, pixel_size, shape,
               parallel=False, aligned=_aligned(theta))


def parallel_beam(view: str | float = "ap", shape: tuple[int, int] = (128, 128),
                  pixel_size: float | tuple[float, float] = 2.0,
                  isocenter=(0.0, 0.0, 0.0)) -> Geometry:
  """An orthographic view through the isocentre (pixel pitch = field of view / shape)."""
  theta = _view_angle(view)
  to_source, u, v = _frame(theta)
  iso = np.asarray(isocenter, dtype=np.float64)
  return _make(iso + 1000.0 * to_source, iso, u, v, pixel_size, shape, parallel=True,
               aligned=_aligned(theta))


def _make(source, center, u, v, pixel_size, shape, parallel, aligned) -> Geometry:
  shape = tuple(int(s) for s in shape)
  if len(shape) != 2 or min(shape) < 1:
    raise InputError(f"detector shape must be two positive ints, got {shape}.")
  ps = np.broadcast_to(np.asarray(pixel_size, dtype=np.float64), (2,))
  if np.any(ps <= 0):
    raise InputError(f"detector pixel size must be positive, got {ps.tolist()} mm.")
  # NumPy leaves: a geometry built inside `jit` stays concrete, so the projector can precompute its
  # sampling on the host (see project.joseph_plan); passed into jit, they become traced.
  f32 = lambda a: np.asarray(a, dtype=np.float32)
  return Geometry(f32(source), f32(center), f32(u), f32(v), f32(ps), shape=shape,
                  parallel=parallel, aligned_axis=aligned)


def biplanar(shape: tuple[int, int] = (128, 128), pixel_size: float = 2.0, parallel: bool = False,
             **kwargs) -> tuple[Geometry, Geometry]:
  """The (frontal AP, left lateral) pair the models take as input."""
  make = parallel_beam if parallel else cone_beam
  return (make("ap", shape, pixel_size, **kwargs), make("lateral", shape, pixel_size, **kwargs))


def fov_matched(size_mm: float, shape: tuple[int, int] = (128, 128), parallel: bool = False,
                view: str | float = "ap", sid: float = DEFAULT_SID_MM,
                sdd: float = DEFAULT_SDD_MM) -> Geometry:
  """A view whose field of view at the isocentre is `size_mm` wide (e.g. the model grid's 256 mm)."""
  if parallel:
    return parallel_beam(view, shape, size_mm / shape[1])
  return cone_beam(view, shape, size_mm / shape[1] * sdd / sid, sid=sid, sdd=sdd)
