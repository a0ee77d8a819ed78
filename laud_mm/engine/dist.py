"""Distributed training and testing on CPU (gloo) with mmengine's Runner.

mmengine 0.10.7's ``launcher='pytorch'`` path is GPU-only in two places:
``init_dist`` calls ``torch.cuda.set_device`` (an AttributeError on a CPU
build of torch) and the default model wrapper passes
``device_ids=[LOCAL_RANK]`` to ``DistributedDataParallel``, which torch
refuses for CPU modules. :func:`setup_cpu_distributed` initialises the gloo
process group itself (mmengine then skips ``init_dist``) and sets a
``model_wrapper_cfg`` without ``device_ids``. On a machine with CUDA it does
nothing: mmengine's own path (nccl) runs unchanged.

Used by ``tools/train.py`` and ``tools/test.py`` (so ``tools/dist_train.sh`` /
``tools/dist_test.sh`` work on CPU-only machines, e.g. CI).
"""
import os

import torch
import torch.distributed as torch_dist


def setup_cpu_distributed(cfg) -> bool:
    """Prepare ``cfg`` (an mmengine Config) for a CPU run under torchrun.

    Args:
        cfg: the config; ``cfg.launcher`` must be set already.

    Returns:
        True when the gloo process group was set up here (CPU, launcher
        'pytorch'), False otherwise (no change).

    Raises:
        ValueError: a CPU-only machine with launcher 'slurm' or 'mpi' (not
            supported on CPU by mmengine), or 'pytorch' without the torchrun
            environment (RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT).
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher != 'pytorch':
        raise ValueError(f'launcher={launcher!r} needs CUDA; on CPU use '
                         f"launcher='pytorch' (tools/dist_train.sh, torchrun)")
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
               if k not in os.environ]
    if missing:
        raise ValueError(f"launcher='pytorch' needs the torchrun environment; "
                         f'missing {missing} (start with tools/dist_train.sh)')
    env_cfg = cfg.get('env_cfg') or {}
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    dist_cfg['backend'] = 'gloo'  # nccl (mmdet's default) needs CUDA
    env_cfg['dist_cfg'] = dist_cfg
    cfg.env_cfg = env_cfg
    if not torch_dist.is_initialized():
        kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
        if 'timeout' in kwargs and not hasattr(kwargs['timeout'], 'seconds'):
            import datetime
            kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
        torch_dist.init_process_group(backend='gloo', **kwargs)
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        wrapper = dict(
            type='MMDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    elif wrapper.get('device_ids') is not None:
        raise ValueError(f'model_wrapper_cfg.device_ids='
                         f'{wrapper["device_ids"]!r} is GPU-only; remove it '
                         f'for CPU training')
    # explicit None: mmengine fills device_ids=[LOCAL_RANK] when it is absent
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return True


def finish_distributed() -> None:
    """End a distributed run cleanly: barrier, destroy the process group
    and, for a gloo (CPU) group, end the process at once with status 0.

    gloo's worker threads can abort a rank during interpreter shutdown
    after all work is done ("terminate called without an active
    exception", SIGABRT, so torchrun reports the run as failed: seen on 1
    of 6 CI runs of ``tools/dist_test.sh`` even after
    ``destroy_process_group``). Leaving with ``os._exit`` after flushing
    the logs and standard streams skips that shutdown. Called last by
    ``tools/train.py`` and ``tools/test.py``; a no-op without a process
    group.

    Raises:
        whatever ``torch.distributed.barrier`` raises if a rank failed.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    gloo = torch_dist.get_backend() == 'gloo'
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    if gloo:
        import logging
        import sys
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
