"""Digitally reconstructed radiographs: geometry, physics and projectors (see project.py)."""

from cvaa_jax.drr.geometry import Geometry, biplanar, cone_beam, fov_matched, parallel_beam
from cvaa_jax.drr.physics import (hu_to_mu, intensity, log_image, normalize_projection,
                                  unit_to_mu)
from cvaa_jax.drr.project import grid_from_affine, project, render
