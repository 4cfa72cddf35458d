"""Training on pairs the user already has: CT + its own frontal and lateral images per case."""

import sys

import nibabel as nib
import numpy as np
import pytest
from absl import flags
from PIL import Image

from cvaa_jax.data import dataset, io, pipeline
from cvaa_jax.data.phantom import lumbar_phantom
from cvaa_jax.errors import InputError
from tests.conftest import ROOT


def _write_pairs(root, n=6):
  for i in range(n):
    case = root / f"patient{i}"
    case.mkdir(parents=True)
    vol = lumbar_phantom(i, (16, 16, 16), 16.0).volume
    io.save_nifti(vol, case / "ct.nii.gz")
    # Stand-ins for another tool's radiographs: projections of the CT, larger than the model grid.
    for name, axis in (("frontal.png", 1), ("lateral.png", 0)):
      img = np.clip(vol.array + 1000, 0, None).sum(axis=axis).T[::-1]
      img = np.kron(img, np.ones((3, 3)))
      Image.fromarray((img / img.max() * 65535).astype(np.uint16)).save(case / name)
  return root


def test_pairs_are_cached_fed_and_trained_on(tmp_path):
  flags.FLAGS.mark_as_parsed()
  sys.path.insert(0, str(ROOT))
  from configs import lumbar  # pylint: disable=g-import-not-at-top
  from cvaa_jax.train import loop  # pylint: disable=g-import-not-at-top
  pairs = _write_pairs(tmp_path / "pairs")
  config = lumbar.get_config("tiny")
  config.data.source = "pairs"
  config.data.pairs_dir = str(pairs)
  config.train.num_steps = 2
  cases = dataset.prepare(config.data.to_dict(), tmp_path / "w" / "data", seed=0,
                          log=lambda *_: None)
  assert all(c.xray_paths for c in cases)
  f = np.load(cases[0].xray_paths[0])
  assert f.shape == (16, 16) and 0 <= f.min() and f.max() <= 1
  batch = next(iter(pipeline.train_dataset(cases, 2, seed=0, shift_voxels=3)))
  assert batch["frontal"].shape == (2, 16, 16) and batch["volume"].shape == (2, 16, 16, 16)
  result = loop.train_and_evaluate(config, tmp_path / "w", cases)
  assert result["steps"] == 2 and np.isfinite(result["model"]["mae"]["mean"])


def test_a_case_without_its_views_is_named(tmp_path):
  pairs = _write_pairs(tmp_path / "pairs", n=2)
  (pairs / "patient1" / "lateral.png").unlink()
  from cvaa_jax.config import base_config  # pylint: disable=g-import-not-at-top
  cfg = base_config().data.to_dict()
  cfg.update(source="pairs", pairs_dir=str(pairs), size=16, spacing_mm=16.0)
  with pytest.raises(InputError, match="patient1"):
    dataset.prepare(cfg, tmp_path / "d", seed=0, log=lambda *_: None)
  assert nib.load(str(pairs / "patient0" / "ct.nii.gz")).shape == (16, 16, 16)
