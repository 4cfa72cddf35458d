"""What every command-line entry point shares: where logs go and how a failure is reported.

A failure the user can fix is exactly one line on stderr (`fail`). Progress logs go to stdout, and
the INFO chatter of the libraries (checkpointing, data loading, JAX's backend probes) is dropped
unless `--verbosity` is given, so stderr holds nothing else.
"""

from __future__ import annotations

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


def fail(message: str, code: int = 2) -> None:
  """Prints `message` as one line on stderr and exits."""
  print("error: " + " ".join(str(message).split()), file=sys.stderr)
  sys.exit(code)
