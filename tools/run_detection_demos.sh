#!/usr/bin/env bash
# The demo runs behind docs/detection_demos.md, at the demo scale of
# tools/run_demo.sh, on the bundled real images (hours on 2 cores):
#   demos     the five detector demos (Faster R-CNN spatial, RetinaNet layer,
#             Mask R-CNN channel, DDQ-DETR layer, Mask2Former spatial), each
#             from the stage-1 LAUD-R50 of its paradigm (target rate 0.5),
#             trained, then evaluated with --dynamic-inference;
#   tradeoff  the Faster R-CNN demo pipeline (stage 1 on imagenette_subset,
#             stage 2 on coco_tiny, dynamic-inference test with the measured
#             backbone speed-up) at target rates 0.3, 0.5, 0.7 for each
#             paradigm, plus the static baseline with the same schedule, and
#             the trade-off figure docs/images/tradeoff_faster_rcnn.png.
# Usage: bash tools/run_detection_demos.sh {demos|tradeoff|all}
# A stage-1 checkpoint that exists is reused, and so is a stage-2/3 run that
# finished (its test_dynamic JSON log exists): delete its directory to re-run
# it after a config change. Logs: $WORK/*.log.
set -eo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
case "$WHAT" in demos|tradeoff|all) ;; *)
  echo "usage: bash tools/run_detection_demos.sh {demos|tradeoff|all}" >&2; exit 2;; esac
WORK=${WORK_DIR:-work_dirs/demo}
mkdir -p "$WORK"

# stage1 PARADIGM RATE -> $WORK/stage1_<paradigm>_t<rate>.pth (static: stage1_static.pth)
stage1() {
  local p=$1 t=$2 cfg out dir
  if [ "$p" = static ]; then
    cfg=configs/demo/resnet50_static_imagenette.py; out=$WORK/stage1_static.pth
    dir=$WORK/stage1_static; opts=()
  else
    cfg=configs/demo/laud-r50-${p}_imagenette.py; out=$WORK/stage1_${p}_t${t}.pth
    dir=$WORK/stage1_${p}_t${t}; opts=(--cfg-options model.sparsity_loss.target_rate="$t")
  fi
  if [ ! -f "$out" ]; then
    echo "[demos] stage 1: $cfg (t = $t)"
    /usr/bin/time -f "stage1 $p $t: %e s" -a -o "$WORK/times.txt" \
      python3 tools/train.py "$cfg" --work-dir "$dir" "${opts[@]}" > "$dir.log" 2>&1
    cp "$(cat "$dir/last_checkpoint")" "$out"
  fi
  echo "$out"
}

# stage23 NAME CONFIG STAGE1_CKPT [cfg-options...]: train, then test with dynamic inference
stage23() {
  local name=$1 cfg=$2 ckpt=$3; shift 3
  local dir=$WORK/$name
  if ls "$dir"/test_dynamic/*/*.json > /dev/null 2>&1; then
    echo "[demos] $name: reusing the finished run $dir (delete it to re-run)" >&2
    return
  fi
  echo "[demos] $name: $cfg from $ckpt"
  /usr/bin/time -f "train $name: %e s" -a -o "$WORK/times.txt" \
    python3 tools/train.py "$cfg" --work-dir "$dir" \
      --cfg-options model.laud_weights="$ckpt" "$@" > "$dir.train.log" 2>&1
  /usr/bin/time -f "test $name: %e s" -a -o "$WORK/times.txt" \
    python3 tools/test.py "$cfg" "$(cat "$dir/last_checkpoint")" --dynamic-inference \
      --work-dir "$dir/test_dynamic" \
      --cfg-options model.laud_weights="$ckpt" "$@" > "$dir.test.log" 2>&1
  grep -E "Epoch\(test\)" "$dir.test.log" | tail -n 1
}

if [ "$WHAT" = demos ] || [ "$WHAT" = all ]; then
  for p in spatial channel layer; do stage1 "$p" 0.5 > /dev/null; done
  # tools/run_demo.sh writes the same run (same directory: reused)
  stage23 faster_rcnn_spatial configs/demo/faster-rcnn_laud-r50-spatial_coco-tiny.py "$WORK/stage1_spatial_t0.5.pth"
  stage23 retinanet_layer configs/demo/retinanet_laud-r50-layer_coco-tiny.py "$WORK/stage1_layer_t0.5.pth"
  stage23 mask-rcnn_channel configs/demo/mask-rcnn_laud-r50-channel_coco-tiny.py "$WORK/stage1_channel_t0.5.pth"
  stage23 ddq_layer configs/demo/ddq-detr-4scale_laud-r50-layer_coco-tiny.py "$WORK/stage1_layer_t0.5.pth"
  stage23 mask2former_spatial configs/demo/mask2former_laud-r50-spatial_coco-tiny.py "$WORK/stage1_spatial_t0.5.pth"
fi

if [ "$WHAT" = tradeoff ] || [ "$WHAT" = all ]; then
  runs=()
  for p in spatial channel layer; do
    for t in 0.3 0.5 0.7; do
      ck=$(stage1 "$p" "$t" | tail -n 1)
      name=tradeoff_${p}_t${t}
      # this point is the Faster R-CNN spatial demo (tools/run_demo.sh's
      # run, or the demos above): reused when finished
      if [ "$p" = spatial ] && [ "$t" = 0.5 ]; then name=faster_rcnn_spatial; fi
      stage23 "$name" "configs/demo/faster-rcnn_laud-r50-${p}_coco-tiny.py" "$ck" \
        model.sparsity_loss.target_rate="$t"
      runs+=("$(ls "$WORK/$name"/test_dynamic/*/*.json | tail -n 1)")
    done
  done
  ck=$(stage1 static 1.0 | tail -n 1)
  stage23 tradeoff_static configs/demo/faster-rcnn_r50-static_coco-tiny.py "$ck"
  runs+=("$(ls "$WORK/tradeoff_static"/test_dynamic/*/*.json | tail -n 1)")
  python3 tools/analysis_tools/plot_tradeoff.py "${runs[@]}" --annotate \
    --out docs/images/tradeoff_faster_rcnn.png \
    --title "Faster R-CNN on coco_tiny (demo scale): mAP against backbone latency" \
    | tee "$WORK/tradeoff_table.md"
fi
