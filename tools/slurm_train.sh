#!/usr/bin/env bash
# Train on a Slurm cluster, one task per GPU (mmdet's launcher):
#   [GPUS=16] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#   bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]
# e.g. ImageNet pretraining of LAUD-R50 on 2 nodes x 8 GPUs:
#   GPUS=16 bash tools/slurm_train.sh gpu laud-r50 \
#       configs/imagenet/laud-r50-spatial-s4421_8xb128_in1k.py work_dirs/laud-r50 \
#       --auto-scale-lr
# srun starts the tasks; tools/train.py --launcher slurm reads the rank and
# world size from Slurm's variables (mmengine's init_dist).
set -x
if [ $# -lt 4 ]; then
    echo "usage: [GPUS=N] bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PY_ARGS=("${@:5}")
cd "$(dirname "$0")/.." || exit 1
PYTHONPATH="$(pwd):$PYTHONPATH" \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres=gpu:"${GPUS_PER_NODE}" \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    python -u tools/train.py "${CONFIG}" --work-dir="${WORK_DIR}" --launcher=slurm "${PY_ARGS[@]}"
