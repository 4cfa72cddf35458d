"""The GAN training step: one state pytree, alternating D then G updates, in one compiled program.

`TrainState` holds both players' parameters (pure dicts), both optimiser states, the generator's
EMA, the step, the base PRNG key (raw key data, so checkpoints are plain arrays) and the first step
whose loss or gradient was non-finite (-1 while all is well). The per-step key is
`fold_in(key, step)`, so a resumed run replays exactly.

Data parallelism has pmap's semantics through `jax.jit` on a 1-D device mesh (axis 'data'): the
state is replicated, the global batch is split along 'data', and because every loss is a mean over
the global batch, XLA inserts the cross-device gradient averaging (no explicit pmean, which under
shard_map's checks would average twice).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from cvaa_jax import drr
from cvaa_jax.drr import augment
from cvaa_jax.models import projection
from cvaa_jax.train import losses


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  g_params: Any
  d_params: Any
  g_opt: Any
  d_opt: Any
  ema_params: Any
  key: jax.Array
  bad_step: jax.Array


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static pieces of the step: graphdefs, optimisers, rendering, loss weights."""

  g_graphdef: Any
  d_graphdef: Any
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  views: tuple  # (frontal, lateral) ViewSpec
  size: int
  hu_min: float
  hu_max: float
  w_adv: float = 0.1
  w_recon: float = 10.0
  w_proj: float = 10.0
  w_window: float = 0.0  # soft-tissue/bone window L1 (losses.window_l1); 0: off (the paper)
  window_hu: tuple = (-200.0, 1000.0)
  w_bone: float = 0.0  # extra MSE weight on the target's bone voxels (losses.bone_mse); 0: off
  bone_hu: float = 150.0
  ema_decay: float = 0.999
  noise_photons: float = 0.0
  intensity_gain: float = 0.0
  intensity_gamma: float = 0.0
  remat: bool = False
  sid_range: tuple = (0.0, 0.0)  # per-sample geometry (config.drr); all off: the views' fixed one
  parallel_share: float = 0.0
  opposite_side_share: float = 0.0

  @property
  def random_geometry(self) -> bool:
    return self.sid_range[1] > 0 or self.parallel_share > 0 or self.opposite_side_share > 0


def sample_geometry(cfg: StepConfig, key: jax.Array, batch: int) -> jax.Array:
  """(B, 2) signed inverse source distances, one per sample and view (models/projection.py)."""
  k_sid, k_par, k_side = jax.random.split(key, 3)
  if cfg.sid_range[1] > 0:
    lo, hi = 1.0 / cfg.sid_range[1], 1.0 / cfg.sid_range[0]
    kappa = jax.random.uniform(k_sid, (batch, 2), minval=lo, maxval=hi)
  else:
    kappa = jnp.asarray([[spec.inv_sid for spec in cfg.views]] * batch, jnp.float32)
  kappa = jnp.where(jax.random.uniform(k_par, (batch, 2)) < cfg.parallel_share, 0.0, kappa)
  side = jnp.where(jax.random.uniform(k_side, (batch, 2)) < cfg.opposite_side_share, -1.0, 1.0)
  return kappa * side


def g_apply(cfg: StepConfig, params, frontal, lateral, geometry=None):
  return nnx.merge(cfg.g_graphdef, params)(frontal, lateral, geometry)


def d_apply(cfg: StepConfig, params, frontal, lateral, volume, geometry=None):
  return nnx.merge(cfg.d_graphdef, params)(frontal, lateral, volume, geometry)


