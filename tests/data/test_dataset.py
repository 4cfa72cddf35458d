"""Dataset preparation: cached preprocessing, patient split, real folders of CTs."""

import numpy as np

from cvaa_jax.data import dataset, io, transforms
from cvaa_jax.data.volume import Volume
from tests.conftest import BUNDLED_CT


def _cfg(**kw):
  from cvaa_jax.config import base_config
  c = base_config().data.to_dict()
  c.update(num_phantoms=5, size=16, spacing_mm=16.0)
  c.update(kw)
  return c


def test_split_is_seeded_by_patient_and_complete():
  ids = [f"p{i}" for i in range(20)]
  a = dataset.split_cases(ids, (0.8, 0.1, 0.1), seed=1)
  assert a == dataset.split_cases(list(reversed(ids)), (0.8, 0.1, 0.1), seed=1)
  assert a != dataset.split_cases(ids, (0.8, 0.1, 0.1), seed=2)
  assert sorted(a.values()).count("train") == 16 and sorted(a.values()).count("test") == 2
  small = dataset.split_cases(["a", "b", "c"], (0.8, 0.1, 0.1), seed=0)
  assert sorted(small.values()) == ["test", "train", "val"]


def test_phantom_dataset_is_cached_and_rebuilt_on_change(tmp_path):
  logs = []
  cases = dataset.prepare(_cfg(), tmp_path, seed=0, log=logs.append)
  assert len(cases) == 5 and all(c.load().shape == (16, 16, 16) for c in cases)
  assert all(0 <= c.load().min() and c.load().max() <= 1 for c in cases)
  first = np.array(cases[0].load())
  again = dataset.prepare(_cfg(), tmp_path, seed=0, log=logs.append)
  assert "reusing cache" in logs[-1]
  np.testing.assert_array_equal(again[0].load(), first)
  changed = dataset.prepare(_cfg(hu_max=3000.0), tmp_path, seed=0, log=logs.append)
  assert "reusing cache" not in logs[-1]
  assert not np.array_equal(changed[0].load(), first)


def test_folder_of_real_cts(tmp_path):
  folder = tmp_path / "cts"
  folder.mkdir()
  (folder / "a.nii.gz").write_bytes(BUNDLED_CT.read_bytes())
  vol = io.load_ct(BUNDLED_CT)
  io.save_nifti(transforms.orientation(vol, "LPS"), folder / "b.nii")
  cases = dataset.prepare(_cfg(source="ct_dir", ct_dir=str(folder), size=32, spacing_mm=8.0),
                          tmp_path / "prep", seed=0, log=lambda *_: None)
  assert [c.case_id for c in cases] == ["a", "b"]
  # Same scan stored in two orientations gives the same model-grid volume and affine.
  np.testing.assert_allclose(cases[0].load(), cases[1].load(), atol=1e-5)
  np.testing.assert_allclose(cases[0].affine, cases[1].affine, atol=1e-6)
  assert Volume(np.asarray(cases[0].load()), cases[0].affine).axcodes == ("R", "A", "S")


def test_a_drawn_split_never_moves_held_out_cases_into_training(tmp_path):
  from cvaa_jax.config import base_config  # pylint: disable=g-import-not-at-top
  cfg = base_config().data.to_dict()
  cfg.update(num_phantoms=10, size=16, spacing_mm=16.0)
  first = {c.case_id: c.split for c in dataset.prepare(cfg, tmp_path, seed=0, log=lambda *_: None)}
  cfg.update(num_phantoms=14)  # the data grew: the cache is rebuilt
  second = {c.case_id: c.split for c in dataset.prepare(cfg, tmp_path, seed=0,
                                                        log=lambda *_: None)}
  assert all(second[c] == s for c, s in first.items())
  assert len(second) == 14
  fresh = dataset.split_cases(list(second), cfg["split"], 0)
  assert fresh != second  # a fresh draw would have moved cases
