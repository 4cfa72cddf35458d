"""What every command-line entry point shares: where logs go and how a failure is reported.

A failure the user can fix is exactly one line on stderr (`fail`). Progress logs go to stdout, and
the INFO chatter of the libraries (checkpointing, data loading, JAX's backend probes) is dropped
unless `--verbosity` is given, so stderr holds nothing else.
"""

from __future__ import annotations

import os
import pathlib
import sys

from absl import flags, logging

_LIBRARIES = ("orbax", "grain", "jax/_src", "jax\\_src", "jaxlib", "etils")


class QuietLibraries:
  """absl handler filter: library records below WARNING are dropped."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or not any(s in record.pathname for s in _LIBRARIES)


def setup_logging(info: bool = True) -> None:
  """Logs to stdout; libraries quiet unless --verbosity was given; `info=False` also keeps this
  project's INFO lines out (short commands that print their own result)."""
  handler = logging.get_absl_handler()
  handler.python_handler.stream = sys.stdout
  verbose = "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present
  if not verbose:
    handler.addFilter(QuietLibraries())
    if not info:
      logging.set_verbosity(logging.WARNING)
  enable_compilation_cache()


def enable_compilation_cache() -> str | None:
  """Turns on JAX's persistent compilation cache, so a second launch, evaluate or reconstruct of
  the same program loads it instead of compiling (benchmarks/RESULTS.md: warm start).

  Where: $JAX_COMPILATION_CACHE_DIR if set, else $CVAA_JAX_CACHE, else the user's cache folder
  (~/.cache/cvaa_jax/xla, or $XDG_CACHE_HOME/cvaa_jax/xla); CVAA_JAX_CACHE=off disables it. An
  unwritable folder only costs the cache, never the run. Returns the folder in use, or None.
  """
  import jax  # pylint: disable=g-import-not-at-top
  path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.environ.get("CVAA_JAX_CACHE")
  if path == "off":
    return None
  if not path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "cvaa_jax", "xla")
  try:
    pathlib.Path(path).mkdir(parents=True, exist_ok=True)
  except OSError:
    logging.warning("compilation cache %s not writable: compiling every time", path)
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    # Every program, however small: a launch compiles some 80 (eager ops in data preparation,
    # metrics, figures), each under 0.5 s, which together were 10-24 s of a warm start.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path


def fail(message: str, code: int = 2) -> None:
  """Prints `message` as one line on stderr and exits."""
  print("error: " + " ".join(str(message).split()), file=sys.stderr)
  sys.exit(code)
