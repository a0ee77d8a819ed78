from .gumbel_temperature import GumbelTemperatureHook

__all__ = ['GumbelTemperatureHook']
