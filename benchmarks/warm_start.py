"""Cold vs warm start: what the persistent compilation cache saves launch.py, evaluate, reconstruct.

  python benchmarks/warm_start.py [--steps 4] [--keep]

Runs the user's commands twice each, as separate processes sharing one fresh cache folder
($CVAA_JAX_CACHE): the demo training (`launch.py --config=configs/demo.py`, shortened to `--steps`),
the same run continued to twice the steps (a resume), `cvaa_jax.evaluate` on that run, and
`cvaa_jax.reconstruct` on the example pair with the shipped
model. Each process reports, through a `sitecustomize` hook that listens to JAX's monitoring
events, the seconds spent in XLA compilation or cache loading (`backend_compile_duration`, which
covers both), in tracing and lowering to StableHLO, and the cache hits. Prints a markdown table.
The second run of each command is the warm start; issue #13's target is <= 2 s of compilation.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Imported by every child Python process (PYTHONPATH): sums JAX's compile-related durations and
# appends one JSON line per process at exit (grain workers report too; the parent sums them).
_HOOK = """
import atexit, json, os
_t = {"compile_s": 0.0, "trace_s": 0.0, "lower_s": 0.0, "hits": 0, "programs": 0, "slowest": []}
def _dur(event, secs, fun_name="?", **_):
  if event == "/jax/core/compile/backend_compile_duration":
    _t["compile_s"] += secs; _t["programs"] += 1
    _t["slowest"] = sorted(_t["slowest"] + [[round(secs, 3), str(fun_name)]], reverse=True)[:4]
  elif event == "/jax/core/compile/jaxpr_trace_duration":
    _t["trace_s"] += secs
  elif event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
    _t["lower_s"] += secs
def _ev(event, **_):
  if event == "/jax/compilation_cache/cache_hits":
    _t["hits"] += 1
try:
  import jax.monitoring as _m
  _m.register_event_duration_secs_listener(_dur)
  _m.register_event_listener(_ev)
except Exception:
  pass
@atexit.register
def _write():
  if _t["programs"]:
    with open(os.environ["CVAA_WARM_REPORT"], "a") as f:
      f.write(json.dumps(_t) + "\\n")
"""


def run(cmd: list[str], env: dict, report: pathlib.Path, cwd: pathlib.Path) -> dict:
  report.unlink(missing_ok=True)
  t = time.perf_counter()
  r = subprocess.run(cmd, cwd=cwd, env={**env, "CVAA_WARM_REPORT": str(report)},
                     capture_output=True, text=True)
  wall = time.perf_counter() - t
  if r.returncode:
    raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
  total = {"wall_s": wall, "compile_s": 0.0, "trace_s": 0.0, "lower_s": 0.0, "hits": 0,
           "programs": 0, "slowest": []}
  for line in report.read_text().splitlines() if report.exists() else []:
    for k, v in json.loads(line).items():
      total[k] += v
  total["slowest"] = sorted(total["slowest"], reverse=True)[:4]
  return total


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=4, help="demo training steps per launch")
  p.add_argument("--keep", action="store_true", help="keep the scratch folder")
  a = p.parse_args(argv)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="warm_start_"))
  hook = tmp / "hook"
  hook.mkdir()
  (hook / "sitecustomize.py").write_text(_HOOK)
  env = {**os.environ, "CVAA_JAX_CACHE": str(tmp / "cache"),
         "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT), os.environ.get("PYTHONPATH", "")])}
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  py = sys.executable
  subprocess.run([py, "-m", "cvaa_jax.make_example", f"--out={tmp / 'example'}", "--size=32",
                  "--spacing_mm=8"], cwd=tmp, env=env, check=True, capture_output=True)
  rows = []
  for attempt in ("cold", "warm"):
    work = tmp / f"run_{attempt}"
    commands = {
        "launch.py (demo)": [py, str(ROOT / "launch.py"), "--config=" + str(ROOT / "configs/demo.py"),
                             f"--workdir={work}", f"--config.train.num_steps={a.steps}",
                             f"--config.train.eval_every={a.steps}",
                             f"--config.train.checkpoint_every={a.steps}"],
        # The same run continued (twice the steps): restores instead of initialising.
        "launch.py (demo, resumed)": [py, str(ROOT / "launch.py"),
                                      "--config=" + str(ROOT / "configs/demo.py"),
                                      f"--workdir={work}", f"--config.train.num_steps={2 * a.steps}",
                                      f"--config.train.eval_every={2 * a.steps}",
                                      f"--config.train.checkpoint_every={a.steps}"],
        "evaluate": [py, "-m", "cvaa_jax.evaluate", f"--workdir={work}", "--which=latest",
                     f"--out={tmp / f'eval_{attempt}'}"],
        "reconstruct (shipped model)": [py, "-m", "cvaa_jax.reconstruct",
                                        f"--frontal={tmp / 'example' / 'frontal.dcm'}",
                                        f"--lateral={tmp / 'example' / 'lateral.dcm'}",
                                        f"--out={tmp / f'rec_{attempt}' / 'ct.nii.gz'}",
                                        "--nopng"],
    }
    for name, cmd in commands.items():
      r = run(cmd, env, tmp / "report.jsonl", tmp)
      rows.append((name, attempt, r))
      print(f"{name} {attempt}: {r}", file=sys.stderr, flush=True)
  print("| command | start | wall s | XLA compile or cache load s | trace + lower s | programs "
        "| cache hits | slowest (s, program) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  for name, attempt, r in rows:
    slow = ", ".join(f"{s:.2f} {n}" for s, n in r["slowest"][:2])
    print(f"| {name} | {attempt} | {r['wall_s']:.1f} | {r['compile_s']:.2f} | "
          f"{r['trace_s'] + r['lower_s']:.2f} | {r['programs']} | {r['hits']} | {slow} |")
  if not a.keep:
    shutil.rmtree(tmp, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
