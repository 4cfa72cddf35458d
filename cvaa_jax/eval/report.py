"""Writing evaluation results: per-case CSV, mean +- std summary as JSON and Markdown."""

from __future__ import annotations

import csv
import json
import pathlib
from typing import Mapping, Sequence

import numpy as np

ORDER = ("mae", "mse", "cosine", "psnr", "ssim")


def summarize(per_case: Sequence[Mapping[str, float]], keys: Sequence[str] | None = None
              ) -> dict[str, dict[str, float]]:
  """Mean and std over the cases with a finite value; `n` counts them and `excluded` the others
  (PSNR of identical volumes is +inf, cosine of an all-zero volume NaN)."""
  if keys is None:
    keys = [k for k in ORDER if per_case and k in per_case[0]]
  out = {}
  for k in keys:
    vals = np.asarray([c[k] for c in per_case], np.float64)
    finite = vals[np.isfinite(vals)]
    out[k] = {"mean": float(finite.mean()) if finite.size else float("nan"),
              "std": float(finite.std()) if finite.size else float("nan"), "n": int(finite.size),
              "excluded": int(vals.size - finite.size)}
  return out


def cell(s: Mapping[str, float]) -> str:
  """'mean ± std', with '(k excluded)' where some cases had no finite value."""
  text = f"{s['mean']:.4g} ± {s['std']:.2g}"
  return text + (f" ({s['excluded']} excluded)" if s.get("excluded") else "")


def markdown_table(rows: Mapping[str, Mapping[str, Mapping[str, float]]], note: str = "") -> str:
  """One row per method: mean +- std per metric."""
  keys = [k for k in ORDER if any(k in r for r in rows.values())]
  lines = ["| method | " + " | ".join(k.upper() if k != "cosine" else "cosine" for k in keys) +
           " |", "| --- |" + " --- |" * len(keys)]
  for name, summary in rows.items():
    cells = [cell(summary[k]) if k in summary else "—" for k in keys]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + (f"\n\n{note}\n" if note else "\n")


def write(out_dir: pathlib.Path, name: str, per_case: Sequence[Mapping[str, float]],
          case_ids: Sequence[str], extra_rows: Mapping[str, Mapping] | None = None,
          note: str = "", label: str | None = None) -> dict:
  """Writes <name>_cases.csv, <name>_summary.json and .md (row `label`, then `extra_rows`)."""
  out_dir.mkdir(parents=True, exist_ok=True)
  keys = [k for k in ORDER if per_case and k in per_case[0]]
  with open(out_dir / f"{name}_cases.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["case_id"] + keys)
    for cid, c in zip(case_ids, per_case):
      w.writerow([cid] + [f"{c[k]:.6g}" for k in keys])
  summary = summarize(per_case)
  rows = {label or name: summary, **(extra_rows or {})}
  (out_dir / f"{name}_summary.json").write_text(json.dumps(rows, indent=1))
  (out_dir / f"{name}_summary.md").write_text(markdown_table(rows, note))
  return summary
