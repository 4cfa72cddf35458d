"""The DRR projector against closed-form line integrals, finite differences, and its conventions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from cvaa_jax import drr
from cvaa_jax.errors import InputError

N, SP = 64, 3.0  # 64^3 voxels of 3 mm: a 192 mm box; the sphere radius is 20 voxels
SPACING = np.full(3, SP)
ORIGIN = -(N - 1) / 2 * SPACING
MU = 0.02


def _voxelise(inside, sub=4):
  """Partial-volume occupancy of `inside(x, y, z)` (world mm), sub^3 samples per voxel."""
  ax = ORIGIN[0] + np.arange(N) * SP
  x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
  occ = np.zeros((N, N, N))
  offs = ((np.arange(sub) + 0.5) / sub - 0.5) * SP
  for a in offs:
    for b in offs:
      for c in offs:
        occ += inside(x + a, y + b, z + c)
  return occ / sub ** 3


def _rays(g):
  pix = np.array(g.pixel_centers(), np.float64).reshape(-1, 3)
  if g.parallel:
    d = np.array(g.detector_center - g.source, np.float64)
    return pix - 1e4 * d / np.linalg.norm(d), np.broadcast_to(d / np.linalg.norm(d), pix.shape)
  s = np.broadcast_to(np.array(g.source, np.float64), pix.shape)
  d = pix - s
  return s, d / np.linalg.norm(d, axis=1, keepdims=True)


def _ellipsoid_chords(g, center, radii, rot):
  """Chord length of each ray through the ellipsoid {x: |diag(1/r) R^T (x - c)| <= 1}."""
  o, d = _rays(g)
  m = np.diag(1 / np.asarray(radii)) @ rot.T
  o2, d2 = (o - center) @ m.T, d @ m.T
  a, b, c = (d2 ** 2).sum(1), 2 * (o2 * d2).sum(1), (o2 ** 2).sum(1) - 1
  disc = b ** 2 - 4 * a * c
  chord = np.sqrt(np.maximum(disc, 0)) / a  # (t2 - t1) for unit-length world directions
  return chord.reshape(g.shape), disc.reshape(g.shape)


def _box_chords(g, center, half, rot):
  o, d = _rays(g)
  o2, d2 = (o - center) @ rot, d @ rot
  d2 = np.where(np.abs(d2) < 1e-12, 1e-12, d2)
  t0, t1 = (-half - o2) / d2, (half - o2) / d2
  t_in, t_out = np.minimum(t0, t1).max(1), np.maximum(t0, t1).min(1)
  return np.maximum(t_out - t_in, 0).reshape(g.shape)


def _rot_z(deg):
  t = np.deg2rad(deg)
  return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])


GEOMETRIES = {
    f"{kind}-{view}": drr.fov_matched(192.0, (64, 64), parallel=(kind == "parallel"), view=view)
    for kind in ("cone", "parallel") for view in ("ap", "lateral", 30.0)
}


@pytest.fixture(scope="module")
def sphere():
  c, r = np.array([6.0, -5.0, 3.0]), 60.0
  occ = _voxelise(lambda x, y, z: ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) <= r * r)
  return jnp.asarray(occ * MU, jnp.float32), c, r


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_sphere_matches_closed_form(sphere, name):
  vol, c, r = sphere
  g = GEOMETRIES[name]
  img = np.asarray(jax.jit(lambda v: drr.project(v, SPACING, ORIGIN, g))(vol), np.float64)
  chord, _ = _ellipsoid_chords(g, c, (r, r, r), np.eye(3))
  ref = MU * chord
  o, d = _rays(g)
  dist = np.linalg.norm(np.cross(c - o, d), axis=1).reshape(g.shape)
  inner = dist < 0.85 * r  # interior: where the chord does not hinge on the blurred edge
  rel = np.abs(img - ref)[inner] / ref[inner]
  assert rel.max() <= 0.02 and rel.mean() <= 0.005, (rel.max(), rel.mean())
  miss = dist > r + 2 * SP * np.sqrt(3)  # beyond the partial-volume and interpolation reach
  assert np.all(img[miss] == 0.0)
  # No sub-pixel shift and no magnification error: first and second moments of the image.
  rr, cc = np.indices(g.shape)
  moment = lambda im: np.array([(im * rr).sum(), (im * cc).sum()]) / im.sum()
  np.testing.assert_allclose(moment(img), moment(ref), atol=0.1)
  spread = lambda im: np.sqrt((im * ((rr - moment(im)[0]) ** 2 + (cc - moment(im)[1]) ** 2)).sum()
                              / im.sum())
  assert abs(spread(img) / spread(ref) - 1) <= 0.003


@pytest.mark.parametrize("name", ["cone-ap", "parallel-lateral", "cone-30.0"])
def test_rotated_ellipsoid_and_cube_match_closed_form(name):
  g = GEOMETRIES[name]
  rot = _rot_z(25.0) @ np.array([[1, 0, 0], [0, np.cos(0.4), -np.sin(0.4)],
                                 [0, np.sin(0.4), np.cos(0.4)]])
  c, radii = np.array([-4.0, 7.0, -6.0]), np.array([70.0, 40.0, 55.0])

  def in_ellipsoid(x, y, z):
    p = np.stack([x - c[0], y - c[1], z - c[2]], -1) @ rot
    return ((p / radii) ** 2).sum(-1) <= 1

  half = np.array([45.0, 45.0, 45.0])

  def in_cube(x, y, z):
    p = np.stack([x - c[0], y - c[1], z - c[2]], -1) @ rot
    return np.all(np.abs(p) <= half, axis=-1)

  for inside, chords, piecewise_linear in [
      (in_ellipsoid, lambda: _ellipsoid_chords(g, c, radii, rot)[0], False),
      (in_cube, lambda: _box_chords(g, c, half, rot), True)]:
    vol = jnp.asarray(_voxelise(inside) * MU, jnp.float32)
    img = np.asarray(drr.project(vol, SPACING, ORIGIN, g), np.float64)
    ref = MU * chords()
    # Interior: rays whose chord is >= 60 % of its maximum and at least 2 px away from a kink of the
    # closed form (a cube's projected edges), where voxelisation blurs the answer over ~1 voxel.
    lap = np.zeros_like(ref)
    lap[1:-1, 1:-1] = (np.abs(ref[2:, 1:-1] + ref[:-2, 1:-1] - 2 * ref[1:-1, 1:-1]) +
                       np.abs(ref[1:-1, 2:] + ref[1:-1, :-2] - 2 * ref[1:-1, 1:-1]))
    kinks = ndimage.binary_dilation(lap > 1e-3 * ref.max(), iterations=2) & piecewise_linear
    inner = (ref > 0.6 * ref.max()) & ~kinks
    assert inner.sum() > 100
    rel = np.abs(img - ref)[inner] / ref[inner]
    assert rel.max() <= 0.02 and rel.mean() <= 0.005, (inside.__name__, rel.max(), rel.mean())
    np.testing.assert_allclose(img.sum(), ref.sum(), rtol=0.005)


def test_joseph_and_raymarch_agree(sphere):
  vol = sphere[0]
  for g in drr.biplanar((32, 40), pixel_size=6.0):
    a = drr.project(vol, SPACING, ORIGIN, g, method="joseph")
    b = drr.project(vol, SPACING, ORIGIN, g, method="raymarch", chunk=333)
    np.testing.assert_allclose(a, b, rtol=0.01, atol=1e-3 * float(jnp.max(a)))


def test_batched_with_vmap_equals_loop(sphere):
  vols = jnp.stack([sphere[0], sphere[0][::-1], sphere[0] * 0.5])
  g = GEOMETRIES["cone-ap"]
  batched = jax.jit(jax.vmap(lambda v: drr.project(v, SPACING, ORIGIN, g)))(vols)
  for i in range(3):
    np.testing.assert_allclose(batched[i], drr.project(vols[i], SPACING, ORIGIN, g), rtol=1e-5,
                               atol=1e-6)


HOST_CASES = {**{k: GEOMETRIES[k] for k in ("cone-ap", "cone-lateral", "parallel-ap",
                                             "parallel-lateral")},
              # detector pixels 2.5x finer than the voxels (many samples per voxel row) and
              # 2x coarser (samples skip voxels), off-centre
              "fine-detector": drr.cone_beam("ap", (150, 140), pixel_size=1.6),
              "coarse-detector": drr.cone_beam("lateral", (40, 36), pixel_size=8.0,
                                               isocenter=(10.0, -7.0, 5.0))}


@pytest.mark.parametrize("name", sorted(HOST_CASES))
def test_host_plan_matches_traced_dense_path(sphere, name):
  """Concrete geometry: gathers planned on the host with a gather-only custom gradient; traced
  (passed into jit): dense hat matrices built in the program with autodiff. Images and gradients
  must agree, and a geometry built inside jit must stay concrete."""
  g = HOST_CASES[name]
  vol = sphere[0]
  host = drr.project(vol, SPACING, ORIGIN, g)
  traced = jax.jit(lambda v, g: drr.project(v, SPACING, ORIGIN, g))(vol, g)
  assert float(jnp.max(host)) > 0
  np.testing.assert_allclose(host, traced, rtol=1e-4, atol=1e-5 * float(jnp.max(host)))
  cot = jnp.asarray(np.random.default_rng(0).normal(size=g.shape), jnp.float32)
  grad_host = jax.grad(lambda v: jnp.sum(cot * drr.project(v, SPACING, ORIGIN, g)))(vol)
  grad_traced = jax.jit(jax.grad(lambda v, g: jnp.sum(cot * drr.project(v, SPACING, ORIGIN, g))))(
      vol, g)
  scale = float(jnp.max(jnp.abs(grad_traced)))
  assert scale > 0
  np.testing.assert_allclose(grad_host, grad_traced, rtol=1e-4, atol=1e-5 * scale)
  batched = jax.vmap(jax.grad(lambda v: jnp.sum(cot * drr.project(v, SPACING, ORIGIN, g))))(
      jnp.stack([vol, 2 * vol]))
  np.testing.assert_allclose(batched[1], grad_host, rtol=1e-5, atol=1e-6 * scale)  # linear

  if name in GEOMETRIES:
    def built_inside(v):
      g_in = drr.fov_matched(192.0, (64, 64), parallel=g.parallel, view=name.split("-")[1])
      assert not isinstance(g_in.source, jax.core.Tracer)
      return drr.project(v, SPACING, ORIGIN, g_in)

    np.testing.assert_allclose(jax.jit(built_inside)(vol), host, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["joseph", "raymarch"])
def test_gradient_matches_finite_differences(method):
  n, sp = 10, np.full(3, 6.0)
  org = -(n - 1) / 2 * sp
  rng = np.random.default_rng(0)
  vol = jnp.asarray(rng.uniform(0, 0.03, (n, n, n)), jnp.float32)
  g = drr.cone_beam("ap", (12, 12), pixel_size=7.0)
  weight = jnp.asarray(rng.uniform(0.5, 1.5, (12, 12)), jnp.float32)
  loss = lambda v: jnp.sum(weight * drr.intensity(drr.project(v, sp, org, g, method=method)))
  grad = jax.grad(loss)(vol)
  for seed in range(3):
    d = jnp.asarray(np.random.default_rng(seed + 1).normal(size=vol.shape), jnp.float32)
    eps = 1e-3
    fd = (loss(vol + eps * d) - loss(vol - eps * d)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.vdot(grad, d)), float(fd), rtol=2e-2)
  assert float(jnp.abs(grad).min()) >= 0 and float(jnp.abs(grad).max()) > 0


def test_image_orientation_conventions():
  """A bright voxel at the patient's right, anterior, superior shows where docs/conventions.md says."""
  vol = np.zeros((N, N, N), np.float32)
  vol[N - 10, N - 12, N - 8] = 1.0  # RAS: +x right, +y anterior, +z superior
  ap, lat = (np.asarray(drr.project(jnp.asarray(vol), SPACING, ORIGIN, g))
             for g in drr.biplanar((64, 64), pixel_size=SP, parallel=True))
  r, c = np.unravel_index(np.argmax(ap), ap.shape)
  assert r < 32 and c < 32  # superior = top; patient's right on the image's left (AP)
  r, c = np.unravel_index(np.argmax(lat), lat.shape)
  assert r < 32 and c >= 32  # superior = top; anterior on the right (left lateral, seen from source)
  # Exact pixel (parallel beam, 4 mm pixels on 4 mm voxels, 64 px over a 48-voxel box): the voxel's
  # world position lands on the pixel centre the geometry formula gives.
  xyz = ORIGIN + SP * np.array([N - 10, N - 12, N - 8])
  for img, g in zip((ap, lat), drr.biplanar((64, 64), pixel_size=SP, parallel=True)):
    rel = xyz - np.asarray(g.detector_center)
    expect = (rel @ np.asarray(g.v) / SP + 31.5, rel @ np.asarray(g.u) / SP + 31.5)
    np.testing.assert_allclose(np.unravel_index(np.argmax(img), img.shape), expect, atol=0.51)


