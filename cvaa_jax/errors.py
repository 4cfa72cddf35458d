"""User-facing errors.

Every problem caused by what a user brings (a file, a config value, a folder) is raised as one of
these, with a message that names the thing and says how to fix it. `launch.py` prints such errors as
one line instead of a traceback; anything else is a bug and keeps its traceback.
"""


class CvaaError(Exception):
  """Base class of errors that are the user's to fix; the message is complete on its own."""


class InputError(CvaaError, ValueError):
  """A data file or folder is missing, unreadable or not a usable CT / X-ray."""


class ConfigError(CvaaError, ValueError):
  """A config field is unknown, of the wrong type or out of range."""
