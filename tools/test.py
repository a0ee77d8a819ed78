"""Evaluate a checkpoint of a LAUD detector, segmentor or classifier:
accuracy metrics (e.g. coco/bbox_mAP, mIoU) with the backbone's activation
rate, FLOPs and predicted latency on one line.

Usage:
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
        [--dynamic-inference] [--cfg-options k=v ...] [--launcher ...]
"""
import argparse
import os
import os.path as osp

import laud_mm  # noqa: F401
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a LAUD model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the results')
    parser.add_argument('--out', type=str,
                        help='dump predictions to a pickle file')
    parser.add_argument('--dynamic-inference', action='store_true',
                        help='run the backbone with the dynamic kernels')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm',
                                               'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.dynamic_inference:
        cfg.model.backbone.dynamic_inference = True
    # a file that is not a PyTorch checkpoint is named before the Runner
    # is built (torch's own error for one does not say what is wrong)
    from laud_mm.models.layers.checkpoint import check_checkpoint_file
    check_checkpoint_file(args.checkpoint, 'CHECKPOINT')
    cfg.load_from = args.checkpoint
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out={args.out!r} must end in .pkl or .pickle')
        cfg.test_evaluator = list(cfg.test_evaluator) if isinstance(
            cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
        cfg.test_evaluator.append(dict(type='DumpResults', out_file_path=args.out))
    # CPU-only machines: gloo process group, DDP without device_ids
    from laud_mm.engine.dist import setup_cpu_distributed
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg \
        else RUNNERS.build(cfg)
    runner.test()
    # barrier, destroy the process group; a gloo rank leaves at once (its
    # threads can abort the interpreter's shutdown)
    from laud_mm.engine.dist import finish_distributed
    finish_distributed()


if __name__ == '__main__':
    main()
