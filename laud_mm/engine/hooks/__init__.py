"""Hooks laud_mm registers, one job each, named in the LAUD configs."""
from .backbone_speed import BackboneSpeedHook
from .fold_cache import FoldCacheResetHook
from .gumbel_noise import GumbelNoiseHook
from .gumbel_temperature import GumbelTemperatureHook
from .logger import MainProcessLoggerHook
from .rng_state import RNGStateHook
from .weights_only_checkpoint import (WeightsOnlyCheckpointHook,
                                      WeightsOnlyHistoryBuffer)

__all__ = ['BackboneSpeedHook', 'FoldCacheResetHook', 'GumbelNoiseHook',
           'GumbelTemperatureHook',
           'RNGStateHook', 'MainProcessLoggerHook',
           'WeightsOnlyCheckpointHook', 'WeightsOnlyHistoryBuffer']
