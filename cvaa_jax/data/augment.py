"""Few-CT augmentation: many distinct training volumes from each real scan.

A handful of patients is too few views of anatomy for a generator: the same body-centred crop every
epoch is memorised. Here every training sample is cut afresh from the whole scan (resampled to the
model's spacing, windowed to [0, 1], RAS; cached by `dataset.prepare` as `<id>_scan.npy`):

  * placement: the field of view's centre is drawn along the whole scan (z) and across the body
    (x, y within the body's bounding box), instead of the one body-centred crop;
  * a small rotation about each axis and an isotropic scaling (patient pose and size);
  * a smooth elastic displacement: Gaussian displacements (mm) on a coarse grid of control points,
    upsampled by cubic interpolation (anatomical variation, organ shape);
  * HU jitter: attenuation (HU + 1000) gain, an HU offset and Gaussian noise (scanner calibration);
  * optional left-right mirroring. A mirrored chest or abdomen has its heart and liver on the other
    side (situs inversus), a different anatomy rather than a different pose, so it is off unless
    `mirror_prob` is set and the benchmark reports whether it helps.

All geometric parts compose into one coordinate map that is sampled once (trilinear), so the cost
is one `map_coordinates` over the output grid per sample: measured in benchmarks/pipeline.py
against the train step. It runs in the Grain workers, where it overlaps the step.

Axis order is the package's (X, Y, Z) = (R, A, S) array order; angles are in degrees.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np
from scipy import ndimage

from cvaa_jax.data.io import load_npy
from cvaa_jax.data.transforms import crop_or_pad
from cvaa_jax.data.volume import Volume


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """The `config.augment` section plus the grid it cuts (`size` voxels of `spacing_mm`)."""

  size: int
  spacing_mm: float
  hu_range: float = 5096.0  # hu_max - hu_min of the [0, 1] window
  placement: bool = False
  rotate_deg: float = 0.0
  scale: float = 0.0
  elastic_mm: float = 0.0
  elastic_points: int = 4
  hu_gain: float = 0.0
  hu_offset: float = 0.0
  hu_noise: float = 0.0
  mirror_prob: float = 0.0

  @property
  def spatial(self) -> bool:
    return bool(self.placement or self.rotate_deg or self.scale or self.elastic_mm)

  @property
  def active(self) -> bool:
    return bool(self.spatial or self.hu_gain or self.hu_offset or self.hu_noise or
                self.mirror_prob)


def from_config(config) -> AugmentConfig:
  """The run's `config.augment` on its model grid."""
  d = config.data
  return AugmentConfig(size=int(d.size), spacing_mm=float(d.spacing_mm),
                       hu_range=float(d.hu_max - d.hu_min), **config.augment.to_dict())


def keeps_scans(config) -> bool:
  """Whether a run cuts its training volumes from whole scans (so the scans must be cached)."""
  return config.data.source == "ct_dir" and from_config(config).active


def rotation_matrix(angles_deg: np.ndarray) -> np.ndarray:
  """R = Rz @ Ry @ Rx for rotations (degrees) about the X, Y and Z axes."""
  ax, ay, az = np.deg2rad(np.asarray(angles_deg, np.float64))
  rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
  ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
  rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
  return rz @ ry @ rx


def draw_center(rng: np.random.Generator, shape, body_lo, body_hi, size: int,
                placement: bool) -> np.ndarray:
  """The field of view's centre (scan voxel indices).

  Without placement: body-centred in x and y, scan-centred in z, as `transforms.preprocess` crops.
  With it, per axis over an extent (the body's bounding box in x and y, the whole scan in z): where
  the extent is longer than the box, anywhere the box lies inside it; where shorter, anywhere the
  box still holds all of it. So the box slides along the whole scan and across the body without
  ever cutting air where anatomy could be.
  """
  shape = np.asarray(shape, np.float64)
  lo = np.array([body_lo[0], body_lo[1], 0], np.float64)
  hi = np.array([body_hi[0], body_hi[1], shape[2] - 1], np.float64)
  center = (lo + hi) / 2
  if not placement:
    return center
  half = (size - 1) / 2
  a, b = lo + half, hi - half  # box inside the extent
  a, b = np.minimum(a, b), np.maximum(a, b)  # else: extent inside the box
  return rng.uniform(a, b)


