"""Mixed-precision training on CPU (mmengine's AmpOptimWrapper is GPU-only).

Source: torch.autocast('cpu') (bfloat16 and float16) with
``torch.amp.GradScaler('cpu')`` for float16 loss scaling.
"""
import math
from contextlib import contextmanager
from typing import Optional, Union

import torch
from mmengine.optim import OptimWrapper

from ..registry import OPTIM_WRAPPERS

_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """OptimWrapper running forward under ``torch.autocast('cpu', dtype)``;
    float16 adds loss scaling (GradScaler on CPU), configured as mmengine's
    ``AmpOptimWrapper`` configures it.

    Args:
        dtype: 'bfloat16' (default; None: the same) or 'float16' (or the
            torch dtype).
        loss_scale: float16 only: 'dynamic' (default; dynamic scaling), a
            float (a static scale) or a dict of ``torch.amp.GradScaler``
            arguments; bfloat16 has the float32 exponent range and takes
            no scaling ('dynamic' is accepted there and means none).
        **kwargs: mmengine OptimWrapper arguments.

    Raises:
        ValueError: an unknown dtype, or a loss_scale of the wrong kind or
            given with bfloat16 (names the key and value).
    """

    def __init__(self, dtype: Union[str, torch.dtype] = 'bfloat16',
                 loss_scale: Union[str, float, dict] = 'dynamic', **kwargs):
        super().__init__(**kwargs)
        if dtype is None:  # autocast's CPU default, as mmengine leaves it
            dtype = torch.bfloat16
        if isinstance(dtype, str) and dtype in _DTYPES:
            dtype = _DTYPES[dtype]
        if dtype not in _DTYPES.values():
            raise ValueError(f'CPUAmpOptimWrapper: dtype={dtype!r} must be '
                             f'one of {sorted(_DTYPES)}')
        self.cast_dtype = dtype
        self._scale_update_param = None
        self.loss_scaler = None
        if dtype == torch.bfloat16:
            if loss_scale != 'dynamic':
                raise ValueError(
                    f'CPUAmpOptimWrapper: loss_scale={loss_scale!r} applies '
                    f"to dtype='float16' only (bfloat16 needs no loss "
                    f'scaling)')
        elif loss_scale == 'dynamic':
            self.loss_scaler = torch.amp.GradScaler('cpu')
        elif isinstance(loss_scale, float) and not isinstance(loss_scale,
                                                              bool) \
                and math.isfinite(loss_scale) and loss_scale > 0:
            self._scale_update_param = loss_scale
            self.loss_scaler = torch.amp.GradScaler('cpu',
                                                    init_scale=loss_scale)
        elif isinstance(loss_scale, dict):
            try:
                self.loss_scaler = torch.amp.GradScaler('cpu', **loss_scale)
            except TypeError as e:
                raise ValueError(f'CPUAmpOptimWrapper: loss_scale='
                                 f'{loss_scale!r}: {e}') from e
        else:
            raise ValueError(f"CPUAmpOptimWrapper: loss_scale={loss_scale!r} "
                             f"must be 'dynamic', a positive finite float or "
                             f'a dict of GradScaler arguments')

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
        self.loss_scaler.update(self._scale_update_param)

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

    The dtype is ``dtype`` (the command line's ``--amp-dtype``), else the
    config's own ``optim_wrapper.dtype``, else float16 where the config
    sets a loss scale other than 'dynamic' (mmengine's ``AmpOptimWrapper``
    runs float16 without a dtype, which such a scale is written for), else
    float16 on GPU and bfloat16 on CPU; the config's ``loss_scale`` is kept
    (on CPU, :class:`CPUAmpOptimWrapper` checks that it fits the dtype).

    Args:
        optim_wrapper: the config's ``optim_wrapper`` dict.
        dtype: 'float16', 'bfloat16' or None.

    Raises:
        ValueError: the config already uses another wrapper type, or an
            unknown dtype (names the key and value).
    """
    cfg = dict(optim_wrapper)
    if cfg.get('type', 'OptimWrapper') not in ('OptimWrapper', 'AmpOptimWrapper',
                                               'laud_mm.CPUAmpOptimWrapper'):
        raise ValueError(f"--amp: optim_wrapper.type={cfg['type']!r} is not a "
                         f'plain OptimWrapper')
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f'--amp-dtype={dtype!r} must be one of {sorted(_DTYPES)}')
    own = cfg.get('dtype')
    if dtype is None and own is not None:
        if own not in _DTYPES and own not in _DTYPES.values():
            raise ValueError(f'optim_wrapper.dtype={own!r} must be one of '
                             f'{sorted(_DTYPES)}')
        dtype = own
    if dtype is None and cfg.get('loss_scale', 'dynamic') != 'dynamic':
        dtype = 'float16'
    if torch.cuda.is_available():
        cfg.update(type='AmpOptimWrapper', dtype=dtype or 'float16')
        cfg.setdefault('loss_scale', 'dynamic')
    else:
        cfg.update(type='laud_mm.CPUAmpOptimWrapper', dtype=dtype or 'bfloat16')
    return cfg
