from .amp import CPUAmpOptimWrapper
from .hooks import GumbelTemperatureHook
from .safe_load import register_safe_globals

__all__ = ['CPUAmpOptimWrapper', 'GumbelTemperatureHook', 'register_safe_globals']
