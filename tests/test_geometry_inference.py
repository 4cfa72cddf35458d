"""Geometry-aware reconstruction: acquisition geometry from files and flags, sides and mirrors,
placement in the patient frame, and the errors for geometry that cannot be used."""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from cvaa_jax import acquisition, drr, make_example, reconstruct, xray_io
from cvaa_jax.errors import InputError
from cvaa_jax.models import projection
from tests.conftest import ROOT

REF = acquisition.Reference(parallel=False, sid=750.0, sdd=1000.0, fov_mm=256.0, size=16)
ISO = np.array([30.0, -20.0, 15.0])


def _scene(iso=ISO, n=40, sp=8.0, marker=None):
  """An attenuation volume (n^3 voxels of sp mm) centred on `iso`: an off-centre, asymmetric body
  (so mirrors and magnification show), or only a bright cube at world position `marker`."""
  x = (np.arange(n) - (n - 1) / 2.0) * sp
  gx, gy, gz = np.meshgrid(x, x, x, indexing="ij")
  if marker is None:
    mu = 0.02 * np.exp(-((gx - 15) ** 2 / 80 ** 2 + (gy + 10) ** 2 / 60 ** 2 + gz ** 2 / 100 ** 2))
    mu += 0.05 * np.exp(-((gx - 60) ** 2 + (gy - 30) ** 2 + (gz - 40) ** 2) / 25 ** 2)
    mu += 0.04 * np.exp(-((gx + 30) ** 2 + (gy + 50) ** 2 + (gz + 50) ** 2) / 15 ** 2)
  else:
    off = np.asarray(marker) - iso
    mu = 0.001 + 0.5 * ((np.abs(gx - off[0]) < sp) & (np.abs(gy - off[1]) < sp) &
                        (np.abs(gz - off[2]) < sp))
  return mu.astype(np.float32), np.full(3, sp), iso - (n - 1) / 2.0 * sp


def _render(scene, geometry):
  mu, sp, origin = scene
  return np.asarray(drr.project(mu, sp, origin, geometry), np.float64)


def _nifti(path, img, geometry, **kw):
  return xray_io.write_nifti2d(path, img, geometry, **kw)


def _png(path, pixels):
  return xray_io.write_png16(path, pixels)


def _flags(**per_view):
  return {v: dict(per_view.get(v, {})) for v in ("frontal", "lateral")}


# --- the canonical view: lifting and rendering with per-sample geometry -------------------------


@pytest.mark.parametrize("view", ["ap", "lateral"])
@pytest.mark.parametrize("parallel", [False, True])
def test_traced_geometry_lift_and_render_equal_the_fixed_view(view, parallel):
  spec = projection.ViewSpec(view, parallel, 256.0, 750.0, 1000.0)
  feats = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
  fixed = projection.expand(feats, spec)
  traced = projection.expand(feats, spec, inv_sid=np.full(2, spec.inv_sid, np.float32))
  np.testing.assert_allclose(traced, fixed, atol=1e-5)
  mu = np.random.default_rng(1).random((16, 16, 16)).astype(np.float32)
  sp, origin = projection.grid(16, 256.0)
  ref = np.asarray(drr.project(mu, sp, origin, spec.geometry(16)))
  import jax  # pylint: disable=g-import-not-at-top
  canon = jax.jit(lambda k: drr.project(mu, sp, origin, projection.canonical_geometry(
      view, 16, 256.0, k)))(np.float32(spec.inv_sid))
  np.testing.assert_allclose(canon, ref, rtol=2e-4, atol=2e-4 * ref.max())


@pytest.mark.parametrize("view,side,theta", [("frontal", "pa", "pa"),
                                             ("lateral", "right", "right_lateral")])
