"""Workarounds for upstream versions, one file each, each saying which
version it works around. They register with upstream's own extension
points (torch's safe-globals allow-list, a torch operator library); none
replaces an upstream class's code. ``laud_mm/__init__.py`` calls them
explicitly, before importing the models:

- :mod:`.torchvision_ops`: a CUDA-only torchvision wheel (0.28 for torch
  2.13; PyPI has no CPU build) imported beside a CPU torch;
- :mod:`.torch_load`: torch >= 2.6 loads with ``weights_only=True``,
  mmengine 0.10.7 does not pass ``weights_only``: allow-list the types of
  Runner checkpoints.
"""
from .torch_load import register_safe_globals
from .torchvision_ops import declare_missing_torchvision_ops

__all__ = ['register_safe_globals', 'declare_missing_torchvision_ops']
