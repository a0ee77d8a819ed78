# Demo stage 3 (tools/run_demo.sh): the stage-2 detector evaluated with the
# dynamic-inference kernels, its backbone latency predicted twice beside the
# COCO mAP: on the paper's V100 model (laud/, the fused operators of sec.
# 3.3) and on this CPU (laud_cpu/: the eager model of this project's CPU
# path, priced on a spec calibrated on this machine), next to the speed-up
# laud_mm.BackboneSpeedHook measures on the same batches (laud/measured_*).
# The CPU spec comes from
#   python tools/analysis_tools/calibrate_hardware.py --threads N --fit \
#       --layout auto --out work_dirs/demo/cpu_calibrated.yaml
# with N the evaluation's thread count and the inputs in the memory format
# laud_mm.BackboneSpeedHook feeds the dynamic backbone (its
# dynamic_memory_format: channels_last on AVX-512 CPUs), so that the
# predicted and the measured speed-ups are of the same path (run_demo.sh
# runs it and points test_evaluator.2.hardware at its own work directory).
_base_ = './faster-rcnn_laud-r50-spatial_coco-tiny.py'
cpu_hardware = 'work_dirs/demo/cpu_calibrated.yaml'
test_evaluator = _base_.val_evaluator + [
    # batches of the test loader's size: what the speed hook times
    dict(type='laud_mm.BackboneLatencyMetric', hardware=cpu_hardware,
         implementation='eager', batch_size=_base_.test_dataloader.batch_size,
         prefix='laud_cpu'),
]