def test_opposite_side_cone_view_is_mapped_with_its_own_magnification(view, side, theta):
  """A PA / right-lateral cone image, mirrored into the model's orientation, equals the render of the
  canonical view with the source on the other side (kappa = -1/SID), not the naive mirror."""
  scene = _scene()
  sid, sdd = 600.0, 900.0
  pitch = REF.fov_mm / REF.size * sdd / sid  # one detector pixel per model pixel: exact sampling
  img = _render(scene, drr.cone_beam(theta, (16, 16), pitch, sid=sid, sdd=sdd, isocenter=ISO))
  acq = acquisition.resolve(view, img.shape, {}, {"side": side, "sid": sid, "sdd": sdd,
                                                  "pixel_mm": pitch}, REF, "x")
  assert acq.inv_sid == pytest.approx(-1 / sid)
  got = acquisition.to_canonical_view(img, acq, REF)
  mu, sp, origin = scene
  cview = "ap" if view == "frontal" else "lateral"
  want = _render((mu, sp, origin - ISO), projection.canonical_geometry(cview, 16, 256.0, -1 / sid))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * want.max())
  same_side = _render((mu, sp, origin - ISO), projection.canonical_geometry(cview, 16, 256.0,
                                                                            1 / sid))
  assert np.abs(same_side - want).mean() > 0.02 * want.mean()  # the side matters for cone beams
  # A 2x finer detector lands on the same canonical image up to its anti-aliasing.
  fine = _render(scene, drr.cone_beam(theta, (32, 32), pitch / 2, sid=sid, sdd=sdd, isocenter=ISO))
  acq2 = acquisition.resolve(view, fine.shape, {}, {"side": side, "sid": sid, "sdd": sdd,
                                                    "pixel_mm": pitch / 2}, REF, "x")
  got2 = acquisition.to_canonical_view(fine, acq2, REF)
  assert np.abs(got2 - want).mean() < 0.03 * want.max()
  assert np.corrcoef(got2.ravel(), want.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("view,side,other,theta,theta_other", [
    ("frontal", "pa", "ap", "pa", "ap"), ("lateral", "right", "left", "right_lateral", "lateral")])
def test_parallel_opposite_side_equals_the_mirrored_view(tmp_path, tiny_workdir, view, side, other,
                                                         theta, theta_other):
  scene = _scene()
  g = drr.parallel_beam(theta, (24, 24), 12.0, isocenter=ISO)
  g_other = drr.parallel_beam(theta_other, (24, 24), 12.0, isocenter=ISO)
  img, img_other = _render(scene, g), _render(scene, g_other)
  np.testing.assert_allclose(img, img_other[:, ::-1], atol=1e-5 * img.max())  # the renderer
  keep = "lateral" if view == "frontal" else "frontal"
  keep_g = drr.parallel_beam("lateral" if keep == "lateral" else "ap", (24, 24), 12.0,
                             isocenter=ISO)
  keep_file = _nifti(tmp_path / "keep.nii.gz", _render(scene, keep_g), keep_g, beam="parallel")
  rec = reconstruct.Reconstructor(tiny_workdir, "latest")
  outs = []
  for name, im, s in (("opposite", img, side), ("canonical", img_other, other)):
    path = _png(tmp_path / f"{name}.png", xray_io.to_uint16(im))
    fl = _flags(**{view: {"side": s, "beam": "parallel", "pixel_mm": "12"}})
    files = {view: path, keep: keep_file}
    pair = reconstruct.prepare_pair(files["frontal"], files["lateral"], REF, fl)
    assert pair.geometry.tolist() == [0.0, 0.0]
    outs.append((pair, rec(pair.frontal, pair.lateral, pair.geometry)[0]))
  (p1, v1), (p2, v2) = outs
  np.testing.assert_allclose(getattr(p1, view), getattr(p2, view), atol=2 / 65535)
  np.testing.assert_allclose(v1, v2, atol=1e-4)


# --- geometry from files ------------------------------------------------------------------------


def test_dicom_tags_reconstruct_like_png_with_flags(tmp_path, tiny_workdir):
  """A PA + right lateral pair at SID 1000 / SDD 1500 on a non-square 8 mm detector: the DICOM
  files' tags and the same pixels as PNG with the geometry as flags give the same volume."""
  scene = _scene()
  sid, sdd, pitch, shape = 1000.0, 1500.0, 8.0, (40, 48)
  paths, flags_png = {}, _flags()
  for view, theta, position, side in (("frontal", "pa", "PA", "pa"),
                                      ("lateral", "right_lateral", "RL", "right")):
    g = drr.cone_beam(theta, shape, pitch, sid=sid, sdd=sdd, isocenter=ISO)
    pixels = xray_io.to_uint16(_render(scene, g))
    orient = acquisition.AS_SEEN_FROM_SOURCE[side]
    paths[view] = (xray_io.write_dicom_dx(tmp_path / f"{view}.dcm", pixels,
                                          view_position=position, orientation=orient,
                                          pixel_mm=(pitch, pitch), sid=sid, sdd=sdd),
                   _png(tmp_path / f"{view}.png", pixels))
    flags_png[view] = {"sid": sid, "sdd": sdd, "pixel_mm": f"{pitch},{pitch}", "side": side}
  rec = reconstruct.Reconstructor(tiny_workdir, "latest")
  d = reconstruct.prepare_pair(paths["frontal"][0], paths["lateral"][0], REF)
  p = reconstruct.prepare_pair(paths["frontal"][1], paths["lateral"][1], REF, flags_png)
  np.testing.assert_array_equal(d.frontal, p.frontal)
  np.testing.assert_array_equal(d.lateral, p.lateral)
  np.testing.assert_allclose(d.geometry, [-1 / sid, -1 / sid], rtol=1e-6)
  vd, _ = rec(d.frontal, d.lateral, d.geometry)
  vp, _ = rec(p.frontal, p.lateral, p.geometry)
  np.testing.assert_allclose(vd, vp, atol=1e-6)
  src = d.report["lateral"]["sources"]
  assert src["sdd"].startswith("tag DistanceSourceToDetector") and "RL" in src["side"]
  assert src["orientation"].startswith("tag PatientOrientation")
  assert p.report["lateral"]["sources"]["sid"] == "flag --lateral_sid"
  assert "default" in d.report["iso_source"]
  # The result differs from treating the pair as the training geometry (AP / left, SID 750).
  naive = reconstruct.prepare_pair(paths["frontal"][1], paths["lateral"][1], REF)
  assert np.abs(naive.frontal - p.frontal).mean() > 0.01


@pytest.mark.parametrize("sides", [("ap", "left"), ("pa", "right")])
def test_nifti_pairs_are_read_through_their_affines(tmp_path, sides):
  """The renderer's own 2-D NIfTI export round-trips: pitch and orientation from the affine, the
  isocentre where the central rays meet, the sides from where the detectors lie."""
  scene = _scene()
  sid, sdd = 800.0, 1200.0
  theta = {"ap": "ap", "pa": "pa", "left": "lateral", "right": "right_lateral"}
  files_nii, files_png, fl = {}, {}, _flags()
  for view, side in zip(("frontal", "lateral"), sides):
    g = drr.cone_beam(theta[side], (32, 32), 10.0, sid=sid, sdd=sdd, isocenter=ISO)
    pixels = xray_io.to_uint16(_render(scene, g))
    files_nii[view] = _nifti(tmp_path / f"{view}.nii.gz", pixels, g)  # affine only, no description
    files_png[view] = _png(tmp_path / f"{view}.png", pixels)
    fl[view] = {"sid": sid, "sdd": sdd, "pixel_mm": "10", "side": side}
  geo_flags = _flags(frontal={"sid": sid, "sdd": sdd}, lateral={"sid": sid, "sdd": sdd})
  n = reconstruct.prepare_pair(files_nii["frontal"], files_nii["lateral"], REF, geo_flags)
  p = reconstruct.prepare_pair(files_png["frontal"], files_png["lateral"], REF, fl)
  np.testing.assert_allclose(n.iso, ISO, atol=1e-3)
  assert "central rays" in n.report["iso_source"]
  assert [n.report[v]["values"]["side"] for v in ("frontal", "lateral")] == list(sides)
  assert n.report["frontal"]["sources"]["side"] == "detector position in the NIfTI affine"
  np.testing.assert_array_equal(n.frontal, p.frontal)
  np.testing.assert_array_equal(n.lateral, p.lateral)
  # The same image stored bottom-up (j pointing up) reads the same through its affine.
  img = nib.load(str(files_nii["frontal"]))
  aff = img.affine.copy()
  data = np.asarray(img.dataobj)[:, ::-1]
  aff[:3, 3] = aff[:3, 3] + aff[:3, 1] * (data.shape[1] - 1)
  aff[:3, 1] = -aff[:3, 1]
  flipped = nib.Nifti1Image(data, aff)
  flipped.set_sform(aff, code=1)
  nib.save(flipped, str(tmp_path / "frontal_up.nii.gz"))
  u = reconstruct.prepare_pair(tmp_path / "frontal_up.nii.gz", files_nii["lateral"], REF, geo_flags)
  np.testing.assert_array_equal(u.frontal, n.frontal)


# --- placement in the patient frame -------------------------------------------------------------


def _back_projector(rec):
  """A stand-in generator: the product of the two views' geometric lifts (peaks where a bright
  spot seen in both views lies), to test geometry and placement without a trained model."""
  import jax  # pylint: disable=g-import-not-at-top
  specs = rec.scfg.views

  def forward(params, f, l, g):
    del params
    a = projection.expand(f[..., None], specs[0], inv_sid=g[:, 0])[..., 0]
    b = projection.expand(l[..., None], specs[1], inv_sid=g[:, 1])[..., 0]
    return a * b
  return jax.jit(forward)


@pytest.mark.parametrize("placement", ["iso_flag", "nifti_affine"])
def test_bright_marker_lands_where_it_is_in_patient_space(tmp_path, tiny_workdir, placement):
  marker = ISO + np.array([48.0, -32.0, 40.0])
  scene = _scene(marker=marker)
  sid, sdd = 600.0, 900.0
  rec = reconstruct.Reconstructor(tiny_workdir, "latest")
  rec.forward = _back_projector(rec)
  files, fl = {}, _flags()
  for view, theta, side in (("frontal", "pa", "pa"), ("lateral", "right_lateral", "right")):
    g = drr.cone_beam(theta, (48, 48), 8.0, sid=sid, sdd=sdd, isocenter=ISO)
    img = _render(scene, g)
    files[view] = _nifti(tmp_path / f"{view}.nii.gz", img, g, beam="cone", sid=sid, side=side) \
        if placement == "nifti_affine" else _png(tmp_path / f"{view}.png", xray_io.to_uint16(img))
    fl[view] = {} if placement == "nifti_affine" else {"sid": sid, "sdd": sdd, "pixel_mm": "8",
                                                       "side": side}
  iso = ISO if placement == "iso_flag" else None
  out = tmp_path / "ct.nii.gz"
  result = reconstruct.reconstruct_pair(rec, files["frontal"], files["lateral"], out,
                                        png=False, flags_by_view=fl, iso=iso)
  vol = nib.load(str(out))
  idx = np.unravel_index(np.argmax(vol.get_fdata()), vol.shape)
  found = (vol.affine @ np.append(idx, 1.0))[:3]
  spacing = float(vol.header.get_zooms()[0])
  assert np.all(np.abs(found - marker) <= spacing * 0.75), (found, marker)
  np.testing.assert_allclose(result["geometry"]["iso"], ISO, atol=1e-3)


# --- bad geometry and bad pairs: one line naming the file ---------------------------------------


@pytest.fixture()
def good_pair(tmp_path):
  scene = _scene()
  out = {}
  for view, theta in (("frontal", "ap"), ("lateral", "lateral")):
    g = drr.cone_beam(theta, (32, 32), 12.0, isocenter=ISO)
    out[view] = _png(tmp_path / f"{view}.png", xray_io.to_uint16(_render(scene, g)))
  return out["frontal"], out["lateral"]


# The test writes a NaN distance tag on purpose; pydicom warns while writing it.
@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_bad_geometry_and_bad_pairs_are_named(tmp_path, good_pair):
  fr, la = good_pair

  def fails(match, f=fr, l=la, ref=REF, **kw):
    with pytest.raises(InputError, match=match) as e:
      reconstruct.prepare_pair(f, l, ref, kw.get("flags"))
    assert str(kw.get("names", f)) in str(e.value)
    assert "\n" not in str(e.value)

  fails("not larger than SID", flags=_flags(frontal={"sid": 900.0, "sdd": 800.0}))
  fails("must be a positive", flags=_flags(frontal={"pixel_mm": "-0.5"}))
  fails("given as both", l=fr)
  copy = tmp_path / "copy.png"
  copy.write_bytes(fr.read_bytes())
  fails("same image", l=copy)
  tiff = tmp_path / "multi.tif"
  a = np.asarray(Image.open(fr))
  Image.fromarray(a).save(tiff, save_all=True, append_images=[Image.fromarray(a[::-1])])
  fails("pages", f=tiff, names=tiff)
  fails("smaller than the model", ref=acquisition.Reference(False, 750.0, 1000.0, 256.0, 64))
  other = _png(tmp_path / "other.png", np.asarray(Image.open(la))[:26])
  fails("different pixel grids", l=other)
  fails("does not lie in a frontal image plane", flags=_flags(frontal={"orientation": "A,F"}))
  pixels = np.asarray(Image.open(la))
  vague = xray_io.write_dicom_dx(tmp_path / "lat.dcm", pixels, view_position="LATERAL",
                                 orientation=("A", "F"), pixel_mm=(12.0, 12.0), sid=None, sdd=None)
  fails("does not say which side", l=vague, names=vague)
  ok = reconstruct.prepare_pair(fr, vague, REF, _flags(lateral={"side": "left"}))
  assert ok.report["lateral"]["sources"]["side"] == "flag --lateral_side"
  import pydicom  # pylint: disable=g-import-not-at-top
  ds = pydicom.dcmread(str(vague))
  ds.ViewPosition, ds.DistanceSourceToDetector = "LL", "NaN"
  ds.save_as(str(tmp_path / "nan.dcm"))
  fails("DistanceSourceToDetector", l=tmp_path / "nan.dcm", names=tmp_path / "nan.dcm")


# --- the example pair and the command line ------------------------------------------------------


def test_make_example_then_reconstruct_cli_records_the_geometry(tmp_path, tiny_workdir):
  ex = tmp_path / "example"
  info = make_example.make_example(ex, size=32, spacing_mm=8.0, detector_px=160, pitch_mm=2.5)
  for name in ("frontal", "lateral"):
    for suffix in (".dcm", ".png", ".nii.gz"):
      assert (ex / f"{name}{suffix}").stat().st_size > 1000
  truth = nib.load(str(ex / "ground_truth.nii.gz"))
  np.testing.assert_allclose((truth.affine @ [15.5, 15.5, 15.5, 1])[:3], info["isocentre_mm_ras"],
                             atol=1e-2)
  iso = ",".join(str(v) for v in info["isocentre_mm_ras"])
  out = tmp_path / "out" / "ct.nii.gz"
  r = subprocess.run([sys.executable, "-m", "cvaa_jax.reconstruct", f"--workdir={tiny_workdir}",
                      "--which=latest", f"--frontal={ex / 'frontal.dcm'}",
                      f"--lateral={ex / 'lateral.dcm'}", f"--iso={iso}", f"--out={out}", "--nopng",
                      "--method=gan"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                     env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert r.returncode == 0, r.stderr[-2000:]
  assert "model:" in r.stdout and not r.stderr.strip()
  report = json.loads((out.parent / "reconstruct_report.json").read_text())[0]
  geo = report["geometry"]
  assert geo["iso_source"] == "flag --iso"
  assert geo["frontal"]["values"]["sdd"] == 1500.0
  assert geo["frontal"]["sources"]["sid"] == "tag DistanceSourceToPatient (0018,1111)"
  img = nib.load(str(out))
  np.testing.assert_allclose((img.affine @ [7.5, 7.5, 7.5, 1])[:3], info["isocentre_mm_ras"],
                             atol=1e-2)


# --- what the files leave unsaid (#33 item 7) ---------------------------------------------------


def _iso_plane_pair(tmp_path, sid=800.0, sdd=1200.0, pitch=10.0):
  """The same cone pair written twice: as PNGs (detector pitch known) and as 2-D NIfTIs laid over
  the CT (the image on the plane through the isocentre, pitch scaled to the patient)."""
  scene = _scene()
  out = {}
  for view, theta in (("frontal", "ap"), ("lateral", "lateral")):
    g = drr.cone_beam(theta, (32, 32), pitch, sid=sid, sdd=sdd, isocenter=ISO)
    pixels = xray_io.to_uint16(_render(scene, g))
    over_ct = g.replace(detector_center=ISO.astype(np.float32),
                        pixel_size=np.full(2, pitch * sid / sdd, np.float32))
    out[view] = (_png(tmp_path / f"{view}.png", pixels),
                 _nifti(tmp_path / f"{view}.nii.gz", pixels, over_ct))
  return out


def test_an_image_on_the_isocentre_plane_asks_for_its_side_and_is_read_at_that_scale(tmp_path):
  sid, sdd = 800.0, 1200.0
  files = _iso_plane_pair(tmp_path, sid, sdd)
  nii = {v: files[v][1] for v in files}
  # Nothing says which side the source was on: an error naming the file and the flag, no guess.
  with pytest.raises(InputError, match="--frontal_side") as e:
    reconstruct.prepare_pair(nii["frontal"], nii["lateral"], REF,
                             _flags(frontal={"sid": sid, "sdd": sdd},
                                    lateral={"sid": sid, "sdd": sdd}))
  assert str(nii["frontal"]) in str(e.value) and "isocentre" in str(e.value)
  # With the sides given, the affine's pitch is read as the isocentre plane's: the same canonical
  # views as the PNGs with their true detector pitch.
  geo = {"sid": sid, "sdd": sdd}
  n = reconstruct.prepare_pair(nii["frontal"], nii["lateral"], REF,
                               _flags(frontal={**geo, "side": "ap"}, lateral={**geo, "side": "left"}))
  assert n.report["frontal"]["values"]["pixel_at"] == "isocentre"
  assert "isocentre" in n.report["frontal"]["sources"]["pixel_at"]
  png = {v: files[v][0] for v in files}
  p = reconstruct.prepare_pair(png["frontal"], png["lateral"], REF,
                               _flags(frontal={**geo, "pixel_mm": "10", "side": "ap"},
                                      lateral={**geo, "pixel_mm": "10", "side": "left"}))
  np.testing.assert_allclose(n.frontal, p.frontal, atol=1e-5)
  np.testing.assert_allclose(n.lateral, p.lateral, atol=1e-5)
  # The flag says the same for a PNG: a pitch at the isocentre is magnified onto the detector.
  q = reconstruct.prepare_pair(png["frontal"], png["lateral"], REF, _flags(
      frontal={**geo, "pixel_mm": str(10 * sid / sdd), "pixel_at": "isocentre", "side": "ap"},
      lateral={**geo, "pixel_mm": str(10 * sid / sdd), "pixel_at": "isocentre", "side": "left"}))
  np.testing.assert_allclose(q.frontal, p.frontal, atol=1e-5)


def test_two_images_in_one_plane_name_both_files_and_the_flags_that_place_them(tmp_path):
  scene = _scene()
  g = drr.cone_beam("ap", (32, 32), 10.0, isocenter=ISO)
  pixels = xray_io.to_uint16(_render(scene, g))
  a = _nifti(tmp_path / "a.nii.gz", pixels, g)
  b = _nifti(tmp_path / "b.nii.gz", pixels[::-1].copy(), g)
  with pytest.raises(InputError, match="parallel planes") as e:
    reconstruct.prepare_pair(a, b, REF)
  assert str(a) in str(e.value) and str(b) in str(e.value) and "--iso" in str(e.value)


def test_values_taken_from_defaults_are_named_on_screen(tmp_path):
  scene = _scene()
  files = {}
  for view, theta in (("frontal", "ap"), ("lateral", "lateral")):
    g = drr.cone_beam(theta, (32, 32), 10.0, isocenter=ISO)
    files[view] = _png(tmp_path / f"{view}.png", xray_io.to_uint16(_render(scene, g)))
  p = reconstruct.prepare_pair(files["frontal"], files["lateral"], REF)
  lines = reconstruct.defaulted_lines(p.report)
  assert len(lines) == 3, lines  # one per view, and the isocentre
  for view in ("frontal", "lateral"):
    line = next(l for l in lines if l.startswith(str(files[view])))
    for field in ("beam cone", "sid 750", "sdd 1000", "pixel_mm", "side", "orientation"):
      assert field in line, (field, line)
  full = reconstruct.prepare_pair(files["frontal"], files["lateral"], REF, _flags(
      frontal={"beam": "cone", "sid": 750.0, "sdd": 1000.0, "pixel_mm": "10", "side": "ap",
               "orientation": "L,F", "center": "15.5,15.5", "pixel_at": "detector"},
      lateral={"beam": "cone", "sid": 750.0, "sdd": 1000.0, "pixel_mm": "10", "side": "left",
               "orientation": "A,F", "center": "15.5,15.5", "pixel_at": "detector"}), iso=ISO)
  assert reconstruct.defaulted_lines(full.report) == []
