"""Shared fixtures: paths to the bundled scan and to ../shared/data/ct (present in CI)."""

import os
import pathlib
import tempfile

import pytest

# One persistent compilation cache for the whole session (test processes and the launch.py
# subprocesses they start), so the same tiny programs are not compiled again and again.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "cvaa_jax_test_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_CT = ROOT.parent / "shared" / "data" / "ct"
BUNDLED_CT = ROOT / "cvaa_jax" / "data" / "assets" / "abdomen_totalseg.nii.gz"


@pytest.fixture(scope="session")
def shared_ct() -> pathlib.Path:
  if not SHARED_CT.is_dir():
    pytest.skip(f"{SHARED_CT} not present (it is in CI and developer checkouts)")
  return SHARED_CT
