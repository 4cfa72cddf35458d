"""Model folders (cvaa_jax/pretrained): export/load round trip, mismatch errors, the shipped model."""

import json
import pathlib

import numpy as np
import pytest

from cvaa_jax import pretrained, reconstruct
from cvaa_jax.errors import CvaaError


@pytest.fixture(scope="module")
def exported(tiny_workdir, tmp_path_factory):
  out = tmp_path_factory.mktemp("model")
  digest = pretrained.export(tiny_workdir, out)
  return out, digest


def test_export_load_reconstructs_as_the_run(tiny_workdir, exported):
  out, digest = exported
  assert digest == pretrained.sha256(out / pretrained.WEIGHTS)
  assert json.loads((out / "config.json").read_text())["data"]["ct_dir"] == ""
  from_run = reconstruct.Reconstructor(tiny_workdir, "latest")
  from_folder = reconstruct.Reconstructor(out)
  assert "weights sha256" in from_folder.model and str(out) in from_folder.model
  rng = np.random.default_rng(0)
  f, l = (rng.random((16, 16)).astype(np.float32) for _ in range(2))
  geometry = np.array([1 / 900.0, -1 / 1200.0], np.float32)
  a, _ = from_run(f, l, geometry)
  b, _ = from_folder(f, l, geometry)
  np.testing.assert_array_equal(a, b)


def test_mismatched_weights_fail_with_the_parameter_name(exported, tmp_path):
  out, _ = exported
  with np.load(out / pretrained.WEIGHTS) as z:
    arrays = {k: z[k] for k in z.files}
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "config.json").write_text((out / "config.json").read_text())
  name = sorted(arrays)[0]
  np.savez(bad / pretrained.WEIGHTS, **{k: v for k, v in arrays.items() if k != name})
  with pytest.raises(CvaaError, match=f"parameter {name} missing"):
    pretrained.load(bad)
  arrays[name] = np.zeros(arrays[name].shape + (2,), np.float32)
  np.savez(bad / pretrained.WEIGHTS, **arrays)
  with pytest.raises(CvaaError, match="has shape"):
    pretrained.load(bad)
  with pytest.raises(CvaaError, match="no shipped model"):
    pretrained.load(tmp_path)
