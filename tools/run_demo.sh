#!/usr/bin/env bash
# README command 1: install what is missing, then run LAUDNet's pipeline at
# demo scale on the bundled real images (about 20 min on 2 cores, see the
# README for the measured time):
#   1. LAUD-R50 (spatial, target rate 0.5) trained on ../shared/data/
#      imagenette_subset with the sparsity loss and the temperature annealed
#      5 -> 0.1 (skipped when its checkpoint exists: re-runs reuse it);
#   2. that backbone, maskers included, fine-tuned in Faster R-CNN on
#      ../shared/data/coco_tiny with the sparsity loss (tau 0.1);
#   3. this CPU calibrated for the latency predictor (tools/analysis_tools/
#      calibrate_hardware.py at the evaluation's thread count, its inputs
#      in the memory format the speed hook feeds the dynamic backbone,
#      about 30 s),
#      then the checkpoint evaluated with the dynamic-inference
#      kernels: COCO box mAP, the activation rate, the backbone latency and
#      speed-up predicted on the paper's V100 model (laud/) and on this CPU
#      (laud_cpu/), and the speed-up measured on the evaluated images
#      (laud/measured_*).
# Extra arguments go to stage 2's tools/train.py (e.g. --cfg-options ...).
set -eo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
WORK=${WORK_DIR:-work_dirs/demo}
STAGE1_CFG=configs/demo/laud-r50-spatial_imagenette.py
STAGE2_CFG=configs/demo/faster-rcnn_laud-r50-spatial_coco-tiny.py
STAGE3_CFG=configs/demo/faster-rcnn_laud-r50-spatial_coco-tiny_cpu-latency.py
STAGE1_CKPT=$WORK/stage1_spatial_t0.5.pth
start=$(date +%s)

if [ -f "$STAGE1_CKPT" ]; then
  echo "[demo] stage 1: reusing $STAGE1_CKPT"
else
  echo "[demo] stage 1: LAUD-R50 spatial on imagenette_subset"
  python3 tools/train.py "$STAGE1_CFG" --work-dir "$WORK/stage1_spatial"
  cp "$(cat "$WORK/stage1_spatial/last_checkpoint")" "$STAGE1_CKPT"
fi

echo "[demo] stage 2: Faster R-CNN on coco_tiny from $STAGE1_CKPT"
python3 tools/train.py "$STAGE2_CFG" --work-dir "$WORK/faster_rcnn_spatial" \
    --cfg-options model.laud_weights="$STAGE1_CKPT" "$@"

# the spec of this machine at the thread count tools/test.py runs with
THREADS=$(python3 -c "import torch; print(torch.get_num_threads())")
CPU_SPEC=$WORK/cpu_calibrated.yaml
echo "[demo] stage 3: calibrating this CPU at $THREADS threads -> $CPU_SPEC"
python3 tools/analysis_tools/calibrate_hardware.py --threads "$THREADS" --fit \
    --layout auto --out "$CPU_SPEC"
echo "[demo] stage 3: dynamic inference on coco_tiny val2017"
CKPT=$(cat "$WORK/faster_rcnn_spatial/last_checkpoint")
python3 tools/test.py "$STAGE3_CFG" "$CKPT" --dynamic-inference \
    --work-dir "$WORK/faster_rcnn_spatial/test_dynamic" \
    --cfg-options model.laud_weights="$STAGE1_CKPT" \
    test_evaluator.2.hardware="$CPU_SPEC" 2>&1 | tee "$WORK/stage3.log"
echo "[demo] done in $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s"
grep -E "coco/bbox_mAP: " "$WORK/stage3.log" | tail -n 1
