"""Mixed-precision training on CPU (mmengine's AmpOptimWrapper is GPU-only).

Source: torch.autocast('cpu') (bfloat16 and float16) with
``torch.amp.GradScaler('cpu')`` for float16 loss scaling.
"""
from contextlib import contextmanager
from typing import Optional, Union

import torch
from mmengine.optim import OptimWrapper

from ..registry import OPTIM_WRAPPERS

_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """OptimWrapper running forward under ``torch.autocast('cpu', dtype)``;
    float16 adds dynamic loss scaling (GradScaler on CPU).

    Args:
        dtype: 'bfloat16' (default) or 'float16'.
        **kwargs: mmengine OptimWrapper arguments.

    Raises:
        ValueError: unknown dtype (names the value).
    """

    def __init__(self, dtype: Union[str, torch.dtype] = 'bfloat16', **kwargs):
        super().__init__(**kwargs)
        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise ValueError(f'CPUAmpOptimWrapper: dtype={dtype!r} must be '
                                 f'one of {sorted(_DTYPES)}')
            dtype = _DTYPES[dtype]
        self.cast_dtype = dtype
        self.loss_scaler = torch.amp.GradScaler('cpu') \
            if dtype == torch.float16 else None

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        if self.loss_scaler is not None:
            loss = self.loss_scaler.scale(loss)
        loss.backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs) -> None:
        if self.loss_scaler is None:
            return super().step(**kwargs)
        if self.clip_grad_kwargs:
            self.loss_scaler.unscale_(self.optimizer)
            self._clip_grad()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update()

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.loss_scaler is not None:
            state['loss_scaler'] = self.loss_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        if 'loss_scaler' in state_dict and self.loss_scaler is not None:
            self.loss_scaler.load_state_dict(state_dict.pop('loss_scaler'))
        super().load_state_dict(state_dict)

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model):
            with torch.autocast('cpu', dtype=self.cast_dtype):
                yield


def amp_optim_wrapper(optim_wrapper: dict, dtype: Optional[str] = None) -> dict:
    """Turn an optim_wrapper config into its mixed-precision form: mmengine's
    AmpOptimWrapper on GPU, :class:`CPUAmpOptimWrapper` on CPU.

    Args:
        optim_wrapper: the config's ``optim_wrapper`` dict.
        dtype: 'float16' or 'bfloat16'; None: float16 on GPU, bfloat16 on CPU.

    Raises:
        ValueError: the config already uses another wrapper type.
    """
    cfg = dict(optim_wrapper)
    if cfg.get('type', 'OptimWrapper') not in ('OptimWrapper', 'AmpOptimWrapper',
                                               'laud_mm.CPUAmpOptimWrapper'):
        raise ValueError(f"--amp: optim_wrapper.type={cfg['type']!r} is not a "
                         f'plain OptimWrapper')
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f'--amp-dtype={dtype!r} must be one of {sorted(_DTYPES)}')
    if torch.cuda.is_available():
        cfg.update(type='AmpOptimWrapper', loss_scale='dynamic',
                   dtype=dtype or 'float16')
    else:
        cfg.update(type='laud_mm.CPUAmpOptimWrapper', dtype=dtype or 'bfloat16')
        cfg.pop('loss_scale', None)
    return cfg
