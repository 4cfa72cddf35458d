"""What every command-line entry point shares: where logs go and how a failure is reported.

A failure the user can fix is exactly one line on stderr (`fail`). Progress logs go to stdout, and
the INFO chatter of the libraries (checkpointing, data loading, JAX's backend probes) is dropped
unless `--verbosity` is given, so stderr holds nothing else.
"""

from __future__ import annotations

import os
import pathlib
import sys
import threading
import traceback

from absl import flags, logging

from cvaa_jax.train import abandoned

_LIBRARIES = ("orbax", "grain", "jax/_src", "jax\\_src", "jaxlib", "etils", "asyncio")


# How a full disk shows in the libraries' messages: tensorstore (under Orbax) reports ENOSPC as
# RESOURCE_EXHAUSTED inside a ValueError, Python as OSError [Errno 28].
DISK_FULL_TEXT = ("RESOURCE_EXHAUSTED", "No space left on device", "Disk quota exceeded")


def is_disk_full_text(text: str) -> bool:
  return any(t in text for t in DISK_FULL_TEXT)


class QuietLibraries:
  """absl handler filter: library records below WARNING are dropped, and so are the libraries'
  own reports of a full disk (Orbax logs each failed background write with its traceback, ~360
  lines per checkpoint): the run reports it once, as its one-line error."""

  def filter(self, record) -> bool:
    library = any(s in record.pathname for s in _LIBRARIES)
    if not library:
      return True
    if record.levelno < 30:
      return False
    try:
      text = record.getMessage()
      if record.exc_info and record.exc_info[1] is not None:
        text += "".join(traceback.format_exception(record.exc_info[1]))
    except Exception:  # pylint: disable=broad-except
      return True
    return not is_disk_full_text(text)


class QuietAbandonedWrites:
  """A sys.stderr wrapper that drops the tracebacks of 'RuntimeError: Event loop is closed'.

  When one background checkpoint write fails (a full disk fails them all), Orbax stops its event
  loop and tensorstore then reports every callback of the abandoned writes to it, printing one
  such traceback each (thousands after a full disk). The failure itself is reported once, as the
  run's one-line error. Tracebacks are collected per thread until their last line; any other
  traceback is written unchanged."""

  HEADER = "Traceback (most recent call last):"
  DROP = "RuntimeError: Event loop is closed"

  def __init__(self, stream):
    self.stream = stream
    self.pending: dict[int, list[str]] = {}
    self.lock = threading.Lock()

  def write(self, text: str) -> int:
    with self.lock:
      tid = threading.get_ident()
      buf = self.pending.get(tid)
      if buf is None and not text.startswith(self.HEADER):
        return self.stream.write(text)
      buf = (buf or []) + [text]
      lines = "".join(buf).splitlines()
      last = lines[-1] if lines else ""
      complete = "".join(buf).endswith("\n") and len(lines) > 1 and last.strip() and \
          not last.startswith((" ", self.HEADER))
      if not complete:
        self.pending[tid] = buf
        return len(text)
      self.pending.pop(tid, None)
      if last.strip() != self.DROP:
        self.stream.write("".join(buf))
      return len(text)

  def flush(self) -> None:
    self.stream.flush()

  def __getattr__(self, name):
    return getattr(self.stream, name)


def setup_logging(info: bool = True) -> None:
  """Logs to stdout; libraries quiet unless --verbosity was given; `info=False` also keeps this
  project's INFO lines out (short commands that print their own result)."""
  # nibabel logs the header fields it "fixes" (pixdim 0 -> 1, ...) to its own stderr handler; the
  # loaders check those fields themselves and refuse such files in one line (io.check_nifti_header).
  import logging as std_logging  # pylint: disable=g-import-not-at-top
  std_logging.getLogger("nibabel.global").setLevel(std_logging.ERROR)
  if not isinstance(sys.stderr, QuietAbandonedWrites):
    sys.stderr = QuietAbandonedWrites(sys.stderr)
  abandoned.quiet_abandoned_orbax_tasks()
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
  the same program loads it instead of compiling (benchmarks/RESULTS.md: start-up time).

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


def fail(message: str, code: int = 2, hard: bool = False) -> None:
  """Prints `message` as one line on stderr and exits. `hard`: without the interpreter's teardown
  (after a full disk, tensorstore's abandoned background writes would print 'Event loop is
  closed' tracebacks by the thousand while it runs); files are flushed first, checkpoints were
  already waited for."""
  print("error: " + " ".join(str(message).split()), file=sys.stderr)
  if hard:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access
  sys.exit(code)


HELP_FLAGS = ("--help", "-h", "--helpshort", "--helpfull", "-?")


def run_app(main, module_name: str, **kwargs) -> None:
  """absl's app.run, but --help (and -h, --helpshort, --helpfull) prints the command's docstring
  and its own flags and exits 0: absl exits 1 and, from a console script, lists no flags (it shows
  the flags of the script's wrapper module, which defines none)."""
  if any(a in HELP_FLAGS for a in sys.argv[1:]):
    module = sys.modules[module_name]
    print((module.__doc__ or "").strip() + "\n")
    text = flags.FLAGS.module_help(module)
    print(text if text.strip() else "(no flags)")
    if "--helpfull" in sys.argv[1:]:
      print("\n" + flags.FLAGS.get_help())
    sys.exit(0)
  from absl import app  # pylint: disable=g-import-not-at-top
  app.run(main, **kwargs)
