"""How a radiograph was acquired, and how it is placed in the model's canonical view.

For each of the two views the reconstruction needs: the beam (cone or parallel), the source-isocentre
(SID) and source-detector (SDD) distances, the detector pixel pitch (row, col), the principal point,
the side it was taken from (frontal 'ap' / 'pa'; lateral 'left' / 'right' = the side the detector is
on) and the image orientation (the patient directions in which the column and the row index grow,
DICOM PatientOrientation letters R/L/A/P/H/F). Each value comes from, in this order: a command-line
flag, the file (DICOM DX/CR tags, a 2-D NIfTI affine), or the run's training geometry; the source of
every value is kept for the report.

The canonical view (models/projection.py) is the image on the isocentre plane, `size` pixels over the
model's field of view, mirrored into the model's orientation: frontal as an AP seen from the source
(columns towards the patient's left, rows towards the feet: 'L','F'), lateral as a left lateral seen
from the source ('A','F'). What remains of the geometry is the signed inverse source distance
kappa: +1/SID with the source on the canonical side (AP, left lateral), -1/SID on the other (PA,
right lateral), 0 for a parallel beam. Without an orientation tag or flag an image is taken as drawn
seen from the source (how the DRR renderer and most DRR tools draw): AP 'L','F', PA 'R','F', left
lateral 'A','F', right lateral 'P','F'.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from cvaa_jax.errors import InputError

SIDES = {"frontal": ("ap", "pa"), "lateral": ("left", "right")}
CANONICAL = {"frontal": ("L", "F"), "lateral": ("A", "F")}
AS_SEEN_FROM_SOURCE = {"ap": ("L", "F"), "pa": ("R", "F"), "left": ("A", "F"), "right": ("P", "F")}
OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
AXIS_OF = {"L": 0, "R": 0, "A": 1, "P": 1, "H": 2, "F": 2}
# DICOM ViewPosition (0018,5101) values and the side they name.
VIEW_POSITIONS = {"AP": "ap", "PA": "pa", "LL": "left", "LLAT": "left", "LEFT LATERAL": "left",
                  "RL": "right", "RLAT": "right", "RIGHT LATERAL": "right"}
FIELDS = ("beam", "sid", "sdd", "pixel_mm", "pixel_at", "side", "orientation", "center")
PIXEL_PLANES = ("detector", "isocentre")


@dataclasses.dataclass(frozen=True)
class Reference:
  """The run's training geometry: what unknown values fall back to."""

  parallel: bool
  sid: float
  sdd: float
  fov_mm: float  # model field of view at the isocentre
  size: int  # model input pixels

  @classmethod
  def from_config(cls, config) -> "Reference":
    """The training geometry of a run's config (its `drr` and `data` sections)."""
    d, r = config.data, config.drr
    return cls(parallel=r.parallel, sid=r.sid, sdd=r.sdd, fov_mm=d.size * d.spacing_mm,
               size=d.size)


@dataclasses.dataclass(frozen=True)
class Acquisition:
  """One view's resolved geometry; `sources[field]` says where each value came from."""

  view: str  # 'frontal' | 'lateral'
  beam: str  # 'cone' | 'parallel'
  sid: float
  sdd: float
  pixel_mm: tuple[float, float]  # detector pitch (row, col) of the image as stored
  pixel_at: str  # the plane the given pitch was measured in: 'detector' or 'isocentre'
  side: str
  orientation: tuple[str, str]  # patient directions of increasing (column, row) index
  center: tuple[float, float]  # principal point (row, col), pixel indices of the image as stored
  sources: Mapping[str, str]

  @property
  def magnification(self) -> float:
    return 1.0 if self.beam == "parallel" else self.sdd / self.sid

  @property
  def inv_sid(self) -> float:
    """Signed inverse source distance of the canonical view (module docstring)."""
    if self.beam == "parallel":
      return 0.0
    return (1.0 if self.side in ("ap", "left") else -1.0) / self.sid

  def report(self) -> dict[str, Any]:
    values = {f: getattr(self, f) for f in FIELDS}
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    if self.beam == "parallel":
      values["sid"] = values["sdd"] = None
    return {"values": values, "sources": dict(self.sources), "inv_sid_per_mm": self.inv_sid,
            "magnification": self.magnification}


def parse_orientation(text: Any, what: str) -> tuple[str, str]:
  """'L,F' / 'L\\F' / ['L', 'F'] -> ('L', 'F'); oblique compound letters keep the leading one."""
  if isinstance(text, str):
    parts = [p for p in text.replace("\\", ",").replace(" ", ",").split(",") if p]
  else:
    parts = [str(p) for p in text]
  letters = tuple(p.strip().upper()[:1] for p in parts)
  if len(letters) != 2 or any(c not in OPPOSITE for c in letters) or \
      AXIS_OF[letters[0]] == AXIS_OF[letters[1]]:
    raise InputError(f"{what}: orientation {text!r} is not two patient directions on different "
                     "axes (letters R/L, A/P, H/F; e.g. 'L,F' for an AP as seen from the source).")
  return letters  # type: ignore[return-value]


