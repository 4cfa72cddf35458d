"""Config validation and the launcher: one clear line for every user mistake, and a real tiny run."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import ml_collections
import pytest

from cvaa_jax import config as config_lib
from cvaa_jax.errors import ConfigError
from tests.conftest import ROOT


def _tiny():
  sys.path.insert(0, str(ROOT))
  from configs import lumbar  # pylint: disable=g-import-not-at-top
  return lumbar.get_config("tiny")


def test_paper_config_holds_the_papers_values():
  from configs import lumbar  # pylint: disable=g-import-not-at-top
  c = lumbar.get_config()
  assert (c.data.spacing_mm, c.data.size, c.data.hu_min, c.data.hu_max) == (2.0, 128, -1000, 4096)
  assert (c.train.batch_size, c.train.num_epochs, c.train.learning_rate) == (4, 200, 2e-4)
  assert (c.train.b1, c.train.b2) == (0.5, 0.99)


@pytest.mark.parametrize("mutate,match", [
    (lambda c: c["data"].update(sise=3), r"config.data.sise: unknown field; did you mean "
                                          r"config.data.size"),
    (lambda c: c["data"].update(source="folder"), "config.data.source"),
    (lambda c: c.update(seed="zero"), "config.seed: expected int"),
    (lambda c: c["data"].update(size=16.5), "config.data.size: expected int"),
    (lambda c: c["data"].update(size=-4), "config.data.size: must be > 0"),
    (lambda c: c["data"].update(split=(0.5, 0.5, 0.5)), "config.data.split"),
    (lambda c: c["data"].update(source="ct_dir", ct_dir="/no/such/dir"), "/no/such/dir"),
    (lambda c: c["data"].update(source="ct_dir", ct_dir=""), "config.data.ct_dir: empty"),
    (lambda c: c["data"].pop("size"), "config.data.size: missing"),
    (lambda c: c["train"].update(remat="sometimes"), "config.train.remat: 'sometimes'"),
    (lambda c: c["model"].update(upsample="bicubic"), "config.model.upsample: 'bicubic'"),
    (lambda c: c["train"].update(w_window=-1.0), "config.train.w_window: must be >= 0"),
    (lambda c: c["train"].update(w_bone=-1.0), "config.train.w_bone: must be >= 0"),
    (lambda c: c["train"].update(window_hu=(1000.0, -200.0)), "config.train.window_hu: need"),
])
def test_validate_names_the_field(mutate, match):
  raw = _tiny().to_dict()
  mutate(raw)
  with pytest.raises(ConfigError, match=match):
    config_lib.validate(ml_collections.ConfigDict(raw))


def test_remat_accepts_the_old_boolean_values(tmp_path):
  """train.remat was a bool: 'True' / 'False' (command line) and saved run configs still work."""
  c = _tiny()
  c.train.remat = "True"
  assert config_lib.validate(c).train.remat == "generator"
  raw = _tiny().to_dict()
  raw["train"]["remat"] = False
  raw["data"]["split"] = list(raw["data"]["split"])
  (tmp_path / "config.json").write_text(json.dumps(raw))
  assert config_lib.load_run_config(tmp_path).train.remat == "none"


def test_unwritable_workdir_is_named(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(ConfigError, match="not writable"):
    config_lib.prepare_workdir(blocker / "w")


def _launch(*args, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,match", [
    (["--config=configs/lumbar.py:tiny", "--config.data.sise=3"], "sise"),
    (["--config=configs/lumbar.py:tiny", "--config.data.size=abc"], "config.data.size"),
    (["--config=configs/lumbar.py"], "config.data.ct_dir: empty"),
    (["--config=configs/lumbar.py", "--config.data.ct_dir=/nope"], "/nope"),
    (["--config=configs/nothere.py"], "nothere.py"),
    ([], "--config is required"),
])
def test_launch_fails_with_one_clear_line(tmp_path, args, match):
  r = _launch(*args, f"--workdir={tmp_path / 'w'}")
  assert r.returncode == 2, r.stderr[-2000:]
  err = r.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error:") and match in err[0], r.stderr[-2000:]


def test_config_help_prints_the_resolved_config_and_runs_nothing(tmp_path):
  r = _launch("--config=configs/real64.py:cpu32", f"--config.data.ct_dir={tmp_path}",
              "--config.augment.rotate_deg=7.5", "--config_help", f"--workdir={tmp_path / 'w'}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "rotate_deg: 7.5" in r.stdout and "phantom_share: 0.3" in r.stdout
  assert not (tmp_path / "w").exists()
  bad = _launch("--config=configs/real64.py:cpu32", f"--config.data.ct_dir={tmp_path}",
                "--config.augment.rotate_deg=90.0", "--config_help")
  assert bad.returncode == 2 and "rotate_deg" in bad.stderr
  schema = _launch("--config_help")  # no file: the schema's fields at their defaults
  assert schema.returncode == 0, schema.stderr[-2000:]
  assert "num_steps:" in schema.stdout and "microbatch:" in schema.stdout


def test_launch_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  r = _launch("--config=configs/lumbar.py:tiny", f"--workdir={blocker}/w")
  assert r.returncode == 2 and "not writable" in r.stderr


def test_a_bad_scan_in_the_data_folder_is_one_line_on_stderr(tmp_path):
  cts = tmp_path / "cts"
  cts.mkdir()
  (cts / "a.nii.gz").write_bytes(b"not a nifti")
  r = _launch("--config=configs/lumbar.py:tiny", "--config.data.source=ct_dir",
              f"--config.data.ct_dir={cts}", f"--workdir={tmp_path / 'w'}")
  err = r.stderr.strip().splitlines()
  assert r.returncode == 2 and len(err) == 1 and str(cts / "a.nii.gz") in err[0], r.stderr


def test_a_workdir_refuses_another_run_and_allows_a_longer_one(tmp_path):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from configs import lumbar  # pylint: disable=g-import-not-at-top
  from cvaa_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  from cvaa_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  first = lumbar.get_config("tiny")
  work = tmp_path / "w"
  work.mkdir()
  (work / "config.json").write_text(first.to_json_best_effort(indent=1))
  saved = (work / "config.json").read_bytes()
  other = lumbar.get_config("tiny")
  other.model.base_channels = 4
  other.data.split = (0.5, 0.25, 0.25)
  with pytest.raises(ConfigError, match="data.split .* model.base_channels") as e:
    run_lib.run(other, str(work))
  assert "new --workdir" in str(e.value)
  assert (work / "config.json").read_bytes() == saved and not (work / "data").exists()
  longer = lumbar.get_config("tiny")
  longer.train.num_steps = 40
  longer.train.eval_every = 7
  assert run_lib.check_identity(longer, work) == ["train.eval_every", "train.num_steps"]
  # The same update computed in micro-batches (e.g. resuming on a smaller card) is the same run.
  smaller = lumbar.get_config("tiny")
  smaller.train.microbatch = 1
  assert run_lib.check_identity(smaller, work) == ["train.microbatch"]


def test_one_or_two_cases_train_without_held_out_data_or_stop_before(tmp_path):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from configs import lumbar  # pylint: disable=g-import-not-at-top
  from cvaa_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  from cvaa_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  one = lumbar.get_config("tiny")
  one.data.num_phantoms = 1
  with pytest.raises(ConfigError, match="exceeds the 1 training cases"):
    run_lib.run(one, str(tmp_path / "one"))
  two = lumbar.get_config("tiny")
  two.data.num_phantoms = 2
  two.train.num_steps = 2
  summary = run_lib.run(two, str(tmp_path / "two"))
  assert summary["split"] == {"train": 2, "val": 0, "test": 0}
  assert summary["train"]["steps"] == 2 and summary["train"]["split"] is None
  assert (tmp_path / "two" / "checkpoints").is_dir()


def test_compilation_cache_defaults_cache_every_program(monkeypatch, tmp_path):
  """Entry points cache every compiled program (a warm launch is ~80 small programs, benchmarks/
  warm_start.py); CVAA_JAX_CACHE moves or disables it; an unwritable folder costs only the cache."""
  import jax
  from cvaa_jax import cli
  saved = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir",
                                                "jax_persistent_cache_min_compile_time_secs")}
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
  try:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    monkeypatch.setenv("CVAA_JAX_CACHE", str(tmp_path / "cache"))
    assert cli.enable_compilation_cache() == str(tmp_path / "cache")
    assert (tmp_path / "cache").is_dir()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    monkeypatch.setenv("CVAA_JAX_CACHE", "off")
    assert cli.enable_compilation_cache() is None
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CVAA_JAX_CACHE", str(blocker / "cache"))  # under a file: not creatable
    assert cli.enable_compilation_cache() is None
  finally:
    for k, v in saved.items():
      jax.config.update(k, v)


def test_console_entry_points_print_their_flags_and_exit_0():
  """pyproject's [project.scripts] and `python -m`: --help shows the command's own flags, exit 0."""
  import tomllib  # pylint: disable=g-import-not-at-top
  scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
  assert {"cvaa-reconstruct", "cvaa-inspect", "cvaa-evaluate", "cvaa-sweep", "cvaa-make-example",
          "cvaa-build-atlases"} <= set(scripts)
  code = ("import sys, importlib; m, f = sys.argv[1].split(':'); sys.argv = [m, '--help']; "
          "getattr(importlib.import_module(m), f)()")
  for name, target in scripts.items():
    # The installed command where `pip install -e .` put it on the PATH (CI, the README's set-up),
    # else its entry function.
    installed = shutil.which(name)
    if installed and pathlib.Path(installed).parent == pathlib.Path(sys.executable).parent:
      command = [installed, "--help"]
    else:
      command = [sys.executable, "-c", code, target]
    r = subprocess.run(command, cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, (name, r.stderr[-1000:])
    assert r.stdout.count("--") >= 3, (name, r.stdout)  # its own flags listed
  r = subprocess.run([sys.executable, "launch.py", "--helpfull"], cwd=ROOT, capture_output=True,
                     text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert r.returncode == 0 and "--config" in r.stdout, r.stderr[-1000:]