@pytest.mark.parametrize("case,match", [
    ("2d", "must be 3D"),
    ("nan", "NaN"),
    ("spacing", "spacing must be positive"),
    ("source_inside", "source lies inside"),
    ("detector", "detector shape"),
    ("method", "unknown method"),
])
def test_bad_input_is_a_clear_error(case, match):
  vol = jnp.zeros((8, 8, 8))
  g = drr.cone_beam("ap", (8, 8))
  with pytest.raises(InputError, match=match):
    if case == "2d":
      drr.project(jnp.zeros((8, 8)), SPACING, ORIGIN, g)
    elif case == "nan":
      drr.project(vol.at[1, 1, 1].set(jnp.nan), SPACING, ORIGIN, g)
    elif case == "spacing":
      drr.project(vol, (1.0, 0.0, 1.0), ORIGIN, g)
    elif case == "source_inside":
      drr.project(vol, (200.0,) * 3, (-700.0,) * 3, g)
    elif case == "detector":
      drr.cone_beam("ap", (0, 8))
    elif case == "method":
      drr.project(vol, SPACING, ORIGIN, g, method="siddon")


@pytest.mark.parametrize("case,match", [
    ("non_unit_u", "orthogonal unit vectors"),
    ("non_orthogonal", "orthogonal unit vectors"),
    ("aligned_mismatch", "aligned_axis=1 does not match"),
    ("parallel_no_direction", "no direction"),
])
def test_bad_geometry_is_a_clear_error(case, match):
  vol = jnp.zeros((8, 8, 8))
  g = drr.cone_beam("ap", (8, 8))
  if case == "non_unit_u":
    g = g.replace(u=np.float32([-2.0, 0.0, 0.0]))
  elif case == "non_orthogonal":
    g = g.replace(v=np.float32([0.6, 0.0, -0.8]))
  elif case == "aligned_mismatch":  # a lateral's detector labelled as facing y
    g = drr.cone_beam("lateral", (8, 8)).replace(aligned_axis=1)
  elif case == "parallel_no_direction":
    g = drr.parallel_beam("ap", (8, 8)).replace(source=np.float32([0.0, 0.0, 0.0]))
  with pytest.raises(InputError, match=match):
    drr.project(vol, SPACING, ORIGIN, g)