def elastic_field(rng: np.random.Generator, size: int, points: int, std_vox: float) -> np.ndarray:
  """(3, S, S, S) smooth displacement (voxels): Gaussian control points, cubic-spline upsampled.

  Spline zooming is separable, so the field is the control grid contracted with one (S, P)
  interpolation matrix per axis: the same numbers as `ndimage.zoom(order=3)` per component
  (tested), about 80x faster at 64^3.
  """
  coarse = rng.normal(0.0, std_vox, size=(3, points, points, points))
  m = ndimage.zoom(np.eye(points), (size / points, 1), order=3, mode="nearest",
                   grid_mode=True)[:size]
  return np.einsum("xi,yj,zk,aijk->axyz", m, m, m, coarse, optimize=True).astype(np.float32)


def cut(scan: np.ndarray, center: np.ndarray, matrix: np.ndarray, size: int,
        displacement: np.ndarray | None = None) -> np.ndarray:
  """Samples the (S, S, S) grid o (voxels, centred on the box's middle) at scan voxel
  center + matrix @ o (+ displacement(o)), trilinearly; outside the scan is air (0)."""
  grid = np.arange(size, dtype=np.float32) - (size - 1) / 2
  o = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"))  # (3, S, S, S)
  coords = np.einsum("ij,jxyz->ixyz", np.asarray(matrix, np.float32), o)
  coords += np.asarray(center, np.float32)[:, None, None, None]
  if displacement is not None:
    coords += displacement
  return ndimage.map_coordinates(scan, coords, order=1, mode="constant", cval=0.0,
                                 prefilter=False).astype(np.float32)


def sample_volume(scan: np.ndarray, body_lo, body_hi, cfg: AugmentConfig,
                  rng: np.random.Generator) -> np.ndarray:
  """One augmented (S, S, S) float32 [0, 1] training volume cut from a [0, 1] `scan` (same
  spacing); outside the scan is air (0)."""
  s = cfg.size
  center = draw_center(rng, scan.shape, body_lo, body_hi, s, cfg.placement)
  angles = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg, size=3) if cfg.rotate_deg else np.zeros(3)
  zoom = rng.uniform(1 - cfg.scale, 1 + cfg.scale) if cfg.scale else 1.0
  mirror = bool(cfg.mirror_prob and rng.random() < cfg.mirror_prob)
  # Output voxel o -> scan voxel center + R (o / zoom) + elastic(o): zoom > 1 enlarges the anatomy.
  field = (elastic_field(rng, s, cfg.elastic_points, cfg.elastic_mm / cfg.spacing_mm)
           if cfg.elastic_mm else None)
  if cfg.spatial:
    out = cut(scan, center, rotation_matrix(angles) / zoom, s, field)
  else:  # the plain crop, without interpolation
    out = crop_or_pad(Volume(np.asarray(scan), np.eye(4)), (s,) * 3, center=center,
                      cval=0.0).array
  out = np.asarray(out, np.float32)
  if mirror:
    out = out[::-1]
  if cfg.hu_gain or cfg.hu_offset or cfg.hu_noise:
    gain = rng.uniform(1 - cfg.hu_gain, 1 + cfg.hu_gain) if cfg.hu_gain else 1.0
    offset = rng.uniform(-cfg.hu_offset, cfg.hu_offset) if cfg.hu_offset else 0.0
    # The window's 0 is hu_min (-1000 HU by default: air), so scaling the unit value scales
    # HU + 1000. Offset and noise act inside the patient only (> 100 HU above the window's
    # bottom), so the air around the body stays air.
    body = out > 100.0 / cfg.hu_range
    jitter = out * gain + offset / cfg.hu_range
    if cfg.hu_noise:
      jitter = jitter + rng.normal(0.0, cfg.hu_noise / cfg.hu_range, size=out.shape)
    out = np.clip(np.where(body, jitter, out * gain), 0.0, 1.0)
  return np.ascontiguousarray(out, np.float32)


class ScanSource:
  """Random-access source of whole cached scans: {'scan', 'body_lo', 'body_hi', 'index'}."""

  def __init__(self, scans):
    """`scans`: (scan .npy path, body_lo, body_hi) per training case."""
    self.scans = [(str(p), tuple(int(v) for v in lo), tuple(int(v) for v in hi))
                  for p, lo, hi in scans]

  def __len__(self) -> int:
    return len(self.scans)

  def __getitem__(self, index: int):
    path, lo, hi = self.scans[index]
    return {"scan": load_npy(path, mmap=True), "body_lo": np.asarray(lo),
            "body_hi": np.asarray(hi), "index": np.int32(index)}


@dataclasses.dataclass
class CutVolume(grain.transforms.RandomMap):
  """Scan element -> {'volume', 'index'}: one `sample_volume` draw per element."""

  cfg: AugmentConfig = None  # type: ignore[assignment]

  def random_map(self, element, rng: np.random.Generator):
    vol = sample_volume(element["scan"], element["body_lo"], element["body_hi"], self.cfg, rng)
    return {"volume": vol, "index": element["index"]}
