"""The real training loop on a tiny config: data parallelism, guard rails, exact resume after kill."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import ROOT, TEST_XLA_FLAGS, assert_same_checkpoint


@pytest.fixture(scope="session")
def compile_cache():
  """Subprocess runs share compiled programs (JAX's persistent cache, see conftest), so a resumed
  run does not pay the compile again."""
  return os.environ["JAX_COMPILATION_CACHE_DIR"]


def _env(cache, **extra):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_COMPILATION_CACHE_DIR=cache)
  env["XLA_FLAGS"] = TEST_XLA_FLAGS  # without the caller's fake device count
  env.update(extra)
  return env


def test_four_devices_equal_one_device_and_non_finite_losses_are_caught(compile_cache, tmp_path):
  r = subprocess.run([sys.executable, str(ROOT / "tests/train/multidevice_check.py"),
                      str(tmp_path)], env=_env(compile_cache), capture_output=True, text=True,
                     timeout=900)
  assert r.returncode == 0 and "MULTIDEVICE OK" in r.stdout, r.stderr[-3000:]
  # The checkpoint it wrote from 4 devices restores here, on one.
  from cvaa_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from cvaa_jax.train import loop  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 1
  _, ema, step = loop.restore_for_inference(config_lib.load_run_config(tmp_path), tmp_path,
                                            "latest")
  saved = np.load(tmp_path / "ema.npz")
  assert step == 2
  for i, leaf in enumerate(jax.tree.leaves(ema)):
    np.testing.assert_array_equal(leaf, saved[f"arr_{i}"])


def _launch(work, cache, steps, extra=(), **env):
  args = [sys.executable, str(ROOT / "launch.py"), "--config=configs/lumbar.py:tiny",
          f"--workdir={work}", f"--config.train.num_steps={steps}",
          "--config.train.checkpoint_every=4", "--config.train.eval_every=3", *extra]
  return subprocess.run(args, cwd=ROOT, env=_env(cache, **env), capture_output=True, text=True,
                        timeout=900)


def test_killed_runs_resume_to_identical_parameters(tmp_path, compile_cache):
  """Validation every 3 steps, checkpoints every 4, four kills in one run: while best/ is written
  before any checkpoint exists, during validation (a checkpoint write possibly in flight), while the
  last checkpoint is written, and during the final report. Each restart resumes by itself and the
  run ends bit-identical to an uninterrupted one (latest and best), one metrics line per step."""
  steps = 8
  ref = _launch(tmp_path / "ref", compile_cache, steps, extra=["--config.preview=True"])
  assert ref.returncode == 0, ref.stderr[-3000:]
  # What a user sees after a run: summary, preview, metrics, TensorBoard, the test report.
  summary = json.loads((tmp_path / "ref" / "summary.json").read_text())
  assert summary["cases"] == 6 and summary["train"]["steps"] == steps
  assert (tmp_path / "ref" / "preview" / "data.png").stat().st_size > 1000
  assert list((tmp_path / "ref" / "tensorboard").iterdir())
  assert "mean-volume baseline" in (tmp_path / "ref" / "eval" / "test_summary.md").read_text()
  assert list((tmp_path / "ref" / "eval").glob("test_*.png"))
  run = tmp_path / "run"
  for kill in ("best:3", "eval:6", "save:8", "report:8"):
    killed = _launch(run, compile_cache, steps, CVAA_FAULT_KILL_AT=kill)
    assert killed.returncode == -9, (kill, killed.stderr[-3000:])
  # A config.json left empty (as a kill during a plain in-place write did) is recovered from the
  # checkpoint, which holds the run's config; the run then rewrites it (atomically).
  (run / "config.json").write_text("")
  resumed = _launch(run, compile_cache, steps)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from" in resumed.stdout
  assert "config recovered from checkpoint" in resumed.stdout + resumed.stderr
  assert json.loads((run / "config.json").read_text())["train"]["num_steps"] == steps
  for which in ("checkpoints", "best"):
    assert_same_checkpoint(tmp_path / "ref", run, which)
  assert (run / "eval" / "test_summary.md").exists()
  lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
  ref_lines = [json.loads(l) for l in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
  key = lambda r: (r["step"], tuple(sorted(k for k in r if k != "steps_per_sec")))
  assert sorted(map(key, lines)) == sorted(map(key, ref_lines))
  # TensorBoard, as it reads the files (each resume's purge marker hides the earlier files' events
  # from that step on): every step once, the same steps as the uninterrupted run.
  assert _tensorboard_steps(run) == _tensorboard_steps(tmp_path / "ref")


def _tensorboard_steps(work) -> list[tuple[str, int]]:
  """(tag, step) of every scalar TensorBoard would show, applying purge markers (SessionLog START
  events) as it does: a START at step s drops the events of step >= s read before it."""
  import struct  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  shown = []
  for path in sorted((work / "tensorboard").iterdir()):  # file names start with the wall time
    data, pos = path.read_bytes(), 0
    while pos + 12 <= len(data):
      (n,) = struct.unpack("<Q", data[pos:pos + 8])
      ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
      pos += 12 + n + 4
      if ev.HasField("session_log") and ev.session_log.status == event_pb2.SessionLog.START:
        shown = [(t, s) for t, s in shown if s < ev.step]
      for v in ev.summary.value:
        shown.append((v.tag, ev.step))
  assert len(shown) == len(set(shown)), "a step is shown twice"
  return sorted(shown)


def test_a_full_disk_stops_with_one_line_keeps_the_checkpoint_and_resumes(tmp_path, monkeypatch):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from configs import lumbar  # pylint: disable=g-import-not-at-top
  from cvaa_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  from cvaa_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  config = lumbar.get_config("tiny")
  config.train.num_steps, config.train.checkpoint_every, config.train.eval_every = 4, 2, 100
  calls = []

  def free(path):  # room for the first checkpoint, then a full disk
    calls.append(path)
    return 10 ** 12 if len(calls) == 1 else 3_000_000

  monkeypatch.setattr(checkpoint, "free_bytes", free)
  work = tmp_path / "w"
  with pytest.raises(checkpoint.DiskFullError) as e:
    run_lib.run(config, str(work))
  msg = str(e.value)
  assert str(work) in msg and "3.0 MB free" in msg and "step 2" in msg and "\n" not in msg
  mgr = ocp.CheckpointManager(work.absolute() / "checkpoints")
  assert mgr.all_steps() == [2]
  mgr.close()
  monkeypatch.setattr(checkpoint, "free_bytes", lambda path: 10 ** 12)  # space freed
  written = (work / "config.json").stat().st_mtime_ns
  summary = run_lib.run(config, str(work))
  assert (work / "config.json").stat().st_mtime_ns == written  # unchanged: not rewritten
  assert summary["train"]["steps"] == 4
  # An OSError the library raises mid-write (ENOSPC) is reported the same way.
  import errno  # pylint: disable=g-import-not-at-top
  ck = checkpoint.Checkpointer(tmp_path / "c", keep=1)

  def boom(*a, **k):
    raise RuntimeError("write failed") from OSError(errno.ENOSPC, "No space left on device")

  with pytest.raises(checkpoint.DiskFullError, match="No space left on device"):
    ck._guarded(boom)  # pylint: disable=protected-access
  ck.close()