def render_views(cfg: StepConfig, volume: jax.Array, key: jax.Array | None = None,
                 geometry: jax.Array | None = None):
  """(B, S, S, S) [0, 1] volumes -> normalised (frontal, lateral) DRRs (B, S, S), optionally with
  the configured detector noise and intensity variation (training only, `key` given).

  `geometry` (B, 2): per-sample canonical views (signed inverse source distances) instead of the
  fixed ones; rendered through traced geometries (the projector's dense path)."""
  spacing, origin = projection.grid(cfg.size, cfg.views[0].fov_mm)
  mu = drr.unit_to_mu(volume, cfg.hu_min, cfg.hu_max)
  out = []
  for i, spec in enumerate(cfg.views):
    if geometry is None:
      g = spec.geometry(cfg.size)
      img = jax.vmap(lambda m, g=g: drr.project(m, spacing, origin, g))(mu)
    else:
      img = jax.vmap(lambda m, k, spec=spec: drr.project(m, spacing, origin, projection.canonical_geometry(
          spec.view, cfg.size, spec.fov_mm, k)))(mu, geometry[:, i])
    if key is not None and cfg.noise_photons > 0:
      img = augment.poisson_noise(img, jax.random.fold_in(key, 10 + i), cfg.noise_photons)
    img = drr.normalize_projection(img)
    if key is not None and (cfg.intensity_gain > 0 or cfg.intensity_gamma > 0):
      img = augment.intensity_variation(img, jax.random.fold_in(key, 20 + i), cfg.intensity_gain,
                                        cfg.intensity_gamma)
    out.append(img)
  return tuple(out)


def _strong(tree):
  """Drops weak types, so the step's output state has exactly the input's types (no recompiles)."""
  return jax.tree.map(lambda x: jnp.array(x, dtype=x.dtype), tree)


def init_state(cfg: StepConfig, g_params, d_params, seed: int) -> TrainState:
  g_params, d_params = _strong(g_params), _strong(d_params)
  return TrainState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                    g_opt=cfg.g_tx.init(g_params), d_opt=cfg.d_tx.init(d_params),
                    ema_params=jax.tree.map(jnp.copy, g_params),
                    key=jax.random.key_data(jax.random.key(seed)),
                    bad_step=jnp.full((), -1, jnp.int32))


def _norm(tree) -> jax.Array:
  return optax.global_norm(tree)


def train_step(cfg: StepConfig, state: TrainState, batch, schedule=None
               ) -> tuple[TrainState, dict]:
  """One D update then one G update on the same generated volumes; returns (state, metrics).
  `schedule`: the learning-rate decay's (start, length) as arrays (`decay_schedule`), so that the
  compiled step does not depend on the run's length; None: the optimisers' own."""
  opt_args = {} if schedule is None else {"schedule": schedule}
  key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
  volume = batch["volume"]
  geometry = None
  if "frontal" in batch:  # the user's own paired images
    frontal, lateral = batch["frontal"], batch["lateral"]
  else:
    if cfg.random_geometry:
      geometry = sample_geometry(cfg, jax.random.fold_in(key, 30), volume.shape[0])
    frontal, lateral = render_views(cfg, volume, key, geometry)

  gen = (lambda p: g_apply(cfg, p, frontal, lateral, geometry)[0])
  if cfg.remat:
    gen = jax.checkpoint(gen)
  fake, g_vjp = jax.vjp(gen, state.g_params)

  # Discriminator: real -> 1, fake -> 0 (generated volume held fixed).
  def d_loss_fn(d_params):
    real_s = d_apply(cfg, d_params, frontal, lateral, volume, geometry)
    fake_s = d_apply(cfg, d_params, frontal, lateral, jax.lax.stop_gradient(fake), geometry)
    real_l, fake_l = losses.lsgan_d(real_s, fake_s)
    return 0.5 * (real_l + fake_l), (real_l, fake_l)

  (d_total, (d_real, d_fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
      state.d_params)
  d_updates, d_opt = cfg.d_tx.update(d_grads, state.d_opt, state.d_params, **opt_args)
  d_params = optax.apply_updates(state.d_params, d_updates)

  # Generator: fool the updated D, match the voxels and the three orthogonal projections.
  def g_loss_fn(fake_volume):
    adv = losses.lsgan_g(d_apply(cfg, d_params, frontal, lateral, fake_volume, geometry))
    recon = losses.voxel_mse(fake_volume, volume)
    proj = losses.projection_l1(fake_volume, volume)
    total = cfg.w_adv * adv + cfg.w_recon * recon + cfg.w_proj * proj
    to_unit = lambda hu: (hu - cfg.hu_min) / (cfg.hu_max - cfg.hu_min)
    window = bone = jnp.zeros((), total.dtype)
    if cfg.w_window:
      window = losses.window_l1(fake_volume, volume, *(to_unit(h) for h in cfg.window_hu))
      total = total + cfg.w_window * window
    if cfg.w_bone:
      bone = losses.bone_mse(fake_volume, volume, to_unit(cfg.bone_hu))
      total = total + cfg.w_bone * bone
    return total, (adv, recon, proj, window, bone)

  (g_total, (g_adv, g_recon, g_proj, g_window, g_bone)), dfake = jax.value_and_grad(
      g_loss_fn, has_aux=True)(fake)
  (g_grads,) = g_vjp(dfake)
  g_updates, g_opt = cfg.g_tx.update(g_grads, state.g_opt, state.g_params, **opt_args)
  g_params = optax.apply_updates(state.g_params, g_updates)
  # EMA with warm-up (decay grows towards ema_decay), so short runs are not dominated by the init.
  decay = jnp.minimum(cfg.ema_decay, (1.0 + state.step) / (10.0 + state.step))
  ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema_params, g_params)

  g_gnorm, d_gnorm = _norm(g_grads), _norm(d_grads)
  finite = jnp.isfinite(g_total) & jnp.isfinite(d_total) & jnp.isfinite(g_gnorm) & \
      jnp.isfinite(d_gnorm)
  bad_step = jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step)
  new = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params, g_opt=g_opt,
                      d_opt=d_opt, ema_params=ema, bad_step=bad_step)
  metrics = {"g/total": g_total, "g/adv": g_adv, "g/recon": g_recon, "g/proj": g_proj,
             "g/window": g_window, "g/bone": g_bone,
             "d/total": d_total, "d/real": d_real, "d/fake": d_fake,
             "g/grad_norm": g_gnorm, "d/grad_norm": d_gnorm,
             "g/param_norm": _norm(g_params), "d/param_norm": _norm(d_params)}
  return new, metrics


