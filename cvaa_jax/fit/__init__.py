"""Reconstruction by 2D/3D registration of reference CTs (atlases) to a radiograph pair.

  atlas.py       the atlases: build, store, load (the shipped set lives in atlases/)
  warp.py        the bounded similarity + smooth deformation that carries an atlas onto the grid
  similarity.py  intensity-domain-free image terms (NCC, gradient and high-pass correlation)
  register.py    the multi-start, coarse-to-fine fit through the DRR renderer
  fuse.py        ranking by projection similarity, weighted fusion, per-voxel uncertainty
  refine.py      re-projection agreement, and test-time consistency for any method's output
"""
