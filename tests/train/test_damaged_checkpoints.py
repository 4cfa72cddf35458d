"""A finished checkpoint damaged afterwards (a truncated array file, a missing index or iterator
file, a missing folder) is set aside and the run resumes from the newest intact one, bit-identical
to an undamaged run; readers (evaluate / reconstruct) skip it with a warning."""

import gc
import json
import pathlib
import shutil
import subprocess
import sys
import time
import types

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


def _failed_orbax_restore(folder):
  """Saves 40 arrays with Orbax, truncates the largest file, restores: the restore fails."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  tree = {f"a{i}": rng.random((64, 64), np.float32) for i in range(40)}
  mgr = ocp.CheckpointManager(folder)
  mgr.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(tree)))
  mgr.wait_until_finished()
  _truncate_largest(folder / "1")
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  try:
    mgr.restore(1, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  except Exception:  # pylint: disable=broad-except
    pass
  else:
    raise AssertionError("the damaged checkpoint restored")
  mgr.close()


def _collect_for(reports, seconds, also=()):
  """Runs the garbage collector until a report arrives or `seconds` pass (the abandoned reads
  become garbage once tensorstore's threads let go of them: 0.1-0.2 s on the 2-core machine)."""
  end = time.monotonic() + seconds
  while time.monotonic() < end and not reports and not also:
    gc.collect()
    time.sleep(0.1)


class _Records(list):
  """A logging handler that keeps the records it is given."""
  level = 0

  def handle(self, record):
    self.append(record)


def abandoned_reads_check(folder: pathlib.Path, tries: int = 6) -> dict:
  """In a fresh process (`python -c`): what failed restores report without and with the filters,
  through both channels (sys.unraisablehook and the asyncio logger). Whether a failed restore
  leaves reads behind depends on timing (on a loaded machine all may finish first), so each
  phase repeats the restore until some did, at most `tries` times."""
  import logging  # pylint: disable=g-import-not-at-top
  from cvaa_jax.train import abandoned  # pylint: disable=g-import-not-at-top
  reports, records = [], _Records()
  sys.unraisablehook = reports.append
  logging.getLogger("asyncio").addHandler(records)
  for k in range(tries):
    _failed_orbax_restore(folder / f"control{k}")
    _collect_for(reports, seconds=3, also=records)
    if reports or records:
      break
  control = ([abandoned.is_abandoned_orbax_task(r) for r in reports] +
             [abandoned.is_abandoned_orbax_log(r) for r in records])
  unrecognised = (
      [f"unraisable {r.object!r:.100} {type(r.exc_value).__name__}: {str(r.exc_value):.150}"
       for r in reports if not abandoned.is_abandoned_orbax_task(r)] +
      [f"log {r.name} {r.getMessage():.200}" for r in records
       if not abandoned.is_abandoned_orbax_log(r)])
  reports.clear()
  records.clear()
  # With the filters: count what they drop, so a run in which nothing was left behind shows.
  dropped, task, log = [], abandoned.is_abandoned_orbax_task, abandoned.is_abandoned_orbax_log
  abandoned.is_abandoned_orbax_task = lambda u: task(u) and not dropped.append(u)
  abandoned.is_abandoned_orbax_log = lambda r: log(r) and not dropped.append(r)
  abandoned.quiet_abandoned_orbax_tasks()
  for k in range(tries):
    _failed_orbax_restore(folder / f"quiet{k}")
    _collect_for(dropped, seconds=3)
    if dropped:
      _collect_for([], seconds=1)  # and whatever follows
      break
  quiet = [str(r.exc_value)[:200] for r in reports] + [r.getMessage()[:200] for r in records]
  before = len(reports), len(records)
  sys.unraisablehook(types.SimpleNamespace(object=None, exc_value=ValueError("other")))
  logging.getLogger("asyncio").error("other")
  return {"control": control, "unrecognised": unrecognised, "dropped": len(dropped), "quiet": quiet,
          "others_pass": [len(reports) - before[0], len(records) - before[1]]}


def test_a_failed_restore_puts_nothing_more_on_screen(tmp_path):
  """Orbax abandons a failed restore's other reads, and each reports itself whenever it is freed,
  through sys.unraisablehook or the asyncio logger (a traceback each, in whatever output comes
  next). The filters every command line installs drop exactly those reports, and pass others on."""
  code = ("import json, pathlib, sys; from tests.train import test_damaged_checkpoints as t; "
          "print(json.dumps(t.abandoned_reads_check(pathlib.Path(sys.argv[1]))))")
  r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True,
                     text=True, timeout=300, env=dict(__import__("os").environ, PYTHONPATH=str(ROOT)))
  assert r.returncode == 0, r.stderr[-2000:]
  out = json.loads(r.stdout.strip().splitlines()[-1])
  assert not out["quiet"] and out["others_pass"] == [1, 1], out  # nothing leaks; others pass
  if not out["control"] or not out["dropped"]:
    pytest.skip(f"no failed restore left reads behind in 6 tries (a loaded machine): {out}")
  # The filter recognises the real reports. (Once in CI one control report out of many was not
  # recognised; `unrecognised` describes such reports, and the leak check above is what fails if
  # one reaches the screen with the filters on.)
  assert any(out["control"]), out
