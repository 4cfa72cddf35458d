"""Runs a cvaa_jax experiment: `python launch.py --config=configs/demo.py --workdir=runs/demo`.

Everything but the working directory is config; override any field with `--config.a.b=value`.
Problems the user can fix (a typo in a field, a missing data folder, an unwritable workdir) end the
run with one line naming the field or path and the fix.
"""


from absl import flags, logging
from ml_collections import config_flags

from cvaa_jax import cli, errors, run as run_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py, "
                                          "optionally file.py:variant).", lock_config=True)
_CONFIG_HELP = flags.DEFINE_bool("config_help", False, "Print the resolved config (every field, "
                                 "overrides applied, validated) and exit; without --config, "
                                 "every field at its default.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Folder for the prepared data, "
                               "checkpoints, logs and results.")


def _fail(message: str, hard: bool = False) -> None:
  cli.fail(message, hard=hard)  # always one line on stderr


def _parse_flags(argv):
  """absl's parser, but a bad override is one line, not a traceback from ml_collections."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    text = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'")
    _fail(f"bad --config override: {text}")


def main(argv):
  del argv
  cli.setup_logging()
  if _CONFIG.value is None and _CONFIG_HELP.value:
    from cvaa_jax import config as config_lib  # pylint: disable=g-import-not-at-top
    print(config_lib.base_config())
    print("# every field at its schema default (cvaa_jax/config.py: base_config; meanings in "
          "docs/configs.md).\n# With --config=FILE[:variant] and --config.a.b=value overrides, "
          "--config_help prints that file's resolved config instead.")
    return
  if _CONFIG.value is None:
    _fail("--config is required, e.g. --config=configs/demo.py")
  try:
    config = _CONFIG.value
    config.keys()  # a config file that failed to load raises here
  except Exception as e:  # pylint: disable=broad-except
    _fail(f"--config: cannot load the config file ({type(e).__name__}: {e}); check the path.")
  if _CONFIG_HELP.value:
    from cvaa_jax import config as config_lib  # pylint: disable=g-import-not-at-top
    try:
      config_lib.validate(config)
    except errors.CvaaError as e:
      _fail(str(e))
    print(config)
    print("# meanings and defaults: cvaa_jax/config.py (base_config); docs/configs.md")
    return
  try:
    summary = run_lib.run(config, _WORKDIR.value)
  except errors.CvaaError as e:
    _fail(str(e), hard=getattr(e, "hard_exit", False))
  logging.info("done: %s", summary)


if __name__ == "__main__":
  cli.run_app(main, __name__, flags_parser=_parse_flags)
