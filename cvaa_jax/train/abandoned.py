"""Reports of Orbax's abandoned asyncio work, kept off the screen.

Orbax runs reads and writes as asyncio coroutines over tensorstore. When one array fails (a
damaged checkpoint, a full disk), the others are abandoned, and each one reports itself through
`sys.unraisablehook` ("Exception ignored in: <coroutine ...>", a traceback) whenever it is finally
freed: during the failed call, on the next garbage collections, seconds later, in whatever output
or test is running then. The failure itself is reported once, by the code that caught it; these
reports say nothing more. No heavy imports, so every command line can install the filter first.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def is_abandoned_orbax_task(unraisable: Any) -> bool:
  """An 'Exception ignored in' report left by Orbax's abandoned asyncio work.

  When one array of a restore fails (a damaged checkpoint), Orbax leaves the other arrays' read
  coroutines suspended; each raises again while it is finalised, at whatever moment the garbage
  collector or tensorstore's threads get to it (measured: a dozen during the failed restore,
  more on the next collections, more seconds later). After a failed write, callbacks find
  Orbax's event loop closed. The failure itself is reported once, by whoever caught it."""
  code = getattr(unraisable.object, "cr_code", None)
  if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
    return True
  exc = unraisable.exc_value
  return unraisable.object is None and isinstance(exc, RuntimeError) and \
      str(exc) == "Event loop is closed"


def quiet_abandoned_orbax_tasks() -> None:
  """Installs, once per process, a `sys.unraisablehook` that drops `is_abandoned_orbax_task`
  reports and hands any other to the hook it replaced. Command lines install it at start; the
  restore paths install it before they try a checkpoint, for library use (notebooks)."""
  current = sys.unraisablehook
  if getattr(current, "drops_abandoned_orbax_tasks", False):
    return

  def hook(unraisable):
    if not is_abandoned_orbax_task(unraisable):
      current(unraisable)
  hook.drops_abandoned_orbax_tasks = True
  sys.unraisablehook = hook
