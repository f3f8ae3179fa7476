"""Binary samples from a run's checkpoint (the ``generate`` command, and ``evaluate``'s source)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from .checkpoint import RunError, load_checkpoint, read_run_config
from .config import Config
from .models import build_models, sample_latent

__all__ = ["load_generator", "generate", "draw_samples"]


def load_generator(run_dir: Union[str, Path], device: str = "cpu") -> tuple[nn.Module, Config, int]:
    """The trained G of a run (its moving average, if the run keeps one), in evaluation mode
    on ``device``, with the run's config and the generator step of its checkpoint."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was requested but no CUDA device is available")
    read_run_config(run_dir)  # a directory without a run fails here, with its own message
    checkpoint = load_checkpoint(run_dir)
    config = Config.from_dict(checkpoint["config"]).replace(device=device)
    netG, _ = build_models(config)
    average = checkpoint.get("generator_ema")
    try:
        netG.load_state_dict(average if average is not None else checkpoint["generator"])
    except RuntimeError as error:
        cause = str(error).splitlines()[0]
        raise RunError(f"{run_dir}: the checkpoint's generator does not fit its settings "
                       f"({cause}); check the run directory") from None
    return netG.to(device).eval(), config, int(checkpoint["g_step"])


def generate(run_dir: Union[str, Path], num: int, seed: int = 0, device: str = "cpu",
             binarize: Optional[str] = None, batch_size: int = 1000,
             with_probabilities: bool = False):
    """``num`` binary samples, uint8 ``(num, 28, 28)`` of 0/1, from the run's checkpoint.

    z comes from a CPU generator seeded with ``seed`` (the same samples on every device), the
    samples' own randomness from one seeded with ``seed + 1``. ``binarize`` (``"threshold"``
    or ``"sample"``) overrides the run's setting for the real-valued model; binary-neuron
    models sample their own outputs, BGAN models draw Bernoulli samples of sigmoid(logits).
    With ``with_probabilities=True``, returns ``(samples, p)``, p the float32 ``(num, 28,
    28)`` pixel probabilities of the same z.
    """
    netG, config, _ = load_generator(run_dir, device)
    return draw_samples(netG, config, num, seed, binarize, batch_size, with_probabilities)


def draw_samples(netG: nn.Module, config: Config, num: int, seed: int = 0,
                 binarize: Optional[str] = None, batch_size: int = 1000,
                 with_probabilities: bool = False):
    """:func:`generate` for a loaded G (on its device)."""
    if num < 0:
        raise ValueError(f"--num must be >= 0, got {num}")
    binarize = binarize or config.binarize
    torch_device = next(netG.parameters()).device
    latent = torch.Generator().manual_seed(seed)
    noise = torch.Generator(torch_device).manual_seed(seed + 1)
    samples = [np.zeros((0, 28, 28), np.uint8)]
    probabilities = [np.zeros((0, 28, 28), np.float32)]
    for start in range(0, num, batch_size):
        z = sample_latent(config, min(batch_size, num - start), torch_device, latent)
        binary = netG.binary_samples(z, noise, binarize)
        samples.append(binary.squeeze(1).to(torch.uint8).cpu().numpy())
        if with_probabilities:
            with torch.no_grad():
                probabilities.append(netG.probability(z).squeeze(1).cpu().numpy())
    samples = np.concatenate(samples)
    return (samples, np.concatenate(probabilities)) if with_probabilities else samples
