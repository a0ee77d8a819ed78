"""Measured latency of LAUD backbones on this machine, dynamic inference
against the static (BN-folded) backbone, one module per model family:
:mod:`.resnet` (with the spatial blocks' per-step split in
:mod:`.spatial_steps`), :mod:`.regnet`, :mod:`.t2t_vit`; :mod:`.common`
holds what the CNN benchmarks share, :mod:`.in_network` the per-block
times within the whole forward. Command lines:
``tools/analysis_tools/benchmark_{latency,regnet,t2t_vit}.py``."""
