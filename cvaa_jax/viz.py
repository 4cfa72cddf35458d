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


# Orientation letters of each displayed panel (mid_slices' conventions): (left, right, top, bottom).
_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"),
            "sagittal": ("A", "P", "S", "I")}


def bone_mips(volume: np.ndarray) -> dict[str, np.ndarray]:
  """Coronal and sagittal maximum-intensity projections of a RAS volume, displayed like
  `mid_slices` (the whole skeleton at once: vertebrae, ribs, pelvis)."""
  return {"coronal": np.flipud(volume[::-1].max(axis=1).T),
          "sagittal": np.flipud(volume.max(axis=0)[::-1].T)}


def _letters(ax, view: str) -> None:
  left, right, top, bottom = _LETTERS[view]
  kw = dict(transform=ax.transAxes, color="yellow", fontsize=7, ha="center", va="center")
  ax.text(0.04, 0.5, left, **kw)
  ax.text(0.96, 0.5, right, **kw)
  ax.text(0.5, 0.95, top, **kw)
  ax.text(0.5, 0.05, bottom, **kw)


def save_bone_figure(volumes: Mapping[str, np.ndarray], path: str | pathlib.Path,
                     spacing_mm: float = 4.0, title: str | None = None,
                     uncertainty: np.ndarray | None = None, hu_min: float = -1000.0,
                     hu_max: float = 4096.0) -> pathlib.Path:
  """One row per named [0, 1] volume: axial, coronal and sagittal mid-slices (soft-tissue window)
  and coronal and sagittal bone MIPs (150 to 1200 HU), with orientation letters; optionally a last
  row with the coronal and sagittal mid-slices of a per-voxel uncertainty (std, HU)."""
  del spacing_mm
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  span = hu_max - hu_min
  soft = ((-200 - hu_min) / span, (400 - hu_min) / span)
  bone = ((150 - hu_min) / span, (1200 - hu_min) / span)
  cols = ("axial", "coronal", "sagittal", "bone MIP coronal", "bone MIP sagittal")
  n = len(volumes) + (uncertainty is not None)
  fig = figure((2.2 * len(cols), 2.3 * n))
  axes = fig.subplots(n, len(cols), squeeze=False)
  for row, (name, vol) in enumerate(volumes.items()):
    vol = np.asarray(vol, np.float32)
    panels = {**mid_slices(vol), **{f"bone MIP {k}": v for k, v in bone_mips(vol).items()}}
    for c, col in enumerate(cols):
      ax = axes[row, c]
      lo, hi = bone if col.startswith("bone") else soft
      ax.imshow(panels[col], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
      _letters(ax, col.split()[-1])
      ax.set_xticks([])
      ax.set_yticks([])
      if row == 0:
        ax.set_title(col, fontsize=8)
      if c == 0:
        ax.set_ylabel(name, fontsize=8)
  if uncertainty is not None:
    sl = mid_slices(np.asarray(uncertainty, np.float32))
    for c, col in enumerate(cols):
      ax = axes[-1, c]
      ax.set_xticks([])
      ax.set_yticks([])
      if col in sl:
        im = ax.imshow(sl[col], cmap="magma", vmin=0, vmax=600, interpolation="nearest")
        _letters(ax, col)
      else:
        ax.axis("off")
    axes[-1, 0].set_ylabel("uncertainty (HU std)", fontsize=8)
    fig.colorbar(im, ax=axes[-1, 3], fraction=0.5)
  return _finish(fig, path, title)
