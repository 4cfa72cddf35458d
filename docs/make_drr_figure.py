"""Renders the README's DRR figure: real scans -> AP and left-lateral cone-beam DRRs.

  python docs/make_drr_figure.py [../shared/data/ct]
"""

import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from cvaa_jax import drr  # pylint: disable=g-import-not-at-top
from cvaa_jax.data import io, transforms  # pylint: disable=g-import-not-at-top

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main():
  shared = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared/data/ct"
  scans = [("abdomen (bundled)", ROOT / "cvaa_jax/data/assets/abdomen_totalseg.nii.gz")]
  if (shared / "chest_lidc.nii.gz").exists():
    scans.append(("chest (LIDC)", shared / "chest_lidc.nii.gz"))
  fig, axes = plt.subplots(len(scans), 2, figsize=(7, 3.6 * len(scans)), squeeze=False)
  for row, (name, path) in enumerate(scans):
    vol = transforms.preprocess(io.load_ct(path), spacing_mm=2.0, size=(128, 128, 128))
    spacing, origin = drr.grid_from_affine(vol.affine)
    center = vol.voxel_to_world((np.asarray(vol.shape) - 1) / 2)  # isocentre at the box centre
    for col, g in enumerate(drr.biplanar((256, 256), pixel_size=1.0 * 1000 / 750,
                                         isocenter=center)):
      img = drr.normalize_projection(drr.project(drr.unit_to_mu(jnp.asarray(vol.array)), spacing,
                                                 origin, g))
      axes[row, col].imshow(img, cmap="gray")
      axes[row, col].set_title(f"{name}: {'AP' if col == 0 else 'left lateral'}", fontsize=9)
      axes[row, col].set_xticks([])
      axes[row, col].set_yticks([])
  fig.text(0.01, 0.005, "AP: patient's right on the image left. Lateral (seen from the source, "
           "on the patient's right): anterior on the image right.", fontsize=7)
  fig.tight_layout()
  out = ROOT / "docs/images/drr_real.png"
  fig.savefig(out, dpi=90)
  print(out)


if __name__ == "__main__":
  main()