def _positive(value: Any, name: str, what: str) -> float:
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise InputError(f"{what}: {name} {value!r} is not a number.") from None
  if not math.isfinite(v) or v <= 0:
    raise InputError(f"{what}: {name} is {value!r}; it must be a positive, finite number of mm.")
  return v


def _pair(value: Any, name: str, what: str) -> tuple[float, float]:
  if isinstance(value, str):
    value = [v for v in value.replace("\\", ",").split(",") if v.strip()]
  vals = list(np.atleast_1d(np.asarray(value, dtype=object)))
  if len(vals) == 1:
    vals = vals * 2
  if len(vals) != 2:
    raise InputError(f"{what}: {name} {value!r} needs one or two values (row, column).")
  return tuple(_positive(v, name, what) for v in vals)  # type: ignore[return-value]


def resolve(view: str, shape: tuple[int, int], from_file: Mapping[str, tuple[Any, str]],
            flags: Mapping[str, Any], ref: Reference, what: str,
            side_from_position: str | None = None) -> Acquisition:
  """Merges flag values over file values over the training reference for one view.

  from_file: field -> (value, 'tag ...' description) as `xray_io.read_xray_meta` finds them;
  flags: field -> value (None = not given); what: the file, named in every error.
  """
  if view not in SIDES:
    raise ValueError(view)
  values: dict[str, Any] = {}
  sources: dict[str, str] = {}

  def take(field, default=None, default_note=""):
    if flags.get(field) is not None:
      values[field], sources[field] = flags[field], f"flag --{view}_{field}"
    elif field in from_file and from_file[field][0] is not None:
      values[field], sources[field] = from_file[field]
    elif default is not None:
      values[field], sources[field] = default, f"default ({default_note})"
    else:
      values[field] = None

  if "beam" not in from_file and ("sid" in from_file or "sdd" in from_file):
    from_file = {**from_file, "beam": ("cone", "implied by the file's source distances")}
  take("beam", "parallel" if ref.parallel else "cone", "the run's training beam")
  beam = str(values["beam"]).lower()
  if beam not in ("cone", "parallel"):
    raise InputError(f"{what}: beam {values['beam']!r}; use 'cone' or 'parallel'.")
  take("sid", ref.sid, "the run's training SID")
  take("sdd", ref.sdd, "the run's training SDD")
  sid = _positive(values["sid"], "source-isocentre distance (SID)", what)
  sdd = _positive(values["sdd"], "source-detector distance (SDD)", what)
  if beam == "cone" and sdd <= sid:
    raise InputError(f"{what}: SDD {sdd:g} mm is not larger than SID {sid:g} mm "
                     f"({sources['sdd']}, {sources['sid']}); the detector must lie beyond the "
                     "isocentre: check the distances.")
  take("side")
  if values["side"] is None and side_from_position is not None:
    values["side"], sources["side"] = side_from_position, "detector position in the NIfTI affine"
  if values["side"] is None:
    if "side_unknown" in from_file:
      raise InputError(f"{what}: the file's {from_file['side_unknown'][1]} does not say which side "
                       f"the {view} was taken from; give --{view}_side="
                       f"{'|'.join(SIDES[view])}.")
    values["side"], sources["side"] = SIDES[view][0], "default (the run's training side)"
  side = str(values["side"]).lower()
  if side not in SIDES[view]:
    raise InputError(f"{what}: side {values['side']!r} is not a {view} side; use one of "
                     f"{SIDES[view]}.")
  take("orientation", AS_SEEN_FROM_SOURCE[side], f"drawn as seen from the source of a {side} view")
  orient = parse_orientation(values["orientation"], what)
  canon = CANONICAL[view]
  if {AXIS_OF[orient[0]], AXIS_OF[orient[1]]} != {AXIS_OF[canon[0]], AXIS_OF[canon[1]]}:
    raise InputError(f"{what}: orientation {','.join(orient)} does not lie in a {view} image plane "
                     f"(needs one of {canon[0]}/{OPPOSITE[canon[0]]} and one of H/F); check the "
                     f"orientation ({sources['orientation']}).")
  rows, cols = shape
  # Pitch: known, or the image's shorter side spans the model's field of view on the detector.
  take("pixel_mm")
  if values["pixel_mm"] is None:
    mag = 1.0 if beam == "parallel" else sdd / sid
    p = ref.fov_mm * mag / min(rows, cols)
    values["pixel_mm"] = (p, p)
    sources["pixel_mm"] = "default (the image's shorter side spans the model's field of view)"
  pitch = _pair(values["pixel_mm"], "pixel pitch", what)
  take("pixel_at", "detector", "a pitch is the detector's")
  pixel_at = str(values["pixel_at"]).lower()
  if pixel_at not in PIXEL_PLANES:
    raise InputError(f"{what}: pixel_at {values['pixel_at']!r}; use 'detector' or 'isocentre'.")
  if pixel_at == "isocentre" and beam == "cone":  # the detector's pitch is magnified SDD / SID
    pitch = (pitch[0] * sdd / sid, pitch[1] * sdd / sid)
  take("center", ((rows - 1) / 2.0, (cols - 1) / 2.0), "the detector centre")
  center = tuple(float(c) for c in (values["center"].replace("\\", ",").split(",")
                                    if isinstance(values["center"], str) else values["center"]))
  if len(center) != 2 or not all(math.isfinite(c) for c in center):
    raise InputError(f"{what}: principal point {values['center']!r} must be two finite pixel "
                     "indices (row, col).")
  if beam == "parallel":
    sources["sid"] = sources["sdd"] = "unused (parallel beam)"
  return Acquisition(view, beam, sid, sdd, pitch, pixel_at, side, orient, center,  # type: ignore
                     sources)