def predict(cfg: StepConfig, params, volume: jax.Array, frontal=None, lateral=None,
            geometry=None):
  """Reconstructs `volume` from its given views, or from its (deterministic) DRRs rendered at the
  fixed geometry or at the per-sample `geometry` (B, 2)."""
  if frontal is None:
    frontal, lateral = render_views(cfg, volume, geometry=geometry)
  return g_apply(cfg, params, frontal, lateral, geometry)[0]


def decay_schedule(total_steps: int, decay_start: float) -> tuple[int, int]:
  """(first decaying step, decay length) of `make_optimizer`'s schedule: the train step's
  `schedule` argument."""
  start = int(total_steps * decay_start)
  return start, max(total_steps - start, 0)


def make_optimizer(learning_rate: float, b1: float, b2: float, total_steps: int,
                   decay_start: float) -> optax.GradientTransformation:
  """Adam with a constant rate, decaying linearly to 0 over the last (1 - decay_start) of training.

  The decay's steps are an argument of the update (`schedule=(start, length)`, int32 arrays), so
  the compiled train step does not depend on the run's length: a run continued with more steps,
  or runs of different lengths, reuse one executable. Without it the update uses `total_steps`.
  The rates equal optax's join of a constant and a linear schedule bit for bit, and the state is
  the same (Adam's, then the schedule's count), so earlier checkpoints restore."""
  start, length = decay_schedule(total_steps, decay_start)
  if length == 0:
    return optax.adam(learning_rate, b1=b1, b2=b2)

  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, *, schedule=None):
    del params
    begin, steps = (start, length) if schedule is None else schedule
    count = state.count
    linear = learning_rate * (1 - jnp.clip(count - begin, 0, steps) / steps)
    rate = jnp.where(count < begin, learning_rate, linear)
    updates = jax.tree.map(lambda g: jnp.array(-rate, dtype=g.dtype) * g, updates)
    return updates, optax.ScaleByScheduleState(count=optax.safe_increment(count))

  return optax.chain(optax.scale_by_adam(b1=b1, b2=b2),
                     optax.GradientTransformationExtraArgs(init, update))
