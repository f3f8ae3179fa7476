"""The trainer: configuration, data, models, then "(1) update D, (2) update G" until done.

Everything that differs between GAN, WGAN, WGAN-GP and discrete BGAN lives in their objective
(:mod:`.objectives`); this loop is the same for all of them.

Exact resumption: a checkpoint holds G, D, both optimizers, the slope annealer, G's moving
average (if any), every process's RNG state and the step counters, and the data order is a pure
function of ``--seed`` and the number of batches drawn. A run resumed from any checkpoint
repeats, bit for bit on the CPU with the same number of threads, what the uninterrupted run
would have done.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

import binary_neurons as bn

from . import distributed, plots
from .checkpoint import (CHECKPOINT, CONFIG, FORMAT, LOG, RunError, atomic_save, check_resume,
                         load_checkpoint, prepare_run_dir, start_log)
from .config import Config
from .data import BatchStream, load_images
from .models import MovingAverage, build_models, count_parameters, sample_latent
from .objectives import Objective, make_objective

__all__ = ["train"]

NUM_GRID = 64  # 8 x 8 sample grids


def train(config: Config, out: Optional[Path] = None, *, resume: bool = False,
          overwrite: bool = False, dry_run: bool = False, progress: bool = True) -> dict:
    """Train as ``config`` says, writing the run to ``out``; returns a summary (steps, time,
    final losses).

    ``out`` must not hold a run unless ``resume`` (continue it from its checkpoint) or
    ``overwrite`` (replace it). ``dry_run`` trains two generator steps on 32 random binary
    images with batch 8 and writes nothing.
    """
    if dry_run:
        config = config.replace(batch_size=8, epochs=1, max_steps=2, n_critic=min(
            config.n_critic, 2), n_critic_warmup=min(config.n_critic_warmup, 2), warmup_steps=0)
        out = None
    process = distributed.setup(config)
    try:
        summary = _train(config, process, None if out is None else Path(out), resume, overwrite,
                         dry_run, progress)
    except BaseException:
        distributed.teardown(process, failed=True)
        raise
    distributed.teardown(process)
    return summary


def update_d(objective: Objective, modelG: nn.Module, modelD: nn.Module,
             optimizerD: torch.optim.Optimizer, real: Tensor, z: Tensor) -> tuple[Tensor, dict]:
    """One D update on ``real`` against the objective's fakes of ``z``; returns the fakes and
    the objective's D outputs (``"loss"`` and what it logs)."""
    fake = objective.fake(modelG, z)
    out = objective.d_loss(modelD, real, fake)
    optimizerD.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizerD.step()
    objective.after_d_step(modelD)  # a DDP wrapper's parameters are D's own
    return fake, out


def update_g(objective: Objective, modelG: nn.Module, netD: nn.Module,
             optimizerG: torch.optim.Optimizer, z: Tensor, fake: Optional[Tensor]) -> dict:
    """One G update through ``netD`` (D itself, not a DDP wrapper), D's weights frozen; returns
    the objective's G outputs."""
    netD.requires_grad_(False)  # no gradients to D's weights
    try:
        out = objective.g_loss(modelG, netD, z, fake)
        optimizerG.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizerG.step()
    finally:
        netD.requires_grad_(True)
    return out


