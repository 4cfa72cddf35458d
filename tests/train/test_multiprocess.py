"""Two launch.py processes joined by jax.distributed on the CPU backend (gloo collectives, 2 fake
devices each) train like one process with 4 devices, share one checkpoint, stop in bounded time when
one of them dies, and resume from the checkpoint they shared."""

import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags

from tests.conftest import ROOT, TEST_XLA_FLAGS

STEPS = 4
COMMON = ["--config=configs/lumbar.py:tiny", f"--config.train.num_steps={STEPS}",
          "--config.train.batch_size=4", "--config.train.checkpoint_every=2",
          "--config.train.eval_every=3"]


def _port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int, **extra):
  env = dict(os.environ, PYTHONPATH=str(ROOT),
             XLA_FLAGS=f"{TEST_XLA_FLAGS} --xla_force_host_platform_device_count={devices}".strip())
  env.update(extra)
  return env


def _start(work, port, pid, log, heartbeat=300, **env):
  args = [sys.executable, str(ROOT / "launch.py"), *COMMON, f"--workdir={work}",
          "--config.train.distributed=True", f"--config.train.coordinator_address=localhost:{port}",
          "--config.train.num_processes=2", f"--config.train.process_id={pid}",
          # Generous start-up and heartbeat limits: on a loaded 2-core CI machine the processes
          # start, compile and write checkpoints slowly.
          f"--config.train.heartbeat_timeout_s={heartbeat}", "--config.train.init_timeout_s=300"]
  # Output to files, not pipes: a process that is not waited on yet must never block on a full pipe.
  with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
    return subprocess.Popen(args, cwd=ROOT, env=_env(2, **env), stdout=out, stderr=err, text=True)


def _both(work, env0=None, env1=None, **kw):
  """Starts processes 0 and 1 on `work`; returns [(returncode, stdout, stderr, exit time)] in
  order of process id, each waited on in turn, process 1 first."""
  port = _port()
  logs = [f"{work}.p{i}" for i in (0, 1)]
  procs = [_start(work, port, 0, logs[0], **kw, **(env0 or {})),
           _start(work, port, 1, logs[1], **kw, **(env1 or {}))]
  ended = {}
  for i in (1, 0):
    procs[i].wait(timeout=600)
    ended[i] = time.time()
  read = lambda path: pathlib.Path(path).read_text()
  return [(p.returncode, read(f"{log}.out"), read(f"{log}.err"), ended[i])
          for i, (p, log) in enumerate(zip(procs, logs))]


def _state(work):
  from cvaa_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from cvaa_jax.train import checkpoint, loop  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  _, abstract = loop.build(config_lib.load_run_config(work), 1, abstract=True)
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  mgr = ocp.CheckpointManager(pathlib.Path(work).absolute() / "checkpoints")
  step = mgr.latest_step()
  state = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(
      checkpoint.abstract_like(abstract, one)))).state
  mgr.close()
  return step, state


def test_two_processes_train_like_one_stop_when_one_dies_and_resume(tmp_path):
  ref = subprocess.run([sys.executable, str(ROOT / "launch.py"), *COMMON,
                        f"--workdir={tmp_path / 'ref'}"], cwd=ROOT, env=_env(4),
                       capture_output=True, text=True, timeout=600)
  assert ref.returncode == 0, ref.stderr[-3000:]
  run = tmp_path / "two"
  # Process 1 is killed during the step-3 validation (the step-2 checkpoint complete by then).
  # Process 0, with a short heartbeat limit, must notice and stop by itself instead of hanging in
  # its next collective; that is the failure a multi-host job meets when one host goes.
  # The heartbeat limit is short for the test but not 10 s: on a loaded 2-core CI machine a
  # healthy process was once taken for dead at 10 s, and the runtime aborted its peer mid-compile.
  (rc0, _, e0, end0), (rc1, _, e1, end1) = _both(run, env1={"CVAA_FAULT_KILL_AT": "eval:3"},
                                                 heartbeat=30)
  assert rc1 == -9, (rc1, e1[-1500:], rc0, e0[-1500:])
  assert rc0 != 0 and ("another task died" in e0 or "heartbeat" in e0), (rc0, e0[-3000:])
  assert end0 - end1 < 150, end0 - end1
  resumed = _both(run)
  assert [r[0] for r in resumed] == [0, 0], [r[2][-3000:] for r in resumed]
  assert all("checkpoints at step 2" in r[1] for r in resumed), [r[1][-2000:] for r in resumed]
  # One checkpoint, written by both: each process's data-iterator state sits in it.
  data = run / "checkpoints" / str(STEPS) / "data"
  assert {p.name for p in data.glob("process_*")} == {"process_0-of-2.json", "process_1-of-2.json"}
  # Only process 0 wrote the run's files: one metrics line per logged step, as in one process.
  assert len((run / "metrics.jsonl").read_text().splitlines()) == \
      len((tmp_path / "ref" / "metrics.jsonl").read_text().splitlines())
  assert (run / "eval" / "test_summary.md").exists() and (run / "summary.json").exists()
  # Parameters equal the one-process run on the same global batches, to the 4-device test's
  # tolerance: Adam moves a parameter by up to 2 lr per step where cross-process reduction order
  # flips the sign of a near-zero gradient; almost all agree far more tightly.
  (s1, a), (s2, b) = _state(tmp_path / "ref"), _state(run)
  assert s1 == s2 == STEPS
  lr = 2e-4
  diffs = np.concatenate([np.abs(np.asarray(x) - np.asarray(y)).ravel() for x, y in
                          zip(jax.tree.leaves((a.g_params, a.d_params)),
                              jax.tree.leaves((b.g_params, b.d_params)))])
  assert diffs.max() <= 2.01 * lr * STEPS, diffs.max()
  assert np.mean(diffs < 1e-6) > 0.95


def test_impossible_distributed_settings_are_one_line_and_do_not_hang(tmp_path):
  # Settings that cannot work: one line each, no hang.
  port = _port()
  args = [sys.executable, str(ROOT / "launch.py"), *COMMON, f"--workdir={tmp_path / 'x'}",
          "--config.train.distributed=True"]
  bad = subprocess.run(args + [f"--config.train.coordinator_address=localhost:{port}",
                               "--config.train.num_processes=2", "--config.train.process_id=2"],
                       cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "outside 0..1" in bad.stderr
  env = _env(2, SLURM_NTASKS="3", SLURM_PROCID="0")
  bad = subprocess.run(args + [f"--config.train.coordinator_address=localhost:{port}",
                               "--config.train.num_processes=2", "--config.train.process_id=0"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and "disagrees with SLURM_NTASKS=3" in bad.stderr
  t = time.time()
  lonely = subprocess.run(args + [f"--config.train.coordinator_address=localhost:{port}",
                                  "--config.train.num_processes=2", "--config.train.process_id=1",
                                  "--config.train.init_timeout_s=5"],
                          cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=120)
  assert lonely.returncode == 2 and "jax.distributed.initialize failed" in lonely.stderr, \
      lonely.stderr[-2000:]
  assert lonely.stderr.strip().count("\n") == 0 and time.time() - t < 60
