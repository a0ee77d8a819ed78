"""The multi-GPU / multi-node launchers pass their arguments through: the
scripts run against stand-ins for ``srun`` and ``python`` that record their
command line, so no cluster (or GPU) is needed.

Source: mmdet's tools/dist_*.sh and tools/slurm_*.sh (the launch contract
the README documents)."""
import os
import os.path as osp
import subprocess

import pytest

from conftest import ROOT

RECORDER = '''#!/usr/bin/env bash
printf '%s\\n' "$(basename "$0")" "$@" > "$LAUNCH_RECORD"
printf 'PYTHONPATH=%s\\n' "$PYTHONPATH" >> "$LAUNCH_RECORD"
'''


def _run(tmp_path, script, args, env_extra=None):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    for name in ('srun', 'python'):
        p = bin_dir / name
        p.write_text(RECORDER)
        p.chmod(0o755)
    record = tmp_path / 'record.txt'
    env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
               LAUNCH_RECORD=str(record), **(env_extra or {}))
    proc = subprocess.run(['bash', osp.join('tools', script)] + args,
                          cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    lines = record.read_text().splitlines() if record.exists() else []
    return proc, lines


def test_dist_train_multi_node_arguments(tmp_path):
    proc, rec = _run(tmp_path, 'dist_train.sh',
                     ['configs/imagenet/laud-r50-layer_8xb128_in1k.py', '8',
                      '--auto-scale-lr', '--cfg-options', 'a=1'],
                     dict(NNODES='2', NODE_RANK='1', MASTER_ADDR='10.1.2.3',
                          PORT='29611'))
    assert proc.returncode == 0, proc.stderr
    assert rec[0] == 'python'
    assert rec[1:4] == ['-m', 'torch.distributed.run', '--nnodes=2']
    for arg in ('--node_rank=1', '--master_addr=10.1.2.3',
                '--nproc_per_node=8', '--master_port=29611'):
        assert arg in rec
    i = rec.index('tools/train.py')
    assert rec[i + 1:i + 7] == [
        'configs/imagenet/laud-r50-layer_8xb128_in1k.py', '--launcher',
        'pytorch', '--auto-scale-lr', '--cfg-options', 'a=1']
    assert rec[-1].startswith(f'PYTHONPATH={ROOT}')


def test_dist_test_defaults_to_one_node(tmp_path):
    proc, rec = _run(tmp_path, 'dist_test.sh',
                     ['CFG.py', 'CKPT.pth', '2', '--dynamic-inference'])
    assert proc.returncode == 0, proc.stderr
    for arg in ('--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1',
                '--nproc_per_node=2', '--master_port=29500'):
        assert arg in rec
    i = rec.index('tools/test.py')
    assert rec[i + 1:i + 6] == ['CFG.py', 'CKPT.pth', '--launcher', 'pytorch',
                                '--dynamic-inference']


@pytest.mark.parametrize('script,positional,tool', [
    ('slurm_train.sh', ['part', 'job', 'CFG.py', 'work_dirs/x'],
     ['tools/train.py', 'CFG.py', '--work-dir=work_dirs/x',
      '--launcher=slurm']),
    ('slurm_test.sh', ['part', 'job', 'CFG.py', 'CKPT.pth'],
     ['tools/test.py', 'CFG.py', 'CKPT.pth', '--launcher=slurm']),
])
def test_slurm_launchers(tmp_path, script, positional, tool):
    proc, rec = _run(tmp_path, script, positional + ['--amp', 'x y'],
                     dict(GPUS='16', GPUS_PER_NODE='8', CPUS_PER_TASK='4',
                          SRUN_ARGS='--quotatype=spot'))
    assert proc.returncode == 0, proc.stderr
    assert rec[0] == 'srun'
    for arg in ('part', '--job-name=job', '--gres=gpu:8', '--ntasks=16',
                '--ntasks-per-node=8', '--cpus-per-task=4',
                '--kill-on-bad-exit=1', '--quotatype=spot'):
        assert arg in rec, (arg, rec)
    i = rec.index('python')
    assert rec[i + 1] == '-u'
    assert rec[i + 2:i + 2 + len(tool)] == tool
    # extra options pass through unsplit
    assert rec[i + 2 + len(tool):-1] == ['--amp', 'x y']


@pytest.mark.parametrize('script', ['slurm_train.sh', 'slurm_test.sh'])
def test_slurm_launchers_refuse_missing_arguments(tmp_path, script):
    proc, rec = _run(tmp_path, script, ['part', 'job'])
    assert proc.returncode == 2 and 'usage' in proc.stderr and not rec
