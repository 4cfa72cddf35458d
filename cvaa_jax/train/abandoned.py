"""Reports of Orbax's abandoned asyncio work, kept off the screen.

Orbax runs reads and writes as asyncio coroutines over tensorstore. When one array fails (a
damaged checkpoint, a full disk), the others are abandoned, and each reports itself whenever it is
finally freed: during the failed call, on the next garbage collections, seconds later, in whatever
output or test is running then. It does so by one of two channels, depending on timing:
- `sys.unraisablehook`: "Exception ignored in: <coroutine ...>" and a traceback, or "Event loop is
  closed" from a callback that outlived Orbax's event loop;
- the `asyncio` logger: "Task exception was never retrieved" with the array's error and a
  traceback (an ERROR record, which a command's log handler would print).
The failure itself is reported once, by the code that caught it; these reports say nothing more.
No heavy imports, so every command line can install the filters first.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any

_ORBAX = f"{os.sep}orbax{os.sep}"


def _raised_in_orbax(exc: BaseException | None) -> bool:
  """Whether `exc`, or an exception in its chain, was raised through Orbax's code."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if any(_ORBAX in frame.filename for frame in traceback.extract_tb(exc.__traceback__)):
      return True
    exc = exc.__cause__ or exc.__context__
  return False


def is_abandoned_orbax_task(unraisable: Any) -> bool:
  """An unraisable-exception report left by Orbax's abandoned work (see the module docstring)."""
  code = getattr(unraisable.object, "cr_code", None)
  if code is not None and _ORBAX in code.co_filename:
    return True
  exc = unraisable.exc_value
  if unraisable.object is None and isinstance(exc, RuntimeError) and \
      str(exc) == "Event loop is closed":
    return True
  return _raised_in_orbax(exc)


def is_abandoned_orbax_log(record: logging.LogRecord) -> bool:
  """asyncio's 'exception was never retrieved' record about an exception raised in Orbax."""
  if record.name != "asyncio" or "exception was never retrieved" not in str(record.msg):
    return False
  return bool(record.exc_info) and _raised_in_orbax(record.exc_info[1])


class _DropAbandonedOrbaxLogs(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return not is_abandoned_orbax_log(record)


def quiet_abandoned_orbax_tasks() -> None:
  """Installs, once per process, both filters: a `sys.unraisablehook` that drops
  `is_abandoned_orbax_task` reports and hands any other to the hook it replaced, and a filter on
  the `asyncio` logger for `is_abandoned_orbax_log` records. Command lines install them at start;
  the restore paths before they try a checkpoint, for library use (notebooks)."""
  asyncio_logger = logging.getLogger("asyncio")
  if not any(isinstance(f, _DropAbandonedOrbaxLogs) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_DropAbandonedOrbaxLogs())
  current = sys.unraisablehook
  if getattr(current, "drops_abandoned_orbax_tasks", False):
    return

  def hook(unraisable):
    if not is_abandoned_orbax_task(unraisable):
      current(unraisable)
  hook.drops_abandoned_orbax_tasks = True
  sys.unraisablehook = hook
