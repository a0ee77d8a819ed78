"""Benchmark, validation and visualisation logic behind the command lines of
``tools/analysis_tools/`` (each tool parses its options and calls one
function here). Nothing else in the package imports this package.

Modules (one concept each):

- :mod:`.timing`: timing helpers (``timed``, ``bench_pair``, ``cpu_ms``);
- :mod:`.forced_gates`: random gate patterns at a chosen activation rate;
- :mod:`.benchmark`: measured dynamic vs static latency per model family
  (:mod:`.benchmark.resnet`, :mod:`.benchmark.spatial_steps`,
  :mod:`.benchmark.regnet`, :mod:`.benchmark.t2t_vit`);
- :mod:`.kernels`: kernel micro-benchmarks of the dynamic path;
- :mod:`.load_balance`: the fused kernels' thread partition at 2 - 64
  threads for random masks, computed without running them;
- :mod:`.configs`: a config's model built as mmengine's Runner builds it;
- :mod:`.prediction`: predicted latency of a config or an architecture;
- :mod:`.validation`: the predictor against measured latency;
- :mod:`.tradeoff`: accuracy against latency / FLOPs of several runs;
- :mod:`.visualization`: gate pictures on real images.

Hardware calibration is the latency package's own
(:mod:`laud_mm.latency.calibration`).
"""
