"""Few-CT augmentation (data/augment.py), nested CT folders, fixed test cases, mixed sources."""

import pathlib

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from cvaa_jax import config as config_lib
from cvaa_jax.data import augment, dataset, io, pipeline
from cvaa_jax.errors import ConfigError, InputError


def _scan(shape=(40, 36, 60), seed=0):
  rng = np.random.default_rng(seed)
  scan = np.zeros(shape, np.float32)
  scan[6:34, 8:30, :] = 0.2 + 0.02 * rng.random((28, 22, shape[2]))  # body, the whole length
  return scan, (6, 8, 0), (33, 29, shape[2] - 1)


def test_elastic_field_equals_spline_zoom():
  field = augment.elastic_field(np.random.default_rng(1), 24, 4, 2.0)
  coarse = np.random.default_rng(1).normal(0.0, 2.0, size=(3, 4, 4, 4))
  ref = np.stack([ndimage.zoom(c, 6, order=3, mode="nearest", grid_mode=True) for c in coarse])
  np.testing.assert_allclose(field, ref, atol=1e-5)
  assert field.std() > 0.5  # a real displacement, not zeros


def test_cut_maps_a_marker_through_rotation_and_zoom():
  scan = np.zeros((41, 41, 41), np.float32)
  d = np.array([6.0, -3.0, 4.0])
  center = np.array([20.0, 20.0, 20.0])
  scan[tuple((center + d).astype(int))] = 1.0
  r = augment.rotation_matrix([8.0, -5.0, 30.0])
  np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
  zoom = 1.1
  out = augment.cut(scan, center, r / zoom, 25)
  # center + R o / zoom = center + d  =>  o = zoom R^T d, with o centred on voxel 12.
  expect = zoom * r.T @ d + 12
  peak = np.array(np.unravel_index(np.argmax(out), out.shape))
  assert np.abs(peak - expect).max() <= 1.0, (peak, expect)


def test_placement_slides_along_the_scan_and_stays_on_the_body():
  scan, lo, hi = _scan()
  rng = np.random.default_rng(0)
  centers = np.array([augment.draw_center(rng, scan.shape, lo, hi, 16, True) for _ in range(400)])
  # z: the 16-voxel box anywhere inside the 60-slice scan, ends included.
  assert centers[:, 2].min() >= 7.5 - 1e-9 and centers[:, 2].max() <= 51.5 + 1e-9
  assert centers[:, 2].max() - centers[:, 2].min() > 40
  # x, y: inside the body box shrunk by half the box (body wider than the box).
  assert centers[:, 0].min() >= 6 + 7.5 - 1e-9 and centers[:, 0].max() <= 33 - 7.5 + 1e-9
  fixed = augment.draw_center(rng, scan.shape, lo, hi, 16, False)
  np.testing.assert_allclose(fixed, [19.5, 18.5, 29.5])
  # A scan shorter than the box: the box always holds all of it.
  short = np.array([augment.draw_center(rng, (40, 36, 10), lo, (33, 29, 9), 16, True)
                    for _ in range(50)])
  assert short[:, 2].min() >= 9 - 7.5 - 1e-9 and short[:, 2].max() <= 7.5 + 1e-9


def test_sample_volume_seeded_varied_and_air_stays_air():
  scan, lo, hi = _scan()
  cfg = augment.AugmentConfig(size=16, spacing_mm=4.0, placement=True, rotate_deg=10, scale=0.1,
                              elastic_mm=4.0, hu_gain=0.05, hu_offset=20, hu_noise=10)
  a = augment.sample_volume(scan, lo, hi, cfg, np.random.default_rng(5))
  b = augment.sample_volume(scan, lo, hi, cfg, np.random.default_rng(5))
  c = augment.sample_volume(scan, lo, hi, cfg, np.random.default_rng(6))
  assert a.shape == (16,) * 3 and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).max() > 0.01
  assert a.min() >= 0 and a.max() <= 1
  air = augment.sample_volume(np.zeros((30, 30, 30), np.float32), (0, 0, 0), (29, 29, 29), cfg,
                              np.random.default_rng(0))
  assert np.all(air == 0)  # noise and offset act inside the body only


def test_mirroring_flips_left_right_only_when_asked():
  scan, lo, hi = _scan()
  scan[10:14, 15:20, :] = 0.9  # a right-sided organ
  plain = augment.AugmentConfig(size=16, spacing_mm=4.0, placement=True, rotate_deg=5)
  mirrored = augment.AugmentConfig(size=16, spacing_mm=4.0, placement=True, rotate_deg=5,
                                   mirror_prob=1.0)
  a = augment.sample_volume(scan, lo, hi, plain, np.random.default_rng(2))
  b = augment.sample_volume(scan, lo, hi, mirrored, np.random.default_rng(2))
  np.testing.assert_array_equal(b, a[::-1])
  assert not np.array_equal(a, a[::-1])


def _nifti(path, seed, shape=(20, 20, 24)):
  rng = np.random.default_rng(seed)
  hu = np.full(shape, -1000.0, np.float32)
  hu[3:17, 4:16, :] = 40 + 20 * rng.random((14, 12, shape[2]))
  hu[9:11, 5:7, :] = 700.0  # a spine
  path.parent.mkdir(parents=True, exist_ok=True)
  nib.save(nib.Nifti1Image(hu, np.diag([8.0, 8.0, 8.0, 1.0])), str(path))


