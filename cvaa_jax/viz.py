"""Figures: mid-slice views of volumes (axial, coronal, sagittal), for previews and the paper's Fig. 2."""

from __future__ import annotations

import pathlib
from typing import Mapping, Sequence

import numpy as np


def mid_slices(volume: np.ndarray) -> dict[str, np.ndarray]:
  """Mid axial, coronal and sagittal slices of a RAS (X, Y, Z) volume, oriented for display.

  Displayed radiologically: axial with anterior up and patient's right on the image left; coronal and
  sagittal with superior up (coronal: right on the left; sagittal: anterior on the left).
  """
  x, y, z = (s // 2 for s in volume.shape)
  return {
      "axial": np.flipud(volume[::-1, :, z].T),
      "coronal": np.flipud(volume[::-1, y, :].T),
      "sagittal": np.flipud(volume[x, ::-1, :].T),
  }


def save_slices_png(volumes: Mapping[str, np.ndarray], path: str | pathlib.Path,
                    vmin: float = 0.0, vmax: float = 1.0, views: Sequence[str] = ("axial",
                                                                                   "coronal",
                                                                                   "sagittal"),
                    title: str | None = None) -> pathlib.Path:
  """One row per view, one column per named volume, in a grey window [vmin, vmax]."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  names = list(volumes)
  fig = figure((2.6 * len(names), 2.6 * len(views)))
  axes = fig.subplots(len(views), len(names), squeeze=False)
  for col, name in enumerate(names):
    slices = mid_slices(np.asarray(volumes[name], dtype=np.float32))
    for row, view in enumerate(views):
      ax = axes[row, col]
      ax.imshow(slices[view], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if row == 0:
        ax.set_title(name, fontsize=9)
      if col == 0:
        ax.set_ylabel(view, fontsize=9)
  return _finish(fig, path, title)


def figure(figsize):
  """A figure outside pyplot: writing files never switches the caller's backend (a notebook's
  inline plots keep working) and leaves no open pyplot figure behind."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  return Figure(figsize=figsize)


def _finish(fig, path: pathlib.Path, title: str | None) -> pathlib.Path:
  """Title, layout, write."""
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return path


def save_panels_png(panels: Mapping[str, np.ndarray], path: str | pathlib.Path,
                    title: str | None = None) -> pathlib.Path:
  """One row of named 2-D images, each in its own grey range (e.g. slices next to DRRs)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig = figure((2.6 * len(panels), 2.8))
  axes = fig.subplots(1, len(panels), squeeze=False)
  for ax, (name, img) in zip(axes[0], panels.items()):
    ax.imshow(np.asarray(img, np.float32), cmap="gray", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(name, fontsize=9)
  return _finish(fig, path, title)
