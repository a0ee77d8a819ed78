from .metrics import BackboneLatencyMetric

__all__ = ['BackboneLatencyMetric']
