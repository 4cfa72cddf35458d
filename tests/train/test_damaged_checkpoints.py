"""A finished checkpoint damaged afterwards (a truncated array file, a missing index or iterator
file, a missing folder) is set aside and the run resumes from the newest intact one, bit-identical
to an undamaged run; readers (evaluate / reconstruct) skip it with a warning."""

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TEST_XLA_FLAGS, assert_same_checkpoint


def _config(steps):
  from configs import lumbar  # pylint: disable=g-import-not-at-top
  c = lumbar.get_config("tiny")
  c.train.num_steps, c.train.checkpoint_every, c.train.eval_every = steps, 2, 100
  c.train.keep_checkpoints = 3
  return c


def _truncate_largest(d):
  f = max((p for p in (d / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
          key=lambda p: p.stat().st_size)
  with open(f, "r+b") as fh:
    fh.truncate(100)


DAMAGE = {
    "truncated array file": _truncate_largest,
    "no manifest.ocdbt": lambda d: (d / "state" / "manifest.ocdbt").unlink(),
    "no _METADATA": lambda d: (d / "state" / "_METADATA").unlink(),
    "no state/": lambda d: shutil.rmtree(d / "state"),
    "no iterator state": lambda d: next((d / "data").glob("process_*.json")).unlink(),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from cvaa_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  root = tmp_path_factory.mktemp("damaged")
  run_lib.run(_config(6), str(root / "ref"))
  run_lib.run(_config(4), str(root / "four"))  # checkpoints 2 and 4
  return root


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_identically(runs, kind,
                                                                                   tmp_path):
  from cvaa_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  work = tmp_path / "w"
  shutil.copytree(runs / "four", work)
  DAMAGE[kind](work / "checkpoints" / "4")
  run_lib.run(_config(6), str(work))
  assert (work / "damaged" / "checkpoints-4").is_dir()  # moved, not deleted
  assert_same_checkpoint(runs / "ref", work, step=6)


def test_the_restart_prints_one_warning_line_and_readers_skip_the_damage(runs, tmp_path):
  work = tmp_path / "w"
  shutil.copytree(runs / "four", work)
  _truncate_largest(work / "checkpoints" / "4")
  # A reader first: it falls back to step 2 and moves nothing.
  from cvaa_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from cvaa_jax.train import loop  # pylint: disable=g-import-not-at-top
  _, _, step = loop.restore_for_inference(config_lib.load_run_config(work), work, "latest")
  assert step == 2 and (work / "checkpoints" / "4").is_dir()
  env = dict(__import__("os").environ, PYTHONPATH=str(ROOT), XLA_FLAGS=TEST_XLA_FLAGS)
  r = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--config=configs/lumbar.py:tiny",
                      f"--workdir={work}", "--config.train.num_steps=6",
                      "--config.train.checkpoint_every=2", "--config.train.eval_every=100",
                      "--config.train.keep_checkpoints=3"],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  out = r.stdout + r.stderr
  lines = [l for l in out.splitlines() if "is damaged" in l]
  assert len(lines) == 1 and "step 4" in lines[0] and "resuming from step 2" in lines[0], lines
  assert "Traceback" not in out and "Event loop is closed" not in out
  assert json.loads((work / "summary.json").read_text())["train"]["steps"] == 6
