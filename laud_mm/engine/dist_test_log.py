"""Write the test metrics json once under distributed testing.

mmengine 0.10.7's ``LoggerHook.after_test_epoch`` dumps the test metrics to
``{work_dir}/{timestamp}/{timestamp}.json`` on *every* rank. All ranks share
the timestamp (rank 0 broadcasts it), so under ``tools/dist_test.sh`` the
ranks open the same file with mode ``'w'`` at the same moment; when their
``time`` / ``data_time`` entries print with different lengths, the longer
write leaves its tail behind the shorter one and the file is not valid json
("Extra data"). The metrics themselves are already reduced across ranks, so
only the main process needs to write them, which is what mmengine does for
the validation scalars (its visualizer backends are ``master_only``).

:func:`patch_test_json_dump` (called when ``laud_mm`` is imported) wraps the
hook method: every rank still logs the test line, only the main process
writes the json. Single-process runs are unchanged.
"""
import os.path as osp
from typing import Dict, Optional

from mmengine.dist import is_main_process
from mmengine.fileio import dump
from mmengine.hooks import LoggerHook

_PATCHED = '_laud_mm_main_process_dump'


def _after_test_epoch(self, runner,
                      metrics: Optional[Dict[str, float]] = None) -> None:
    """``LoggerHook.after_test_epoch`` with the json dump on the main process
    only (see the module docstring).

    Args:
        runner: the mmengine Runner.
        metrics: the reduced test metrics (unused, as in mmengine).
    """
    tag, log_str = runner.log_processor.get_log_after_epoch(
        runner, len(runner.test_dataloader), 'test', with_non_scalar=True)
    runner.logger.info(log_str)
    if is_main_process():
        dump(self._process_tags(tag),
             osp.join(runner.log_dir, self.json_log_path))


def patch_test_json_dump() -> None:
    """Make ``mmengine.hooks.LoggerHook`` write the test json on the main
    process only. Idempotent.

    Raises:
        nothing; a LoggerHook whose ``after_test_epoch`` was already replaced
        by someone else is left alone (it is not mmengine 0.10.7's).
    """
    current = LoggerHook.__dict__.get('after_test_epoch')
    if getattr(current, _PATCHED, False):
        return
    setattr(_after_test_epoch, _PATCHED, True)
    LoggerHook.after_test_epoch = _after_test_epoch
