"""Shared fixtures: paths to the bundled scan and to ../shared/data/ct (present in CI)."""

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_CT = ROOT.parent / "shared" / "data" / "ct"
BUNDLED_CT = ROOT / "cvaa_jax" / "data" / "assets" / "abdomen_totalseg.nii.gz"


@pytest.fixture(scope="session")
def shared_ct() -> pathlib.Path:
  if not SHARED_CT.is_dir():
    pytest.skip(f"{SHARED_CT} not present (it is in CI and developer checkouts)")
  return SHARED_CT
