from .backbone_latency import BackboneLatencyMetric

__all__ = ['BackboneLatencyMetric']
