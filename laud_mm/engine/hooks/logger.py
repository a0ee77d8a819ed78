"""A LoggerHook that writes the test metrics json once under distributed
testing.

mmengine 0.10.7's ``LoggerHook.after_test_epoch`` dumps the test metrics to
``{work_dir}/{timestamp}/{timestamp}.json`` on *every* rank. All ranks share
the timestamp (rank 0 broadcasts it), so under ``tools/dist_test.sh`` the
ranks open the same file with mode ``'w'`` at the same moment; when their
``time`` / ``data_time`` entries print with different lengths, the longer
write leaves its tail behind the shorter one and the file is not valid json
("Extra data"). The metrics themselves are already reduced across ranks, so
only the main process needs to write them, which is what mmengine does for
the validation scalars (its visualizer backends are ``master_only``).

Source: mmengine 0.10.7 ``hooks/logger_hook.py``.
"""
import os.path as osp
from typing import Dict, Optional

from mmengine.dist import is_main_process
from mmengine.fileio import dump
from mmengine.hooks import LoggerHook

from ...registry import HOOKS


@HOOKS.register_module()
class MainProcessLoggerHook(LoggerHook):
    """mmengine's ``LoggerHook`` whose test epoch writes the metrics json on
    the main process only (every rank still logs the test line). Single
    process runs behave exactly as with ``LoggerHook``.

    Use it as the config's logger: ``default_hooks = dict(logger=dict(
    type='laud_mm.MainProcessLoggerHook', interval=50))`` (the LAUD base
    configs do). Takes every ``LoggerHook`` argument.
    """

    def after_test_epoch(self, runner,
                         metrics: Optional[Dict[str, float]] = None) -> None:
        """Log the test line on every rank, dump the json on the main one.

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