@pytest.mark.parametrize("method", ["joseph", "raymarch"])
@pytest.mark.parametrize("traced", [False, True])
def test_cone_rays_run_from_the_source_to_the_detector_only(method, traced):
  """Matter behind the source or beyond the detector is not on any ray (it used to show)."""
  g = drr.cone_beam("ap", (16, 16), 4.0, sid=300.0, sdd=400.0)  # source y=+300, detector y=-100
  vol = jnp.full((16, 16, 16), 0.02, jnp.float32)
  sp = np.full(3, 4.0)
  render = (jax.jit(lambda v, o, g: drr.project(v, sp, o, g, method=method)) if traced else
            (lambda v, o, g: drr.project(v, sp, o, g, method=method)))
  for y0, expect_zero in ((330.0, True), (-190.0, True), (0.0, False)):
    o = np.array([-30.0, y0, -30.0])  # a 64 mm cube at y in [y0 - 2, y0 + 62]
    img = np.asarray(render(vol, o, g))
    assert (np.abs(img).max() == 0.0) == expect_zero, (y0, np.abs(img).max())


def test_parallel_raymarch_keeps_precision_with_a_traced_geometry(sphere):
  vol, c, r = sphere
  g = GEOMETRIES["parallel-30.0"]
  img = np.asarray(jax.jit(lambda v, g: drr.project(v, SPACING, ORIGIN, g))(vol, g), np.float64)
  chord, _ = _ellipsoid_chords(g, c, (r, r, r), np.eye(3))
  o, d = _rays(g)
  dist = np.linalg.norm(np.cross(c - o, d), axis=1).reshape(g.shape)
  inner = dist < 0.85 * r
  rel = np.abs(img - MU * chord)[inner] / (MU * chord)[inner]
  assert rel.max() <= 0.02 and rel.mean() <= 0.005, (rel.max(), rel.mean())
