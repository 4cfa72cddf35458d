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

# Tests run tiny shapes, where XLA:CPU spends far longer compiling than running: LLVM's optimisation
# level 0 halves the train step's compile (29 s -> 17 s on the 2-core machine) for the same numerics
# checks (every comparison here is between programs compiled alike, or has a tolerance).
# CVAA_TEST_OPTIMIZED=1 tests the default optimisation level instead.
TEST_XLA_FLAGS = ("" if os.environ.get("CVAA_TEST_OPTIMIZED") == "1"
                  else "--xla_backend_optimization_level=0")
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_CT = ROOT.parent / "shared" / "data" / "ct"
BUNDLED_CT = ROOT / "cvaa_jax" / "data" / "assets" / "abdomen_totalseg.nii.gz"


# The modules whose tests take 40-170 s each (train a run in subprocesses, kill and resume it),
# heaviest first. pytest-xdist hands tests to its workers in collection order, and these sort last
# alphabetically (tests/train/); started first, no worker is left with a 2-minute test at the end.
# Measured: the suite's wall time did not change beyond the machine's noise (642-689 s either way).
HEAVY_MODULES = ("train/test_multiprocess.py", "train/test_training.py",
                 "train/test_damaged_checkpoints.py", "test_notebooks.py",
                 "train/test_full_disk.py", "test_pretrained.py", "train/test_sweep.py",
                 "train/test_microbatch.py")
assert all((ROOT / "tests" / m).is_file() for m in HEAVY_MODULES), "HEAVY_MODULES names a lost file"


def pytest_collection_modifyitems(items):
  def rank(item):
    path = item.path.relative_to(ROOT / "tests").as_posix()
    return HEAVY_MODULES.index(path) if path in HEAVY_MODULES else len(HEAVY_MODULES)
  items.sort(key=rank)  # stable: each module's tests stay together and in order


@pytest.fixture(scope="session")
def shared_ct() -> pathlib.Path:
  if not SHARED_CT.is_dir():
    pytest.skip(f"{SHARED_CT} not present (it is in CI and developer checkouts)")
  return SHARED_CT


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory):
  """A run folder as launch.py leaves it (config, prepared data, a checkpoint), without training:
  the tiny config's freshly initialised models."""
  import json  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  sys.path.insert(0, str(ROOT))
  from configs import lumbar  # pylint: disable=g-import-not-at-top
  from cvaa_jax.data import dataset, pipeline  # pylint: disable=g-import-not-at-top
  from cvaa_jax.train import checkpoint, loop  # pylint: disable=g-import-not-at-top
  config = lumbar.get_config("tiny")
  work = tmp_path_factory.mktemp("run")
  (work / "config.json").write_text(config.to_json_best_effort(indent=1))
  cases = dataset.prepare(config.data.to_dict(), work / "data", seed=0, log=lambda *_: None)
  _, state = loop.build(config, total_steps=1)
  ckpt = checkpoint.Checkpointer(work, keep=1)
  ckpt.save(1, state, iter(pipeline.train_dataset(cases, 2, seed=0)),
            json.loads(config.to_json_best_effort()))
  ckpt.wait()
  ckpt.close()
  return work


def assert_same_checkpoint(ref, work, which: str = "checkpoints", step: int | None = None) -> None:
  """The newest checkpoints under `ref/which` and `work/which` are the same step (`step` if given)
  with bit-identical train states: what every resume test asks."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  found = []
  for w in (ref, work):
    mgr = ocp.CheckpointManager(pathlib.Path(w).absolute() / which)
    s = mgr.latest_step()
    state = mgr.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
    mgr.close()
    found.append((s, jax.tree.leaves(state)))
  (s1, a), (s2, b) = found
  assert s1 == s2 and (step is None or s1 == step), (which, s1, s2, step)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