def test_nested_layout_glob_exclude_and_case_names(tmp_path):
  for i in range(3):
    _nifti(tmp_path / f"sub-{i}" / "ct.nii.gz", i)
    _nifti(tmp_path / f"sub-{i}" / "ct_seg.nii.gz", 9)
  (tmp_path / "README.md").write_text("x")
  found = io.list_ct_files(tmp_path, "*/*.nii.gz", "*seg*")
  assert io.case_names(tmp_path, found) == ["sub-0", "sub-1", "sub-2"]
  every = io.list_ct_files(tmp_path, "**/*.nii.gz")
  assert len(every) == 6
  assert io.case_names(tmp_path, every) == ["sub-0_ct", "sub-0_ct_seg", "sub-1_ct",
                                            "sub-1_ct_seg", "sub-2_ct", "sub-2_ct_seg"]
  (tmp_path / "flat").mkdir()
  for name in ("sub-verse004_ct.nii.gz", "sub-verse005_ct.nii.gz"):
    _nifti(tmp_path / "flat" / "rawdata" / name.split("_")[0] / name, 1)
  flat = io.list_ct_files(tmp_path / "flat", "rawdata/*/*_ct.nii.gz")
  assert io.case_names(tmp_path / "flat", flat) == ["sub-verse004_ct", "sub-verse005_ct"]
  with pytest.raises(InputError, match="ct_glob"):
    io.list_ct_files(tmp_path, "*/*.nii.gz", "*")


def _cfg(folder, **data):
  c = config_lib.base_config()
  c.data.source = "ct_dir"
  c.data.ct_dir = str(folder)
  c.data.size = 16
  c.data.spacing_mm = 8.0
  c.data.num_phantoms = 3
  for k, v in data.items():
    setattr(c.data, k, v)
  return c


def test_test_cases_scans_and_phantoms_in_training_only(tmp_path):
  for i in range(4):
    _nifti(tmp_path / "cts" / f"p{i}.nii.gz", i)
  c = _cfg(tmp_path / "cts", test_cases=("p2",), split=(1.0, 0.0, 0.0), phantom_share=0.5)
  config_lib.validate(c)
  cases = dataset.prepare(c.data.to_dict(), tmp_path / "data", seed=0, log=lambda *_: None,
                          keep_scans=True)
  split = {x.case_id: x.split for x in cases}
  assert split == {"p0": "train", "p1": "train", "p2": "test", "p3": "train",
                   "phantom_0000": "train", "phantom_0001": "train", "phantom_0002": "train"}
  real = [x for x in cases if not x.is_phantom]
  assert all(x.scan for x in real) and not any(x.scan for x in cases if x.is_phantom)
  scan = np.load(real[0].scan[0])
  assert scan.shape == (20, 20, 24) and 0 <= scan.min() and scan.max() <= 1
  assert real[0].scan[1] == (3, 4, 0) and real[0].scan[2] == (16, 15, 23)
  with pytest.raises(InputError, match="test_cases"):
    dataset.prepare({**c.data.to_dict(), "test_cases": ("nobody",)}, tmp_path / "d2", seed=0,
                    log=lambda *_: None)

  # Mixed stream: about phantom_share of the samples are phantoms, and it is seeded.
  aug = augment.AugmentConfig(size=16, spacing_mm=8.0, placement=True, rotate_deg=5)
  it = pipeline.train_dataset(cases, 2, seed=0, augment=aug, phantom_share=0.25,
                              process_index=0, process_count=1)
  phantom_vols = {x.case_id: np.asarray(x.load()) for x in cases if x.is_phantom}
  n, hits = 0, 0
  for _, batch in zip(range(20), it):
    for v in batch["volume"]:
      n += 1
      hits += any(np.array_equal(v, p) for p in phantom_vols.values())
  assert 0.15 <= hits / n <= 0.35, hits / n
  again = next(iter(pipeline.train_dataset(cases, 2, seed=0, augment=aug, phantom_share=0.25,
                                           process_index=0, process_count=1)))
  first = next(iter(pipeline.train_dataset(cases, 2, seed=0, augment=aug, phantom_share=0.25,
                                           process_index=0, process_count=1)))
  np.testing.assert_array_equal(again["volume"], first["volume"])


def test_augment_config_is_validated():
  c = config_lib.base_config()
  c.augment.rotate_deg = 60.0
  with pytest.raises(ConfigError, match="rotate_deg"):
    config_lib.validate(c)
  c = config_lib.base_config()
  c.augment.mirror_prob = 1.5
  with pytest.raises(ConfigError, match="mirror_prob"):
    config_lib.validate(c)
  c = config_lib.base_config()
  c.augment.hu_noize = 3.0
  with pytest.raises(ConfigError, match="hu_noise"):
    config_lib.validate(c)
  from configs import real64
  for variant in ("", "cpu32"):
    r = real64.get_config(variant)
    r.data.ct_dir = str(pathlib.Path(__file__).parent)
    config_lib.validate(r)
