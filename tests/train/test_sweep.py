"""Sweeps (cvaa_jax/sweep.py): expansion, two tiny runs, skip finished, resume interrupted, table."""

import csv
import json
import shutil

import pytest
from absl import flags

from cvaa_jax import sweep as sweep_lib
from cvaa_jax.errors import ConfigError

flags.FLAGS.mark_as_parsed()

TINY = {"base": "configs/lumbar.py:tiny",
        "overrides": {"train.num_steps": 4, "train.checkpoint_every": 2, "train.eval_every": 4,
                      "model.fusion": "add"},
        "grid": {"seed": [0, 1]}}  # one program for both runs: compiled once


def test_expand_grid_and_list_and_refuse_unknown_fields():
  runs = sweep_lib.expand({"base": "x", "runs": [{"seed": 0}, {"seed": 1}],
                           "grid": {"model.fusion": ["add", "cvaa"]}})
  assert [n for n, _ in runs] == ["seed-0_fusion-add", "seed-0_fusion-cvaa", "seed-1_fusion-add",
                                  "seed-1_fusion-cvaa"]
  with pytest.raises(ConfigError, match="model.fusoin"):
    sweep_lib.build_configs({"base": "configs/lumbar.py:tiny",
                             "grid": {"model.fusoin": ["add"]}}, sweep_lib.pathlib.Path("."))
  with pytest.raises(ConfigError, match="unknown keys"):
    sweep_lib.expand({"base": "x", "grids": {}})


def test_two_runs_train_skip_resume_and_tabulate(tmp_path):
  work = tmp_path / "sweep"
  rows = sweep_lib.run_sweep(TINY, work)
  assert [r["run"] for r in rows] == ["seed-0", "seed-1"]
  assert all(r["state"] == "finished" and r["steps"] == 4 for r in rows)
  add, cvaa = work / "seed-0", work / "seed-1"
  assert json.loads((cvaa / "config.json").read_text())["seed"] == 1
  stamp = (add / "summary.json").stat().st_mtime_ns

  # Interrupt the second run after step 2: its last checkpoint and final summary are gone.
  shutil.rmtree(cvaa / "checkpoints" / "4")
  (cvaa / "summary.json").unlink()
  assert sweep_lib.state_of(cvaa, sweep_lib.build_configs(TINY, sweep_lib.pathlib.Path("."))[1][1]
                            ) == "interrupted"
  rows = sweep_lib.run_sweep(TINY, work)
  assert (add / "summary.json").stat().st_mtime_ns == stamp  # finished: not trained again
  assert all(r["state"] == "finished" for r in rows)
  steps = [json.loads(line)["step"] for line in (cvaa / "metrics.jsonl").read_text().splitlines()]
  assert steps.count(2) == 1 and 4 in steps  # resumed after step 2, not restarted

  table = (work / "results.md").read_text()
  assert "seed-0" in table and "seed-1" in table and "baseline PSNR" in table
  with open(work / "results.csv") as f:
    read = list(csv.DictReader(f))
  assert [r["run"] for r in read] == ["seed-0", "seed-1"]
  assert float(read[0]["psnr"]) > 0 and (work / "results.png").stat().st_size > 1000
  assert "| base | 2/2 |" in (work / "results_seeds.md").read_text()
  with pytest.raises(ConfigError, match="task_id"):
    sweep_lib.run_sweep(TINY, work, task_id=5)
  # The same sweep made shorter: no run may report its 4-step model as a 2-step one.
  shorter = {**TINY, "overrides": {**TINY["overrides"], "train.num_steps": 2}}
  with pytest.raises(sweep_lib.CvaaError, match=r"2 run\(s\) failed"):
    sweep_lib.run_sweep(shorter, work)
  from cvaa_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="at step 4, beyond the 2 steps"):
    run_lib.run(sweep_lib.build_configs(shorter, sweep_lib.pathlib.Path("."))[0][1], str(add))


def test_over_seeds_groups_runs_that_differ_only_in_seed(tmp_path):
  rows = [{"run": f"fusion-{f}_seed-{s}", "psnr": p, "ssim": 0.5, "mae": 0.1, "cosine": 0.9,
           "baseline_psnr": 20.0}
          for f, ps in (("add", (20.0, 22.0, 24.0)), ("cvaa", (25.0, 26.0, 30.0)))
          for s, p in enumerate(ps)]
  rows.append({"run": "fusion-vaa_seed-0", "state": "failed"})
  out = {r["method"]: r for r in sweep_lib.over_seeds(tmp_path, rows)}
  assert set(out) == {"fusion-add", "fusion-cvaa", "fusion-vaa"}
  assert out["fusion-add"]["psnr"] == pytest.approx(22.0)
  assert out["fusion-add"]["psnr_std"] == pytest.approx(2.0)  # sample std of 20, 22, 24
  assert out["fusion-cvaa"]["psnr_std"] == pytest.approx(float(
      sweep_lib.np.std([25.0, 26.0, 30.0], ddof=1)))
  assert out["fusion-vaa"]["seeds"] == 0 and "psnr" not in out["fusion-vaa"]
  table = (tmp_path / "results_seeds.md").read_text()
  assert "| fusion-add | 3/3 | " in table and "| fusion-vaa | 0/1 | —" in table
  assert sweep_lib.over_seeds(tmp_path / "x", [{"run": "fusion-add"}]) == []  # no seeds: no file
