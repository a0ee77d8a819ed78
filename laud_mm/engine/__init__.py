from .amp import CPUAmpOptimWrapper
from .hooks import GumbelTemperatureHook
from .safe_load import register_safe_globals
from .dist_test_log import patch_test_json_dump

__all__ = ['CPUAmpOptimWrapper', 'GumbelTemperatureHook', 'register_safe_globals',
           'patch_test_json_dump']
