"""Procedural lumbar CT phantoms in HU: the embedded default data for the demo and the tests.

Each seed gives a different patient: body size and position, fat thickness, spine curvature
(lordosis), vertebra size, rotation, bowel gas, and optionally pedicle screws with rods. The anatomy is
defined in millimetres in a RAS+ frame centred on the field of view, then sampled on any grid, so a
32^3 test phantom and a 128^3 demo phantom of one seed show the same patient.

Labels (`LABELS`) come with the HU volume, so tests know where bone, metal and air are.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from cvaa_jax.data.volume import Volume

LABELS = {"air": 0, "fat": 1, "soft_tissue": 2, "muscle": 3, "gas": 4, "disc": 5,
          "cancellous": 6, "cortical": 7, "metal": 8, "skin": 9, "vessel": 10, "kidney": 11,
          "csf": 12}

_HU = {"air": -1000.0, "fat": -95.0, "soft_tissue": 35.0, "muscle": 55.0, "gas": -900.0,
       "disc": 85.0, "cancellous": 210.0, "cortical": 1100.0, "metal": 4096.0, "skin": 45.0,
       "vessel": 42.0, "kidney": 32.0, "csf": 12.0}


@dataclasses.dataclass(frozen=True)
class Phantom:
  volume: Volume  # HU, RAS
  labels: np.ndarray  # uint8, same shape, values from LABELS


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
  cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
  rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
  rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
  return rot_z @ rot_y @ rot_x


class _Canvas:
  """World coordinates of the voxel centres plus the label map being painted."""

  def __init__(self, shape, spacing_mm):
    shape = tuple(int(s) for s in shape)
    self.affine = np.eye(4)
    self.affine[:3, :3] = np.diag([spacing_mm] * 3)
    self.affine[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * spacing_mm  # FOV centred on the origin
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * spacing_mm for n in shape]
    self.x, self.y, self.z = np.meshgrid(*axes, indexing="ij")
    self.labels = np.zeros(shape, np.uint8)

  def local(self, center, rot):
    """Coordinates in a frame at `center` whose axes are the columns of `rot`."""
    dx, dy, dz = self.x - center[0], self.y - center[1], self.z - center[2]
    r = rot.astype(np.float32)
    return (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
            r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
            r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz)

  def paint(self, mask, label):
    self.labels[mask] = LABELS[label]


def _ellipse(u, v, a, b):
  return (u / a) ** 2 + (v / b) ** 2


def lumbar_phantom(seed: int, shape=(128, 128, 128), spacing_mm: float = 2.0,
                   implants: bool | None = None, noise_hu: float = 12.0) -> Phantom:
  """Generates one synthetic lumbar CT.

  Args:
    seed: patient identity; the same seed gives the same anatomy at any grid size.
    shape: voxel grid (X, Y, Z) in RAS order.
    spacing_mm: isotropic voxel size; FOV = shape * spacing_mm (the paper's 128 x 2 mm = 256 mm).
    implants: pedicle screws + rods at two levels; None draws it from the seed (40 % of patients).
    noise_hu: standard deviation of the white detector-like noise added to tissue.
  """
  rng = np.random.default_rng(seed)  # anatomy: scalar draws only, so any grid gives the same patient
  tex_rng = np.random.default_rng([seed, 1])  # grid-sized noise fields
  cv = _Canvas(shape, spacing_mm)
  if implants is None:
    implants = bool(rng.random() < 0.4)

  # Whole-patient pose: small rotations and an offset of the body in the FOV.
  pose = _rotation(*np.deg2rad(rng.uniform([-4, -4, -6], [4, 4, 6])))
  offset = np.array([rng.uniform(-12, 12), rng.uniform(-10, 10), rng.uniform(-10, 10)])
  bx, by, bz = cv.local(offset, pose)  # body frame: x right, y anterior, z superior

  # --- torso: skin, subcutaneous fat, abdominal wall muscle, viscera ------------------------------
  half_w, half_d = rng.uniform(118, 155), rng.uniform(88, 118)
  fat = rng.uniform(8, 28)
  torso = _ellipse(bx, by, half_w, half_d) <= 1
  cv.paint(torso, "skin")
  cv.paint(_ellipse(bx, by, half_w - 2.5, half_d - 2.5) <= 1, "fat")
  wall_w, wall_d = half_w - 2.5 - fat, half_d - 2.5 - fat * rng.uniform(0.8, 1.4)
  cv.paint(_ellipse(bx, by, wall_w, wall_d) <= 1, "muscle")
  cv.paint(_ellipse(bx, by, wall_w - 9, wall_d - 9) <= 1, "soft_tissue")
  # Visceral fat: thresholded smooth noise inside the abdomen.
  smooth = ndimage.gaussian_filter(tex_rng.standard_normal(cv.labels.shape).astype(np.float32),
                                   sigma=max(1.0, 9.0 / spacing_mm))
  smooth /= smooth.std() + 1e-6
  viscera = cv.labels == LABELS["soft_tissue"]
  cv.paint(viscera & (smooth > rng.uniform(0.3, 0.9)), "fat")

  # --- spine centre line (sagittal lordosis), vertebra frames ------------------------------------
  n_vert = 5
  body_h = rng.uniform(23, 28)  # vertebral body height, mm
  disc_h = rng.uniform(7, 11)
  pitch = body_h + disc_h
  z_top = (n_vert * pitch) / 2.0 - pitch / 2.0
  z_levels = z_top - pitch * np.arange(n_vert) + rng.uniform(-8, 8)
  lordosis = rng.uniform(4, 18)  # mm of anterior bow at mid-lumbar
  y_base = -half_d + rng.uniform(78, 92)  # centre of vertebral bodies (posterior part of body)
  x_scoliosis = rng.uniform(-6, 6)
  half_span = pitch * (n_vert + 1) / 2.0

  def centre(z):
    t = (z - z_levels.mean()) / half_span
    return np.array([x_scoliosis * (1 - t ** 2), y_base + lordosis * (1 - t ** 2), z])

  def tilt(z):  # rotation about x following the curve's tangent
    t = (z - z_levels.mean()) / half_span
    dy_dz = -2 * lordosis * t / half_span
    return _rotation(np.arctan(dy_dz), 0.0, 0.0)

  def world(c):  # body frame -> world
    return offset + pose @ c

  # Paraspinal (erector spinae) and psoas muscles, aorta and IVC, kidneys: beside the spine.
  c0 = centre(z_levels.mean())
  for side in (-1, 1):
    cv.paint(_ellipse(bx - side * 28, by - (c0[1] - 52), 24, 22) <= 1, "muscle")
    psoas_r = 9 + 9 * np.clip((z_levels.mean() - bz) / (2 * pitch) + 0.5, 0, 1.3)
    cv.paint((_ellipse(bx - side * 36, by - (c0[1] + 2), psoas_r, psoas_r * 0.9) <= 1) & torso,
             "muscle")
    kz = z_levels[0] + rng.uniform(-10, 10)
    cv.paint(_ellipse(bx - side * 72, by - (c0[1] + 15), 28, 22) + ((bz - kz) / 50) ** 2 <= 1,
             "kidney")
  cv.paint(_ellipse(bx + 18, by - (c0[1] + 34), 11, 11) <= 1, "vessel")  # aorta: patient's left
  cv.paint(_ellipse(bx - 22, by - (c0[1] + 32), 12, 9) <= 1, "vessel")  # IVC: right

  # Bowel gas pockets in the anterior abdomen.
  for _ in range(rng.integers(3, 9)):
    g = np.array([rng.uniform(-0.7, 0.7) * wall_w, rng.uniform(0.1, 0.75) * wall_d,
                  rng.uniform(-90, 90)])
    r = rng.uniform(6, 22, size=3)
    cv.paint(_ellipse(bx - g[0], by - g[1], r[0], r[1]) + ((bz - g[2]) / r[2]) ** 2 <= 1, "gas")

  # --- vertebrae and discs ------------------------------------------------------------------------
  cortex = 1.8
  for level, zc in enumerate(z_levels):  # level 0 = L1 (top) .. 4 = L5
    grow = 1.0 + 0.05 * level
    rw, rd = rng.uniform(19, 23) * grow, rng.uniform(14.5, 17) * grow  # body semi-axes, mm
    hb = body_h / 2
    rot = tilt(zc)
    u, n, t = cv.local(world(centre(zc)), pose @ rot)  # u right, n anterior, t superior
    waist = 1 - 0.07 * (1 - (t / hb) ** 2)  # concave sides
    body = (_ellipse(u, n, rw * waist, rd * waist) <= 1) & (np.abs(t) <= hb)
    inner = (_ellipse(u, n, rw * waist - cortex, rd * waist - cortex) <= 1) & \
        (np.abs(t) <= hb - cortex)
    # Neural arch: an elliptical ring behind the body (pedicles + laminae), canal inside.
    cn = -rd - 9.5 * grow
    canal = _ellipse(u, n - cn, 10.5 * grow, 8.0 * grow) <= 1
    ring = (_ellipse(u, n - cn, 16 * grow, 13.5 * grow) <= 1) & ~canal & (n < -rd + 3) & \
        (np.abs(t - 2) <= 7.5)
    spinous = (np.abs(u) <= 3.2) & (n <= cn - 10) & (n >= cn - 40 * grow) & \
        (np.abs(t - 0.35 * (n - cn) + 2) <= 8)
    transverse = (np.abs(u) >= 12) & (np.abs(u) <= 30 + 6 * grow) & \
        (_ellipse(n - cn - 4, t - 2, 4.5, 4.0) <= 1)
    arch = ring | spinous | transverse
    cv.paint(canal & (np.abs(t) <= hb + disc_h), "csf")
    cv.paint(body | arch, "cortical")
    cv.paint(inner, "cancellous")
    cv.paint(arch & ~ndimage.binary_erosion(arch, iterations=1) & ~body, "cortical")
    cv.paint(ndimage.binary_erosion(arch, iterations=max(1, int(round(2.0 / spacing_mm)))) & ~body,
             "cancellous")
    if level < n_vert - 1:  # disc between this vertebra and the next one down
      zd = zc - pitch / 2
      ud, nd, td = cv.local(world(centre(zd)), pose @ tilt(zd))
      disc = (_ellipse(ud, nd, rw * 1.02, rd * 1.02) <= 1) & (np.abs(td) <= disc_h / 2 + 0.5)
      cv.paint(disc, "disc")

  # --- pedicle screws and rods at two adjacent levels ---------------------------------------------
  if implants:
    top = int(rng.integers(1, n_vert - 1))
    heads = []
    for level in (top, top + 1):
      zc = z_levels[level]
      rot = tilt(zc)
      rd = 16 * (1.0 + 0.05 * level)
      for side in (-1, 1):
        entry = np.array([side * 22.0, -rd - 14.0, 0.0])  # posterior, lateral
        aim = np.array([-side * np.sin(np.deg2rad(15)), np.cos(np.deg2rad(15)), 0.0])
        u, n, t = cv.local(world(centre(zc) + rot @ entry), pose @ rot @ np.column_stack(
            [aim, np.cross([0, 0, 1.0], aim), [0, 0, 1.0]]))
        screw = (u >= -8) & (u <= 45) & (n ** 2 + t ** 2 <= 3.2 ** 2)
        cv.paint(screw, "metal")
        heads.append(centre(zc) + rot @ entry)
    for side_i in (0, 1):  # rods join the screw heads of each side
      a, b = heads[side_i], heads[side_i + 2]
      axis = (b - a) / np.linalg.norm(b - a)
      basis = np.linalg.qr(np.column_stack([axis, [1.0, 0, 0], [0, 1.0, 0]]))[0]
      u, n, t = cv.local(world((a + b) / 2), pose @ basis)
      cv.paint((np.abs(u) <= np.linalg.norm(b - a) / 2 + 6) & (n ** 2 + t ** 2 <= 2.8 ** 2), "metal")

  # --- HU with texture, partial-volume blur and noise ---------------------------------------------
  lut = np.zeros(max(LABELS.values()) + 1, np.float32)
  for name, value in LABELS.items():
    lut[value] = _HU[name]
  hu = lut[cv.labels]
  tissue = (cv.labels != LABELS["air"]) & (cv.labels != LABELS["metal"])
  texture = ndimage.gaussian_filter(tex_rng.standard_normal(hu.shape).astype(np.float32),
                                    sigma=max(0.7, 3.0 / spacing_mm))
  texture /= texture.std() + 1e-6
  bone = (cv.labels == LABELS["cancellous"]) | (cv.labels == LABELS["cortical"])
  hu += np.where(bone, 60.0, 10.0) * texture * tissue
  hu = ndimage.gaussian_filter(hu, sigma=0.6 / spacing_mm * 1.5)
  hu += noise_hu * tex_rng.standard_normal(hu.shape).astype(np.float32) * (cv.labels != LABELS["air"])
  hu = np.clip(hu, -1024.0, 4096.0).astype(np.float32)
  desc = f"lumbar_phantom(seed={seed}, shape={list(shape)}, spacing_mm={spacing_mm})"
  vol = Volume(hu, cv.affine, source=desc,
               history=({"op": "lumbar_phantom", "seed": int(seed), "shape": list(cv.labels.shape),
                         "spacing_mm": float(spacing_mm), "implants": bool(implants)},))
  return Phantom(vol, cv.labels)
