from .distillation import DistillationLoss, distillation_kl
from .sparsity import SparsityLoss, train_progress

__all__ = ['SparsityLoss', 'train_progress', 'DistillationLoss',
           'distillation_kl']