def canonical_image(img: np.ndarray, acq: Acquisition) -> tuple[np.ndarray, tuple[float, float],
                                                                 tuple[float, float]]:
  """Transposes/flips `img` into the canonical orientation; returns it with its (row, col) pitch
  and principal point in the new indices."""
  canon = CANONICAL[acq.view]
  col_dir, row_dir = acq.orientation
  pitch, center = acq.pixel_mm, acq.center
  if AXIS_OF[col_dir] == 2:  # columns run along the body axis: transpose
    img, col_dir, row_dir = img.T, row_dir, col_dir
    pitch, center = pitch[::-1], center[::-1]
  rows, cols = img.shape
  r0, c0 = center
  if col_dir != canon[0]:
    img, c0 = img[:, ::-1], (cols - 1) - c0
  if row_dir != canon[1]:
    img, r0 = img[::-1, :], (rows - 1) - r0
  return np.ascontiguousarray(img), tuple(pitch), (r0, c0)  # type: ignore[return-value]


def to_canonical_view(img: np.ndarray, acq: Acquisition, ref: Reference) -> np.ndarray:
  """Resamples a line-integral-domain image onto the model's canonical view (size, size).

  Each model pixel sits at (row, col) * fov/size on the isocentre plane, i.e. at that position times
  the magnification on the detector; the image is low-pass filtered where a model pixel spans more
  than one detector pixel (anti-aliasing), sampled bilinearly, and filled with the image's lowest
  value (air) outside the detector. Returns float64, not yet intensity-normalised.
  """
  img, pitch, (r0, c0) = canonical_image(np.asarray(img, np.float64), acq)
  s = ref.size
  step = ref.fov_mm / s * acq.magnification  # model pixel size on the detector, mm
  ratio = (step / pitch[0], step / pitch[1])  # detector pixels per model pixel
  sigma = [max(0.0, (r - 1.0) / 2.0) for r in ratio]
  if max(sigma) > 0:
    img = ndimage.gaussian_filter(img, sigma=sigma, mode="nearest")
  offs = np.arange(s) - (s - 1) / 2.0
  rr = r0 + offs * ratio[0]
  cc = c0 + offs * ratio[1]
  grid_r, grid_c = np.meshgrid(rr, cc, indexing="ij")
  return ndimage.map_coordinates(img, [grid_r, grid_c], order=1, mode="constant",
                                 cval=float(img.min()))


def isocentre_from_detectors(frontal: Mapping[str, np.ndarray], lateral: Mapping[str, np.ndarray]
                             ) -> tuple[np.ndarray, float]:
  """Where the two central rays (through each detector centre, along its normal) come closest:
  (point, gap in mm between the rays)."""
  p1, d1 = np.asarray(frontal["center"], float), np.asarray(frontal["normal"], float)
  p2, d2 = np.asarray(lateral["center"], float), np.asarray(lateral["normal"], float)
  d1, d2 = d1 / np.linalg.norm(d1), d2 / np.linalg.norm(d2)
  w = p1 - p2
  a, b, c = d1 @ d1, d1 @ d2, d2 @ d2
  d, e = d1 @ w, d2 @ w
  den = a * c - b * b
  if den < 1e-9:
    raise InputError("the two images lie in parallel planes, so their affines do not locate an "
                     "isocentre")
  t1, t2 = (b * e - c * d) / den, (a * e - b * d) / den
  q1, q2 = p1 + t1 * d1, p2 + t2 * d2
  return (q1 + q2) / 2.0, float(np.linalg.norm(q1 - q2))


ON_PLANE_MM = 5.0  # a detector centre this close to the isocentre plane: the image lies on it


def side_from_detector(view: str, detector_center: np.ndarray, iso: np.ndarray) -> str | None:
  """The side a view was taken from, given where its detector lies relative to the isocentre;
  None when the image lies on the plane through the isocentre (within ON_PLANE_MM), as tools that
  export a radiograph laid over the CT write it: then the affine does not say the side."""
  axis = 1 if view == "frontal" else 0
  behind = float(detector_center[axis] - iso[axis])
  if abs(behind) < ON_PLANE_MM:
    return None
  if view == "frontal":
    return "ap" if behind < 0 else "pa"  # detector posterior (-y): source anterior
  return "left" if behind < 0 else "right"  # detector on the patient's left (-x)
