"""The benchmark scripts build the configs they claim to: what `--set` asks for is what trains."""

import importlib.util

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def real_anatomy():
  # Loaded from its path: putting benchmarks/ on sys.path would shadow names like `models`.
  spec = importlib.util.spec_from_file_location("bench_real_anatomy",
                                                ROOT / "benchmarks" / "real_anatomy.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_mixed_runs_at_the_variants_phantom_share(real_anatomy):
  """'mixed' takes the recipe's own share (configs/real64.py), real-only none."""
  from configs import real64  # pylint: disable=g-import-not-at-top
  for variant in ("", "cpu32"):
    c = real_anatomy.make_config(variant, "/ct", 10, ("a",), None)
    assert c.data.phantom_share == real64.get_config(variant).data.phantom_share > 0
  c = real_anatomy.make_config("cpu32", "/ct", 10, ("a",), 0.0)  # real-only
  assert c.data.phantom_share == 0.0


def test_set_overrides_win_over_the_methods_settings(real_anatomy):
  """Overrides applied before the method's settings were silently undone (the "15 %" runs of
  2026-12-03/04 trained at 30 %); they are applied last."""
  c = real_anatomy.make_config("cpu32", "/ct", 10, ("a",), 0.3,
                               overrides=["data.phantom_share=0.15", "train.w_bone=7.0"])
  assert c.data.phantom_share == 0.15 and c.train.w_bone == 7.0
  assert c.train.num_steps == 10 and tuple(c.data.test_cases) == ("a",)
  with pytest.raises(SystemExit, match="no field"):
    real_anatomy.make_config("cpu32", "/ct", 10, overrides=["data.phantom_shar=0.1"])
