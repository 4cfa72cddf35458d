"""Real anatomy from a few CTs, on a CPU: 64^3 x 4 mm (the paper's 256 mm field of view).

  python launch.py --config=configs/real64.py --config.data.ct_dir=/path/to/cts --workdir=runs/real64

Few-CT augmentation (data/augment.py) cuts every training volume afresh from a whole scan: the field
of view anywhere along it and across the body, +-10 degree rotations, +-10 % scaling, a smooth
elastic displacement, HU gain / offset / noise. No left-right mirroring (it changes the anatomy:
situs). 30 % of the samples are procedural phantoms (their spine and implants are always in view;
benchmarks/real_anatomy.py compares real-only, mixed and phantom-only). Views are
rendered per sample with a randomised geometry, so the model takes AP/PA, left/right lateral, cone
or parallel. Bone voxels weigh 5x in the voxel loss (`train.w_bone`; measured at 32^3, where it
put the spine where it is).

Sized for 2 CPU cores: a slim CVAA-GAN (levels 3, 4 channels at full resolution) at batch 2 runs
1.1-3.4 s per step there (benchmarks/RESULTS.md), so the 2000 steps take 40 min to 2 hours; the
run resumes from its workdir, so it can be continued across sessions (raise
--config.train.num_steps to train longer; the compiled step is reused). This preset trained on all
8 shared patients is the shipped model (cvaa_jax/pretrained/real64/README.md); held out in turn,
every one of them is reconstructed better than by the mean volume in PSNR and bone Dice
(benchmarks/RESULTS.md, "The shipped network on real anatomy"). Variant `cpu32` is the same recipe at
32^3 x 8 mm (half an hour on 2 cores; the model shipped until 2026-12-06), which missed the mean
volume's grid bone Dice on one of the 8.
"""

from cvaa_jax.config import base_config

# The shared collection's layout: top-level NIfTIs, one per patient. Left out: a slab of a patient
# already included, a 40 mm DICOM slab, and the non-commercial scans (evaluation only).
SHARED_EXCLUDE = "*_slab*,abdomen_slab_dicom,noncommercial"


def get_config(variant: str = ""):
  c = base_config()
  c.data.source = "ct_dir"
  c.data.ct_dir = ""  # required: --config.data.ct_dir=/path
  c.data.ct_exclude = SHARED_EXCLUDE
  c.data.split = (0.75, 0.0, 0.25)  # few patients: no validation split, the EMA model is kept
  c.data.phantom_share = 0.3
  c.data.num_phantoms = 24
  c.data.size = 64
  c.data.spacing_mm = 4.0

  a = c.augment
  a.placement = True
  a.rotate_deg = 10.0
  a.scale = 0.1
  a.elastic_mm = 6.0
  a.elastic_points = 4
  a.hu_gain = 0.05
  a.hu_offset = 20.0
  a.hu_noise = 10.0
  a.mirror_prob = 0.0

  m = c.model
  m.levels = 3
  m.base_channels = 8
  m.max_channels = 32
  m.base_channels_3d = 4
  m.max_channels_3d = 32
  m.growth_rate = 8
  m.dense_layers = 2
  m.attn_kernel = 3
  m.disc_channels = 8
  m.disc_layers = 2
  # Trilinear x2 instead of the paper's kernel-2 transposed convolution: at 1000 CPU steps that
  # leaves a 2-voxel checkerboard over the whole volume, and the resize doubled the held-out bone
  # Dice (0.13 vs 0.07 on the same fold, benchmarks/RESULTS.md) at equal PSNR.
  m.upsample = "resize"

  t = c.train
  # Bone voxels (> 150 HU) weigh 5x in the squared error (train/losses.py:bone_mse). Without it
  # both grids blurred the spine into soft tissue (this preset at 1100 steps as much as cpu32);
  # with it cpu32 places the spine (benchmarks/RESULTS.md, "Bone-weighted voxel loss"). At 64^3
  # with it: bone Dice 0.08-0.12 on three never-seen chests (the 64^3 preset trained to the end).
  t.w_bone = 40.0
  t.batch_size = 2
  t.num_steps = 2000
  t.learning_rate = 5e-4
  t.decay_start = 0.7
  t.ema_decay = 0.995
  t.log_every = 25
  t.eval_every = 250
  t.checkpoint_every = 100
  t.eval_batch_size = 1
  if variant == "cpu32":
    c.data.size = 32
    c.data.spacing_mm = 8.0
    c.augment.elastic_mm = 8.0
    m.levels = 2
    m.base_channels_3d = 8
    m.max_channels_3d = 16
    m.max_channels = 32
    m.attn_kernel = 5
    t.batch_size = 4
    t.num_steps = 2000
    t.learning_rate = 1e-3
    t.ema_decay = 0.99
    t.eval_every = 200
    t.checkpoint_every = 100
  elif variant:
    raise ValueError(f"configs/real64.py: unknown variant {variant!r}; use '' or 'cpu32'")
  return c
