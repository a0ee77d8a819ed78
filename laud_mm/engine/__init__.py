"""Training and evaluation plumbing registered with mmengine: hooks
(:mod:`.hooks`), the CPU mixed-precision optimizer wrapper (:mod:`.amp`)
and CPU distributed set-up (:mod:`.dist`)."""
from .amp import CPUAmpOptimWrapper
from .hooks import (BackboneSpeedHook, FoldCacheResetHook, GumbelNoiseHook,
                    GumbelTemperatureHook, MainProcessLoggerHook,
                    RNGStateHook, WeightsOnlyCheckpointHook)

__all__ = ['CPUAmpOptimWrapper', 'BackboneSpeedHook', 'FoldCacheResetHook',
           'GumbelNoiseHook',
           'GumbelTemperatureHook', 'RNGStateHook', 'MainProcessLoggerHook',
           'WeightsOnlyCheckpointHook']
