"""The trained weights of a model (what requires grad) as a state dict, and that state dict as a safetensors file."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights that train (a head, an adapter and its head), copied to the CPU."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def save_state(state: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(path))
    return path


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))
