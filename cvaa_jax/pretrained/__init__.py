"""Shipped model weights: a generator folder that `reconstruct` uses when no --workdir is given.

A model folder holds `config.json` (the run's resolved config, its data paths blanked),
`weights.npz` (the EMA generator's parameters, one array per '/'-joined parameter path) and a
README.md model card. `export` writes one from a trained workdir; `load` rebuilds the generator from
`config.json` and fills in the arrays, checking every name and shape, so a folder and the code that
reads it cannot silently disagree. `SHA256` pins the shipped file (tests/test_pretrained.py).

  python -m cvaa_jax.pretrained --workdir=runs/real --out=cvaa_jax/pretrained/real64
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np

from cvaa_jax.errors import CvaaError

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT = HERE / "real64"
WEIGHTS = "weights.npz"
# sha256 of DEFAULT / WEIGHTS; update together with the file (python -m cvaa_jax.pretrained --hash).
SHA256 = "9705ce6968efa5a1ef9e263395b48650791bd7b5461dc7c86ba4dd00946e26e0"


def is_model_dir(path: str | pathlib.Path) -> bool:
  return (pathlib.Path(path) / WEIGHTS).is_file() and (pathlib.Path(path) / "config.json").is_file()


def sha256(path: str | pathlib.Path) -> str:
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def _flatten(tree, prefix=""):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _flatten(v, f"{prefix}{k}/")
  else:
    yield prefix[:-1], np.asarray(tree)


def _unflatten_like(template, arrays, path: pathlib.Path, prefix=""):
  if isinstance(template, dict):
    return {k: _unflatten_like(v, arrays, path, f"{prefix}{k}/") for k, v in template.items()}
  name = prefix[:-1]
  if name not in arrays:
    raise CvaaError(f"{path}: parameter {name} missing; the weights do not match the model "
                    "config.json describes (re-export them).")
  value = arrays[name]
  if value.shape != np.shape(template):
    raise CvaaError(f"{path}: parameter {name} has shape {value.shape}, the model expects "
                    f"{np.shape(template)}; re-export the weights.")
  return value


def export(workdir: str | pathlib.Path, out: str | pathlib.Path, which: str = "latest") -> str:
  """Writes `out`/config.json and `out`/weights.npz from a trained run; returns the weights' sha256."""
  import jax  # pylint: disable=g-import-not-at-top
  from cvaa_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from cvaa_jax.train import loop  # pylint: disable=g-import-not-at-top
  workdir, out = pathlib.Path(workdir), pathlib.Path(out)
  config = config_lib.load_run_config(workdir)
  _, params, step = loop.restore_for_inference(config, workdir, which)
  params = jax.device_get(params)
  saved = json.loads((workdir / "config.json").read_text())
  saved["data"]["ct_dir"] = ""  # a path on the training machine: meaningless elsewhere
  saved["data"]["pairs_dir"] = ""
  out.mkdir(parents=True, exist_ok=True)
  (out / "config.json").write_text(json.dumps(saved, indent=1))
  arrays = {k: v.astype(np.float32) for k, v in _flatten(params)}
  tmp = out / (WEIGHTS + ".partial")
  with open(tmp, "wb") as f:
    np.savez_compressed(f, **arrays)
  tmp.replace(out / WEIGHTS)
  (out / "step.txt").write_text(f"{step}\n")
  return sha256(out / WEIGHTS)


def load(path: str | pathlib.Path = DEFAULT):
  """(run config, step config, EMA generator parameters) of a model folder."""
  from cvaa_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from cvaa_jax.train import loop  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  if not is_model_dir(path):
    raise CvaaError(f"{path}: no shipped model here (config.json + {WEIGHTS}); reinstall the "
                    "package, or pass --workdir=<a trained run>.")
  config = config_lib.load_run_config(path)
  scfg, state = loop.build(config, total_steps=1, abstract=True)  # shapes only: no initialiser run
  try:
    with np.load(path / WEIGHTS) as z:
      arrays = {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise CvaaError(f"{path / WEIGHTS}: unreadable ({e}); reinstall the package.") from None
  template = state.ema_params
  params = _unflatten_like(template, arrays, path / WEIGHTS)
  return config, scfg, params


def main(argv):
  import argparse  # pylint: disable=g-import-not-at-top
  ap = argparse.ArgumentParser(description="Export a trained run as a model folder.")
  ap.add_argument("--workdir")
  ap.add_argument("--out", default=str(DEFAULT))
  ap.add_argument("--which", default="latest", choices=["latest", "best"])
  ap.add_argument("--hash", action="store_true", help="print the sha256 of --out's weights")
  args = ap.parse_args(argv)
  if args.hash:
    print(sha256(pathlib.Path(args.out) / WEIGHTS))
    return
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  print(export(args.workdir, args.out, args.which))


