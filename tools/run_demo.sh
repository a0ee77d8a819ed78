#!/usr/bin/env bash
# README command 1: install what is missing, then train the demo LAUD-R50
# Faster R-CNN on the real coco_tiny images (../shared/data/coco_tiny) and
# evaluate it: coco/bbox_mAP and the predicted backbone latency on one line,
# first masked-dense, then with the dynamic-inference kernels.
set -eo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
CFG=configs/demo/faster-rcnn_laud-r50-spatial_coco-tiny.py
WORK=${WORK_DIR:-work_dirs/demo_faster_rcnn}
python3 tools/train.py "$CFG" --work-dir "$WORK" "$@"
CKPT=$(ls -t "$WORK"/epoch_*.pth | head -n 1)
python3 tools/test.py "$CFG" "$CKPT" --work-dir "$WORK/test_dynamic" --dynamic-inference
