"""Starting JAX's multi-controller runtime for a run over several processes (hosts).

One process per host (or per GPU group) runs the same `launch.py` command with
`--config.train.distributed=True`. Where each process finds the coordinator, the process count
and its own id: `config.train.coordinator_address` / `num_processes` / `process_id` when set,
else the cluster's environment, which `jax.distributed.initialize()` reads itself (SLURM:
SLURM_NTASKS, SLURM_PROCID, SLURM_STEP_NODELIST; also Open MPI and Cloud TPU). Set values and the
environment must agree; a coordinator that cannot be reached within `train.init_timeout_s` is one
error line, not a hang. On the CPU backend the cross-process collectives are gloo's.

Failure behaviour: every process heartbeats to the coordinator; when one dies, the others stop
within `train.heartbeat_timeout_s` (JAX's runtime ends them with "missing heartbeats"), or at
their next collective with a one-line error from the training loop. Restarting all processes
resumes from the last complete checkpoint.
"""

from __future__ import annotations

import os

import jax
import ml_collections

from cvaa_jax.errors import ConfigError

_ENV = {"num_processes": ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"),
        "process_id": ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK")}


def _env_value(field: str) -> tuple[int | None, str | None]:
  for name in _ENV[field]:
    if os.environ.get(name, "").strip().lstrip("-").isdigit():
      return int(os.environ[name]), name
  return None, None


def initialize(train: ml_collections.ConfigDict) -> None:
  """jax.distributed.initialize() from the config and the environment, with one-line errors."""
  n, pid, addr = train.num_processes, train.process_id, train.coordinator_address
  for field, given in (("num_processes", n if n > 0 else None),
                       ("process_id", pid if pid >= 0 else None)):
    env, name = _env_value(field)
    if given is not None and env is not None and env != given:
      raise ConfigError(f"config.train.{field}={given} disagrees with {name}={env} from the "
                        "environment; set one of them, or make them agree.")
  n_eff = n if n > 0 else _env_value("num_processes")[0]
  pid_eff = pid if pid >= 0 else _env_value("process_id")[0]
  if n_eff is not None and pid_eff is not None and not 0 <= pid_eff < n_eff:
    raise ConfigError(f"process id {pid_eff} is outside 0..{n_eff - 1} (num_processes "
                      f"{n_eff}); check config.train.process_id / the cluster environment.")
  if (n > 0 or pid >= 0 or addr) and not (n > 0 and pid >= 0 and addr) and n_eff is None:
    raise ConfigError("config.train.coordinator_address, num_processes and process_id go "
                      "together outside a cluster that sets them (e.g. SLURM); set all three.")
  if addr and pid_eff not in (None, 0):
    _wait_for_coordinator(addr, float(train.init_timeout_s))
  try:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  except Exception:  # pylint: disable=broad-except  # a JAX without CPU collectives options
    pass
  _TIMEOUT_S["value"] = max(float(train.init_timeout_s), float(train.heartbeat_timeout_s), 300.0)
  try:
    jax.distributed.initialize(coordinator_address=addr or None,
                               num_processes=n if n > 0 else None,
                               process_id=pid if pid >= 0 else None,
                               initialization_timeout=int(train.init_timeout_s),
                               heartbeat_timeout_seconds=int(train.heartbeat_timeout_s))
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    text = " ".join(str(e).split())[:300]
    where = addr or "from the environment"
    raise ConfigError(f"jax.distributed.initialize failed (coordinator {where}, "
                      f"{train.init_timeout_s:g} s timeout): {text}; check that every process was "
                      "started, the address and port are reachable, and the "
                      "process count and ids agree.") from None


def _wait_for_coordinator(addr: str, timeout_s: float) -> None:
  """Waits until process 0's coordinator accepts connections; JAX's own client aborts the process
  (no Python error) when it cannot connect, so this turns that case into one error line."""
  import socket  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  host, _, port = addr.rpartition(":")
  if not host or not port.isdigit():
    raise ConfigError(f"config.train.coordinator_address={addr!r}: use host:port, e.g. "
                      "node001:12355.")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=2.0):
        return
    except OSError as e:
      if time.monotonic() > deadline:
        raise ConfigError(f"jax.distributed.initialize failed: the coordinator {addr} did not "
                          f"answer within {timeout_s:g} s ({e.strerror or e}); start process 0 "
                          "first, or check the address, the port and the firewall.") from None
      time.sleep(0.5)


def is_primary() -> bool:
  """Process 0 writes the run's shared files (config, data cache, logs, reports)."""
  return jax.process_index() == 0


_TIMEOUT_S = {"value": 300.0}


def barrier(name: str, timeout_s: float | None = None) -> None:
  """All processes wait here (no-op for one process).

  A barrier of the coordination service (gRPC), not a device collective: a collective's first use
  sets up gloo's connections, which time out when one process is still busy (preparing data,
  compiling) -- so processes meet here first, with a generous limit."""
  if jax.process_count() <= 1:
    return
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  client = jax_distributed.global_state.client
  timeout = _TIMEOUT_S["value"] if timeout_s is None else timeout_s
  if client is None or not hasattr(client, "wait_at_barrier"):
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
    return
  client.wait_at_barrier(f"cvaa_jax/{name}", int(timeout * 1000))
