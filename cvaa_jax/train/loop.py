"""`train_and_evaluate(config, workdir)`: data -> models -> sharded GAN steps -> checkpoints -> report.

Restarting with the same workdir resumes from its latest checkpoint (state and data iterator), so a
killed run ends exactly where an uninterrupted one would.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cvaa_jax import distributed, models, viz
from cvaa_jax.data import augment, dataset, pipeline
from cvaa_jax.errors import ConfigError, CvaaError
from cvaa_jax.eval import metrics as metrics_lib
from cvaa_jax.eval import report
from cvaa_jax.train import checkpoint as ckpt_lib
from cvaa_jax.train import step as step_lib


class NonFiniteError(CvaaError):
  """Training produced a NaN/inf loss or gradient."""


def make_mesh() -> jax.sharding.Mesh:
  """1-D mesh over every device of every process, axis 'data' (Auto: jit inserts the collectives)."""
  devices = jax.device_count()
  try:
    return jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  except (AttributeError, TypeError):  # older JAX without axis types
    return jax.make_mesh((devices,), ("data",))


def build(config: ml_collections.ConfigDict, total_steps: int, abstract: bool = False):
  """Models, step config and a fresh state; `abstract`: shapes only (nothing allocated), e.g. to
  compile the paper-size step for its memory analysis on a small machine."""
  d = config.data
  model_kwargs = {k: v for k, v in config.model.to_dict().items()
                  if k not in ("name", "disc_channels", "disc_layers")}
  gcfg = models.GeneratorConfig(size=d.size, parallel=config.drr.parallel,
                                fov_mm=d.size * d.spacing_mm, sid=config.drr.sid,
                                sdd=config.drr.sdd, remat_blocks=config.train.remat == "blocks",
                                **model_kwargs)
  make = (lambda ctor, seed: models.abstract(ctor)) if abstract else models.create
  g = make(models.generator_ctor(config.model.name, gcfg), seed=config.seed)
  disc = make(models.discriminator_ctor(gcfg, config.model.disc_channels,
                                        config.model.disc_layers), seed=config.seed + 1)
  g_graphdef, g_params = nnx.split(g, nnx.Param)
  d_graphdef, d_params = nnx.split(disc, nnx.Param)
  t = config.train
  scfg = step_lib.StepConfig(
      g_graphdef=g_graphdef, d_graphdef=d_graphdef,
      g_tx=step_lib.make_optimizer(t.learning_rate, t.b1, t.b2, total_steps, t.decay_start),
      d_tx=step_lib.make_optimizer(t.learning_rate, t.b1, t.b2, total_steps, t.decay_start),
      views=gcfg.views, size=d.size, hu_min=d.hu_min, hu_max=d.hu_max, w_adv=t.w_adv,
      w_recon=t.w_recon, w_proj=t.w_proj, w_window=t.w_window,
      window_hu=tuple(float(h) for h in t.window_hu), w_bone=t.w_bone,
      bone_hu=float(t.bone_hu), ema_decay=t.ema_decay,
      noise_photons=config.drr.noise_photons, intensity_gain=config.drr.intensity_gain,
      intensity_gamma=config.drr.intensity_gamma, remat=t.remat == "generator",
      sid_range=tuple(float(x) for x in config.drr.sid_range),
      parallel_share=config.drr.parallel_share,
      opposite_side_share=config.drr.opposite_side_share,
      accum_steps=accum_steps(config))
  init = lambda g, d: step_lib.init_state(scfg, g, d, config.seed)
  args = (nnx.to_pure_dict(g_params), nnx.to_pure_dict(d_params))
  # One program for the optimiser states and the EMA copy (eagerly they were ~80 small programs,
  # each loaded from the compilation cache on a warm start).
  state = jax.eval_shape(init, *args) if abstract else jax.jit(init)(*args)
  return scfg, state


def accum_steps(config: ml_collections.ConfigDict) -> int:
  """Micro-batches per train step: the per-device batch over `train.microbatch` (1 when 0)."""
  t = config.train
  per_device = t.batch_size // jax.device_count()
  if not t.microbatch or t.microbatch >= per_device:
    return 1
  return per_device // t.microbatch


def fault_point(point: str, step: int) -> None:
  """Fault injection for tests: CVAA_FAULT_KILL_AT='point:step[,point:step]' SIGKILLs the process
  at that point -- 'step' (after a train step), 'save' (a checkpoint write in flight), 'eval'
  (during validation), 'best' (a best/ write in flight), 'report' (during the final report)."""
  spec = os.environ.get("CVAA_FAULT_KILL_AT", "")
  if f"{point}:{step}" in spec.split(","):
    os.kill(os.getpid(), signal.SIGKILL)
  fill = os.environ.get("CVAA_FAULT_FILL_AT", "")  # 'point:step:folder': fill its filesystem
  for item in fill.split(","):
    p, _, rest = item.partition(":")
    s, _, folder = rest.partition(":")
    if p == point and s == str(step) and folder:
      _fill_filesystem(pathlib.Path(folder))


def _fill_filesystem(folder: pathlib.Path) -> None:
  """Writes `folder`/filler until the filesystem is full (a real ENOSPC for what follows)."""
  fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
  try:
    for size in (1 << 20, 4096, 1):  # down to the last byte
      try:
        while True:
          os.write(fd, b"\0" * size)
      except OSError:
        pass
  finally:
    os.close(fd)


class MetricWriter:
  """JSONL always; TensorBoard event files where tensorboardX is installed. On resume, JSONL lines
  of steps after the resume point (written before a kill, replayed now) are dropped, and the new
  event file starts with a purge marker at the first replayed step, so TensorBoard hides the
  earlier files' events from there on (each step is shown once). Only process 0 writes
  (`enabled`)."""

  def __init__(self, workdir: pathlib.Path, resume_step: int = 0, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    path = workdir / "metrics.jsonl"
    if path.exists():
      kept = []
      for line in path.read_text().splitlines():
        try:
          if json.loads(line).get("step", 0) <= resume_step:
            kept.append(line)
        except ValueError:
          continue  # a line cut short by the kill
      tmp = path.with_suffix(".jsonl.tmp")
      tmp.write_text("".join(k + "\n" for k in kept))
      os.replace(tmp, path)
    self.jsonl = open(path, "a")
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      tb_dir = workdir / "tensorboard"
      earlier = tb_dir.is_dir() and any(tb_dir.iterdir())  # a restart, from a checkpoint or not
      self.tb = SummaryWriter(str(tb_dir), purge_step=resume_step + 1 if earlier else None)
    except ImportError:
      self.tb = None

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    self.jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
    self.jsonl.flush()
    if self.tb is not None:
      for k, v in scalars.items():
        self.tb.add_scalar(k, float(v), step)
      self.tb.flush()

  def close(self) -> None:
    if not self.enabled:
      return
    self.jsonl.close()
    if self.tb is not None:
      self.tb.close()


def evaluate(scfg, params, cases, split: str, batch_size: int, predict_fn,
             keep: dict | None = None) -> tuple[list, list]:
  """Per-case metrics ([0, 1] range) of `params` on one split's deterministic DRR pairs.

  `keep` (a dict) receives the first case's id, ground truth and prediction, so a figure needs
  no second prediction (a batch-of-one forward would be one more compiled program)."""
  per_case, ids = [], []
  for batch in pipeline.eval_batches(cases, split, batch_size):
    vol = jnp.asarray(batch["volume"])
    pred = predict_fn(params, vol, batch.get("frontal"), batch.get("lateral"))
    m = {k: np.asarray(v) for k, v in metrics_lib.all_metrics(pred, vol, data_range=1.0).items()}
    for i, ok in enumerate(batch["valid"]):
      if ok:
        if keep is not None and not keep:
          keep.update(case_id=batch["case_id"][i], truth=np.asarray(batch["volume"][i]),
                      pred=np.asarray(pred[i]))
        per_case.append({k: float(v[i]) for k, v in m.items()})
        ids.append(batch["case_id"][i])
  return per_case, ids


def _mean_volume_baseline(cases, split: str) -> tuple[list, list]:
  """The trivial reference: predict the mean training volume for every case (the mean of the real
  training CTs when phantoms were mixed in: the held-out cases are real)."""
  pool = [c for c in cases if c.split == "train"]
  pool = [c for c in pool if not c.is_phantom] or pool
  train = [np.asarray(c.load(), np.float32) for c in pool]
  mean = np.mean(train, axis=0)
  per_case, ids = [], []
  for c in cases:
    if c.split == split:
      vol = np.asarray(c.load(), np.float32)
      m = metrics_lib.all_metrics(mean[None], vol[None], data_range=1.0)
      per_case.append({k: float(v[0]) for k, v in m.items()})
      ids.append(c.case_id)
  return per_case, ids


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                       cases=None) -> dict:
  workdir = pathlib.Path(workdir)
  t = config.train
  if cases is None:
    cases = dataset.prepare(config.data.to_dict(), workdir / "data", seed=config.seed,
                            log=logging.info, keep_scans=augment.keeps_scans(config))
  n_train = sum(c.split == "train" for c in cases)
  if t.batch_size % jax.device_count():
    raise ConfigError(f"config.train.batch_size ({t.batch_size}) must be divisible by the "
                      f"{jax.device_count()} devices.")
  per_device = t.batch_size // jax.device_count()
  if t.microbatch and per_device % t.microbatch:
    raise ConfigError(f"config.train.microbatch ({t.microbatch}) must divide the per-device batch "
                      f"({t.batch_size} over {jax.device_count()} devices = {per_device}); use a "
                      "divisor of it, or 0 for the whole batch at once.")
  if accum_steps(config) > 1:
    logging.info("micro-batches of %d per device: %d passes per step, gradients accumulated "
                 "(%s loop)", t.microbatch, accum_steps(config), step_lib.accumulation_form())
  if n_train < t.batch_size // jax.process_count():
    raise ConfigError(f"config.train.batch_size ({t.batch_size}) exceeds the {n_train} training "
                      "cases; lower it or add data.")
  steps_per_epoch = max(1, n_train // t.batch_size)
  total = t.num_steps if t.num_steps > 0 else t.num_epochs * steps_per_epoch
  logging.info("training %s (fusion %s) for %d steps (%d per epoch), global batch %d on %d "
               "devices", config.model.name, config.model.fusion, total, steps_per_epoch,
               t.batch_size, jax.device_count())

  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P("data"))
  ckpt = ckpt_lib.Checkpointer(workdir, keep=t.keep_checkpoints)
  start = ckpt.latest_step()
  # Resuming: the checkpoint supplies every value, so the state is built from shapes only (no
  # initialiser programs to compile or load: 0.5 s of a warm start, more cold).
  scfg, state = build(config, total, abstract=start is not None)
  if start is None:
    state = jax.device_put(state, replicated)
  keys = ("volume", "frontal", "lateral") if all(
      c.xray_paths for c in cases if c.split == "train") else ("volume",)
  # The learning-rate decay's steps enter as arguments: one compiled step serves any run length,
  # so continuing a run with more steps loads it from the compilation cache.
  schedule = jax.device_put(tuple(np.int32(v) for v in step_lib.decay_schedule(total,
                                                                              t.decay_start)),
                            replicated)
  step_fn = jax.jit(lambda s, b, r: step_lib.train_step(scfg, s, b, r),
                    in_shardings=(replicated, {k: data_sharding for k in keys}, replicated),
                    out_shardings=(replicated, replicated), donate_argnums=0)
  predict_fn = jax.jit(lambda p, v, f=None, l=None: step_lib.predict(scfg, p, v, f, l))

  per_process = t.batch_size // jax.process_count()
  data = pipeline.train_dataset(cases, per_process, seed=config.seed, num_epochs=None,
                                shift_voxels=config.drr.shift_voxels, num_workers=t.num_workers,
                                augment=augment.from_config(config),
                                phantom_share=config.data.phantom_share)
  data_iter = iter(data)
  config_dict = json.loads(config.to_json_best_effort())
  if start is not None and start > total:
    ckpt.close()
    raise ConfigError(f"{workdir / 'checkpoints'}: the run is at step {start}, beyond the "
                      f"{total} steps now configured; raise train.num_steps (or num_epochs) to "
                      "continue it, or train the shorter run in a new --workdir.")
  if start is not None:
    restored, step, damaged = ckpt.restore_newest_intact(
        ckpt_lib.abstract_like(state, replicated), data_iter)
    for bad, problem, where in damaged:
      newer = f"resuming from step {step}" if step is not None else "no intact one left: starting over"
      logging.warning("checkpoint step %d is damaged (%s): moved to %s; %s", bad, problem, where,
                      newer)
    if restored is None:
      data_iter = iter(data)
      scfg, state = build(config, total)
      state = jax.device_put(state, replicated)
    else:
      state = restored
      logging.info("resumed from %s at step %d", workdir / "checkpoints", step)
  for bad, problem, where in ckpt.set_aside_best():
    logging.warning("best/ step %d is damaged (%s): moved to %s", bad, problem, where)
  start = int(state.step)
  dropped = ckpt.drop_best_after(start)
  if dropped:
    logging.info("best/: dropped step(s) %s newer than the resume point %d (they are replayed)",
                 dropped, start)
  primary = jax.process_index() == 0
  writer = MetricWriter(workdir, start, enabled=primary)
  # Evaluation runs on each process's own devices with host copies of the (replicated) parameters,
  # so it needs no cross-process traffic; every process computes the same numbers.
  to_host = (lambda tree: jax.device_get(tree)) if jax.process_count() > 1 else (lambda tree: tree)
  t0, last_step, last_time = time.time(), start, time.time()
  if jax.process_count() > 1 and start < total:
    # Compile before the first collective runs, then meet: gloo sets up its connections at the
    # first cross-process collective and times out if a peer is still compiling.
    first = next(data_iter)
    batch = {k: jax.make_array_from_process_local_data(data_sharding, first[k]) for k in keys}
    step_fn = step_fn.lower(state, batch, schedule).compile()
    distributed.barrier(f"compiled {start}")
    pending = [first]
  else:
    pending = []
  try:
    for step in range(start, total):
      local = pending.pop() if pending else next(data_iter)
      batch = {k: jax.make_array_from_process_local_data(data_sharding, local[k]) for k in keys}
      state, m = step_fn(state, batch, schedule)
      done = step + 1
      fault_point("step", done)
      if done % t.log_every == 0 or done == total:
        m = jax.device_get(m)
        _check_finite(state)
        now = time.time()
        rate = (done - last_step) / max(now - last_time, 1e-9)
        last_step, last_time = done, now
        logging.info("step %d/%d  g %.4f (adv %.4f recon %.5f proj %.5f)  d %.4f  %.2f steps/s  "
                     "ETA %.0f s", done, total, m["g/total"], m["g/adv"], m["g/recon"],
                     m["g/proj"], m["d/total"], rate, (total - done) / max(rate, 1e-9))
        writer.write(done, {**m, "steps_per_sec": rate})
      if done % t.eval_every == 0 or done == total:
        per_case, _ = evaluate(scfg, to_host(state.ema_params), cases, "val", t.eval_batch_size,
                               predict_fn)
        fault_point("eval", done)
        if per_case:
          val = {f"val/{k}": v["mean"] for k, v in report.summarize(per_case).items()}
          logging.info("step %d validation: %s", done, {k: round(v, 5) for k, v in val.items()})
          writer.write(done, val)
          _check_finite(state)
          ckpt.save_best(done, state, config_dict, val)
          fault_point("best", done)
      if done % t.checkpoint_every == 0 or done == total:
        _check_finite(state)
        ckpt.save(done, state, data_iter, config_dict)
        fault_point("save", done)  # dies while the async write is in flight
  except BaseException as e:
    # The error in flight is the one to report: finish (or fail) the checkpoint writes in flight
    # quietly, so their own failures (a full disk fails them all) neither replace it nor leave
    # background reads running into interpreter exit ('Event loop is closed' tracebacks).
    _quietly(ckpt.wait)
    _quietly(writer.close)
    _quietly(ckpt.close)
    if not isinstance(e, ckpt_lib.DiskFullError) and ckpt_lib.disk_full_cause(e):
      raise ckpt.no_space(ckpt_lib.disk_full_cause(e)) from None  # e.g. metrics, TensorBoard
    raise
  ckpt.wait()
  writer.close()
  try:
    result = _final_report(config, workdir, scfg, state, cases, predict_fn, primary, to_host)
  except BaseException:
    _quietly(ckpt.close)
    raise
  ckpt.close()
  result["train_seconds"] = time.time() - t0
  return result


def _quietly(fn) -> None:
  try:
    fn()
  except Exception:  # pylint: disable=broad-except  # only on a path that already raises
    pass


def _check_finite(state) -> None:
  bad = int(jax.device_get(state.bad_step))
  if bad >= 0:
    raise NonFiniteError(f"training diverged: non-finite loss or gradient at step {bad}; the last "
                         "checkpoint in the workdir is intact. Lower config.train.learning_rate "
                         "or check the data.")


def _final_report(config, workdir, scfg, state, cases, predict_fn, primary=True,
                  to_host=lambda tree: tree) -> dict:
  """Test-split metrics of the EMA generator next to the mean-volume baseline, plus a figure."""
  out = workdir / "eval"
  split = "test" if any(c.split == "test" for c in cases) else "val"
  if not any(c.split == split for c in cases):
    logging.warning("no validation or test cases: the held-out report is skipped")
    return {"split": None, "model": None, "mean_volume_baseline": None,
            "steps": int(state.step), "note": "no held-out cases (dataset too small)"}
  first = {}
  per_case, ids = evaluate(scfg, to_host(state.ema_params), cases, split,
                           config.train.eval_batch_size, predict_fn, keep=first)
  fault_point("report", int(state.step))
  base_cases, _ = _mean_volume_baseline(cases, split)
  base = report.summarize(base_cases)
  name = f"{config.model.name}" + (f"-{config.model.fusion}" if config.model.name == "cvaa_gan"
                                   else "")
  if not primary:
    return {"split": split, "model": report.summarize(per_case), "mean_volume_baseline": base,
            "steps": int(state.step)}
  summary = report.write(out, split, per_case, ids, extra_rows={"mean-volume baseline": base},
                         label=name,
                         note=f"Metrics on [0, 1]-normalised volumes (data_range 1) of HU "
                              f"[{config.data.hu_min:g}, {config.data.hu_max:g}], {split} split, "
                              f"{len(per_case)} cases, EMA generator.")
  logging.info("%s metrics:\n%s", split, (out / f"{split}_summary.md").read_text())
  viz.save_slices_png({"ground truth": first["truth"], name: first["pred"]},
                      out / f"{split}_{first['case_id']}.png", vmax=0.35)
  return {"split": split, "model": summary, "mean_volume_baseline": base,
          "steps": int(state.step)}


def resolve_which(workdir: str | pathlib.Path, which: str, ckpt=None) -> str:
  """`which`, or 'latest' where 'best' is asked for and best/ holds no checkpoint: a run without a
  validation split (e.g. configs/real64.py) keeps its EMA model and writes no best/."""
  if which != "best":
    return which
  own = ckpt is None
  ckpt = ckpt or ckpt_lib.Checkpointer(pathlib.Path(workdir), keep=1, reader=True)
  try:
    if ckpt.best.best_step() is None and ckpt.latest.latest_step() is not None:
      logging.warning("%s: no best/ checkpoint (no validation split); using the latest one.",
                      workdir)
      return "latest"
    return which
  finally:
    if own:
      ckpt.close()


def restore_for_inference(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                          which: str = "latest"):
  """(step config, EMA generator parameters, step) from a workdir's 'latest' or 'best' checkpoint."""
  workdir = pathlib.Path(workdir)
  scfg, state = build(config, total_steps=1, abstract=True)  # shapes: the checkpoint has the values
  ckpt = ckpt_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints, reader=True)
  which = resolve_which(workdir, which, ckpt)
  # Candidates, newest first: best/'s step (for 'best'), then the latest checkpoints. A damaged one
  # is skipped with a warning (readers never move files: a training may own the workdir).
  candidates = [(ckpt.best, s) for s in ([ckpt.best.best_step()] if which == "best" else [])
                if s is not None]
  candidates += [(ckpt.latest, s) for s in sorted(ckpt.latest.all_steps(), reverse=True)]
  if not candidates:
    ckpt.close()
    raise CvaaError(f"{workdir / ('checkpoints' if which == 'latest' else 'best')}: no checkpoint; "
                    "train first (python launch.py --config=... --workdir=...).")
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  skipped, restored = [], None
  ckpt_lib.quiet_abandoned_orbax_tasks()  # a damaged checkpoint's restore leaves reads behind
  for mgr, step in candidates:
    step_dir = pathlib.Path(mgr.directory) / str(step)
    problem = ckpt_lib.damage(step_dir, ("state",))
    if problem is None:
      mismatch = ckpt_lib.first_mismatch(step_dir, state)
      if mismatch:
        ckpt.close()
        raise CvaaError(f"{workdir}: its checkpoint (step {step}) does not match the model its "
                        f"config.json describes: {mismatch}. The workdir's files were mixed: "
                        "restore config.json or retrain.")
      try:
        # Onto this process's first device, whatever device count wrote the checkpoint.
        one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        restored = mgr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(ckpt_lib.abstract_like(state, one))))
        break
      except Exception as e:  # pylint: disable=broad-except  # shapes matched: the files are bad
        problem = ckpt_lib._short(e)  # pylint: disable=protected-access
    skipped.append(f"{step_dir} ({problem})")
  if skipped:
    logging.warning("damaged checkpoint(s) skipped: %s; %s", "; ".join(skipped),
                    f"using {step_dir}" if restored is not None else "none left")
  if restored is None:
    ckpt.close()
    raise CvaaError(f"{workdir}: no intact checkpoint ({'; '.join(skipped)}); retrain, or resume "
                    "the training (it sets damaged ones aside).")
  ckpt.close()
  return scfg, restored.state.ema_params, step
