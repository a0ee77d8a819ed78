"""Child registries of laud_mm (scope ``'laud_mm'``).

Their parents are mmengine's root registries, so mmdet, mmseg and mmpretrain
configs reach every laud_mm class as ``type='laud_mm.X'`` (mmengine looks the
scope up among the root's children), and laud_mm modules can build mmdet /
mmseg / mmpretrain classes through the scoped names ``'mmdet.X'`` etc.

Source: mmengine registry docs ("use modules of other projects"); the
mmdet ``projects/`` plugin layout.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='laud_mm',
                  locations=['laud_mm.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='laud_mm',
                 locations=['laud_mm.engine'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='laud_mm',
                   locations=['laud_mm.evaluation'])
# imported on first use (laud_mm.datasets imports mmseg)
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='laud_mm',
                    locations=['laud_mm.datasets'])

OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS,
                          scope='laud_mm', locations=['laud_mm.engine'])