def _train(config: Config, process: distributed.Process, out: Optional[Path], resume: bool,
           overwrite: bool, dry_run: bool, progress: bool) -> dict:
    device = process.device
    say = print if process.is_main else (lambda *args: None)

    # ---- the run directory: a new run, or the checkpoint of the one to resume -------------
    checkpoint = None
    if out is not None:
        problem = None
        if process.is_main:  # rank 0 checks (and clears for --overwrite); all learn the verdict
            try:
                prepare_run_dir(out, resume, overwrite)
            except (RunError, OSError) as error:
                problem = str(error)
        problem = distributed.broadcast(process, problem)
        if problem is not None:
            raise RunError(problem)
        if resume:
            checkpoint = load_checkpoint(out)
            check_resume(Config.from_dict(checkpoint["config"]), config, out)
            if checkpoint["world_size"] != process.world:
                raise RunError(f"{out} was trained with {checkpoint['world_size']} processes, "
                               f"not {process.world}; resume with the same number")

    # ---- data ---------------------------------------------------------------------------------
    if dry_run:
        rng = torch.Generator().manual_seed(config.seed)
        images = (torch.rand(32, 28, 28, generator=rng) < 0.2).to(torch.uint8) * 255
    else:
        images = load_images(config.data_dir, config.split)
    stream = BatchStream(images, config.batch_size, config.seed, process.rank, process.world,
                         device)
    steps_per_epoch = stream.batches_per_epoch
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    if checkpoint is not None and checkpoint["g_step"] >= total_steps:
        raise RunError(f"{out} has trained {checkpoint['g_step']} generator steps and would stop "
                       f"at {total_steps}: nothing to resume; raise --epochs or --max-steps")

    # ---- models, objective, optimizers, slope annealer ----------------------------------------
    torch.manual_seed(config.seed)  # the same initial weights in every process
    netG, netD = build_models(config)
    netG.to(device)
    netD.to(device)
    objective = make_objective(config)
    optimizerG, optimizerD = objective.optimizer(netG), objective.optimizer(netD)
    annealer = bn.SlopeAnnealer(netG, factor=config.slope_factor) if config.anneals else None
    ema = MovingAverage(netG, config.ema) if config.ema is not None else None
    # Fixed noise for the figures from its own generator: the training RNG never sees it.
    fixed = torch.Generator().manual_seed(config.seed + 12345)
    fixed_z = sample_latent(config, NUM_GRID, device, fixed)
    hist_z = sample_latent(config, config.num_samples_hist, device, fixed)
    # Every process draws its own training noise (z, binary samples, the penalty's e).
    torch.manual_seed(config.seed + 1 + process.rank)
    if device.type == "cuda":
        torch.cuda.manual_seed(config.seed + 1 + process.rank)

    start, records = 0, []
    if checkpoint is not None:
        netG.load_state_dict(checkpoint["generator"])
        netD.load_state_dict(checkpoint["discriminator"])
        optimizerG.load_state_dict(checkpoint["g_optimizer"])
        optimizerD.load_state_dict(checkpoint["d_optimizer"])
        if annealer is not None:
            annealer.load_state_dict(checkpoint["annealer"])
        if ema is not None:
            ema.model.load_state_dict(checkpoint["generator_ema"])
        distributed.set_rng_state(process, checkpoint["rng"][process.rank])
        start, stream.position = checkpoint["g_step"], checkpoint["stream_position"]
        say(f"resuming {out} at generator step {start}")
    if out is not None and process.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        records, dropped = start_log(out, start)
        if dropped:
            say(dropped)
    modelG = distributed.wrap(process, netG, config.sync_bn)
    modelD = distributed.wrap(process, netD, config.sync_bn)

    g_params, d_params = count_parameters(netG), count_parameters(netD)
    say(f"{config.preset}: G {g_params:,} + D {d_params:,} parameters; {len(images):,} images, "
        f"{steps_per_epoch} G steps per epoch, {total_steps} G steps"
        + (f", {process.world} processes" if process.world > 1 else ""))

    def slope() -> Optional[float]:
        return float(netG.output.slope) if config.output in ("dbn", "sbn") else None

    # What G's binary layers do, measured on the last G update of each log window (a G with
    # none, as BGAN's, logs nothing). The probe runs G in evaluation mode on the fixed noise,
    # with its own RNG, so training draws and batch-norm statistics are untouched.
    diagnostics = bn.Diagnostics(netG) if any(
        isinstance(module, bn.BinaryNeuron) for module in netG.modules()) else None

    def probe() -> None:
        netG.eval()
        try:
            netG(fixed_z, torch.Generator(device).manual_seed(0))
        finally:
            netG.train()

    def save_checkpoint(step: int) -> None:
        rng = distributed.gather(process, distributed.rng_state(process))
        if out is not None and process.is_main:
            atomic_save({
                "format": FORMAT, "config": config.to_dict(), "world_size": process.world,
                "g_step": step, "stream_position": stream.position,
                "generator": netG.state_dict(), "discriminator": netD.state_dict(),
                "g_optimizer": optimizerG.state_dict(), "d_optimizer": optimizerD.state_dict(),
                "annealer": annealer.state_dict() if annealer is not None else None, "rng": rng,
                "generator_ema": ema.model.state_dict() if ema is not None else None,
            }, out / CHECKPOINT)

    bar = None
    if progress and process.is_main and not dry_run:
        from tqdm import tqdm

        # Redrawn often on a terminal; into a log file (CI), a line every 30 s is enough.
        bar = tqdm(total=total_steps, initial=start, desc=f"{config.preset} (G updates)",
                   unit="step", dynamic_ncols=True,
                   mininterval=0.1 if sys.stderr.isatty() else 30.0)
    log = open(out / LOG, "a") if out is not None and process.is_main else None
    netG.train()
    netD.train()
    window: dict[str, list[float]] = {}
    started = window_start = time.perf_counter()
    try:
        for step in range(start, total_steps):
            if annealer is not None and step > 0 and step % steps_per_epoch == 0:
                # Epoch e trains at slope factor**e. Stepping here, not after an epoch, leaves
                # a finished run at the slope it last trained with.
                annealer.step()

            # (1) update D: critic_steps(step) times, on real data and G's samples
            for i in range(objective.critic_steps(step)):
                if i == 0 or config.batches == "fresh":  # "reuse": one x and z per G step
                    real = stream.next()  # B x 1 x 28 x 28
                    z = sample_latent(config, config.batch_size, device)
                fake, d_out = update_d(objective, modelG, modelD, optimizerD, real, z)

            # (2) update G through D, D's weights frozen
            if config.batches == "fresh":
                z, fake = sample_latent(config, config.batch_size, device), None
            measured = diagnostics is not None and ((step + 1) % config.log_every == 0
                                                    or step + 1 == total_steps)
            with diagnostics.record() if measured else contextlib.nullcontext():
                g_out = update_g(objective, modelG, netD, optimizerG, z, fake)
            if ema is not None:
                ema.update(netG)

            # ---- log, figures, checkpoint (rank 0 writes) -----------------------------------
            done = step + 1
            # tensors; an objective's own "d_loss" (without its penalty) replaces the total
            stats = {"d_loss": d_out.pop("loss"), "g_loss": g_out.pop("loss"), **d_out, **g_out}
            for key, value in stats.items():
                window.setdefault(key, []).append(float(value.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(d=f"{window['d_loss'][-1]:.3f}", g=f"{window['g_loss'][-1]:.3f}",
                                refresh=False)
            if done % config.log_every == 0 or done == total_steps:
                now = time.perf_counter()
                record = {"step": done, "epoch": done / steps_per_epoch,
                          **{k: sum(v) / len(v) for k, v in window.items()}, "slope": slope(),
                          "d_steps": objective.critic_steps(step),
                          "sec_per_step": (now - window_start) / len(window["g_loss"]),
                          "elapsed": now - started}
                if diagnostics is not None:
                    record.update({f"G.{key}": value
                                   for key, value in diagnostics.summary(probe).items()})
                records.append(record)
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if dry_run:
                    say("dry run: " + json.dumps(record))
                window, window_start = {}, now
            figures_due = (done % config.sample_every == 0 if config.sample_every
                           else done % steps_per_epoch == 0)
            if out is not None and process.is_main and (figures_due or done == total_steps):
                sampler = netG if ema is None else ema.model  # what generate uses
                plots.write_figures(out, done, sampler, fixed_z, hist_z, config.seed,
                                    config.binarize, config.preset, config.hist_bins, records)
            if out is not None and (done % config.checkpoint_every == 0 or done == total_steps):
                save_checkpoint(done)
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()

    elapsed = time.perf_counter() - started
    if process.world > 1:  # DDP keeps the replicas equal; check it
        checksum = sum(float(p.detach().double().sum()) for p in netG.parameters())
        if len(set(distributed.gather(process, checksum))) != 1:
            raise RunError("G's weights differ across processes")
    last = records[-1] if records else {}
    summary = {"preset": config.preset, "steps": total_steps, "steps_this_run": total_steps - start,
               "seconds": elapsed, "g_params": g_params, "d_params": d_params,
               "d_loss": last.get("d_loss"), "g_loss": last.get("g_loss"), "slope": slope(),
               "out": None if out is None else str(out)}
    if out is not None:
        rate = (total_steps - start) / elapsed if elapsed > 0 else float("nan")
        say(f"done: {total_steps} G steps ({total_steps - start} in {elapsed:.0f} s, {rate:.1f} "
            f"G steps/s).\noutputs in {out}/: samples.png, probabilities.png, histogram.png, "
            f"losses.png, {LOG}, {CONFIG}, {CHECKPOINT}, samples/")
    return summary
