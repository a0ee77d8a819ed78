"""Backend selection for :mod:`laud_mm.ops`: the compiled extension
(``laud_mm._ext``, built from ``csrc/`` by ``setup.py``) when present, else the
pure-PyTorch reference implementation.

Source: paper sec. 3.4 (operator fusion for dynamic inference).
"""
import contextlib
import importlib.util
import os
import warnings
from typing import Iterator, Optional

import torch

_BACKENDS = ('cpp', 'cuda', 'pytorch')


def _load_extension():
    """``laud_mm._ext`` when it was built for this torch, else None.

    No extension file (``LAUD_MM_NO_EXT=1`` install): None, silently. A file
    that does not import, or that was compiled against another torch
    version (its C++ ABI differs): None with a warning saying how to
    rebuild, so the slow reference path is never taken unannounced.
    """
    if importlib.util.find_spec('laud_mm._ext') is None:
        return None
    fix = ('rebuild it against the installed torch: pip install '
           '--no-build-isolation -e . (or tools/install.sh)')
    try:
        from .. import _ext as ext  # type: ignore[attr-defined]
    except ImportError as e:
        warnings.warn(f'laud_mm: the compiled extension does not import '
                      f'({e}); using the PyTorch reference ops. {fix}')
        return None
    built = getattr(ext, 'torch_version', None)
    running = torch.__version__.split('+')[0]
    if built is not None and built != running:
        warnings.warn(f'laud_mm: the compiled extension was built against '
                      f'torch {built}, this is torch {running}; using the '
                      f'PyTorch reference ops. {fix}')
        return None
    return ext


_ext = _load_extension()

_forced: Optional[str] = os.environ.get('LAUD_MM_OPS_BACKEND') or None


def extension():
    """The compiled extension module, or None if it was not built."""
    return _ext


def has_cuda_kernels() -> bool:
    """Whether the extension was built with the CUDA kernels."""
    return _ext is not None and bool(getattr(_ext, 'with_cuda', False))


def parallel_kernels() -> bool:
    """Whether the compiled CPU kernels split their work over torch's
    intra-op threads (``torch.set_num_threads``): the extension built with
    OpenMP when torch's pool is OpenMP (``setup.py`` adds -fopenmp), or
    torch's native pool (at::parallel_for then calls into libtorch). False
    without the extension."""
    if _ext is None:
        return False
    if bool(getattr(_ext, 'openmp', False)):
        return True
    return 'ATen parallel backend: OpenMP' not in \
        torch.__config__.parallel_info()


def backend(device: Optional[torch.device] = None) -> str:
    """Backend that :mod:`laud_mm.ops` uses.

    Args:
        device: the device of the tensors (default: CUDA if available and the
            CUDA kernels are built, else CPU).

    Returns:
        'cuda' (compiled CUDA kernels), 'cpp' (compiled C++ CPU kernels) or
        'pytorch' (reference implementation: no extension, or forced with
        :func:`set_backend` / the ``LAUD_MM_OPS_BACKEND`` variable).
    """
    if _forced == 'pytorch' or _ext is None:
        return 'pytorch'
    if device is None:
        device = torch.device('cuda' if has_cuda_kernels()
                              and torch.cuda.is_available() else 'cpu')
    device = torch.device(device)
    if device.type == 'cuda':
        return 'cuda' if has_cuda_kernels() else 'pytorch'
    return 'cpp' if device.type == 'cpu' else 'pytorch'


def set_backend(name: Optional[str]) -> None:
    """Force a backend: 'pytorch' (reference), or None / 'cpp' / 'cuda' for
    the compiled kernels when built (the device picks cpp or cuda).

    Raises:
        ValueError: unknown ``name``.
        RuntimeError: 'cpp' or 'cuda' requested but the extension (or its CUDA
            part) was not built.
    """
    global _forced
    if name is not None and name not in _BACKENDS:
        raise ValueError(f'name={name!r} is not one of {_BACKENDS} or None')
    if name in ('cpp', 'cuda') and _ext is None:
        raise RuntimeError(f'backend {name!r} requested but laud_mm._ext is '
                           f'not built (pip install --no-build-isolation -e .)')
    if name == 'cuda' and not has_cuda_kernels():
        raise RuntimeError('backend \'cuda\' requested but laud_mm._ext was '
                           'built without CUDA kernels')
    _forced = 'pytorch' if name == 'pytorch' else None


@contextlib.contextmanager
def use_backend(name: Optional[str]) -> Iterator[None]:
    """Context manager around :func:`set_backend` (restores the previous)."""
    global _forced
    prev = _forced
    set_backend(name)
    try:
        yield
    finally:
        _forced = prev


def use_kernels(t: torch.Tensor) -> bool:
    """Whether the compiled kernels handle tensors like ``t``."""
    return backend(t.device) != 'pytorch'


def use_cuda_kernels(t: torch.Tensor) -> bool:
    """Whether ``t`` goes to a CUDA kernel (``torch.ops.laud_mm``): a CUDA
    tensor of a dtype the kernels take, CUDA kernels built, backend not
    forced to 'pytorch'."""
    from .cuda_ops import CUDA_DTYPES
    return t.is_cuda and t.dtype in CUDA_DTYPES and \
        backend(t.device) == 'cuda'


def is_autocast(x: torch.Tensor) -> bool:
    """Whether autocast is on for x's device type (the dynamic paths then
    run the operations autocast runs, not the float32 kernels)."""
    try:
        return torch.is_autocast_enabled(x.device.type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled() if x.device.type == 'cpu' \
            else torch.is_autocast_enabled()


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether the 4-D tensor ``x`` is stored channels_last (NHWC) and not
    also NCHW-contiguous (a tensor with one pixel or one channel is both
    and counts as NCHW, as for the compiled kernel).

    Args:
        x: any tensor (False unless 4-D).
    """
    return x.dim() == 4 and not x.is_contiguous() and \
        x.is_contiguous(memory_format=torch.channels_last)


def runs_channels_last(x: torch.Tensor) -> bool:
    """Whether PyTorch runs a convolution of the 4-D ``x`` (N, C, H, W) in
    channels_last (its ``suggest_memory_format``): ``x`` is channels_last
    (:func:`is_channels_last`), or a channel slice of such a tensor
    (``t[:, :width]``: the channels vary fastest, the strides grow as
    C < W < H < N). Errs towards NCHW where the strides are ambiguous
    (one pixel): a channels_last weight would make the convolution run,
    and return, channels_last.

    Args:
        x: any tensor (False unless 4-D).
    """
    if x.dim() != 4 or x.is_contiguous():
        return False
    if is_channels_last(x):
        return True
    s = x.stride()
    return x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1 and \
        s[1] == 1 and s[1] <= s[3] <= s[2] <= s[0]


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a channels_last 4-D ``x``
    (:func:`is_channels_last`), else ``torch.contiguous_format``: the
    layout the kernels that take either run in for ``x``."""
    return torch.channels_last if is_channels_last(x) else \
        torch.contiguous_format


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the 4-D tensors ``a`` and ``b`` are both NCHW-contiguous or
    both channels_last (:func:`is_channels_last`): what the compiled
    kernels that take either layout require of their operands."""
    if is_channels_last(a):
        return is_channels_last(b)
    return a.is_contiguous() and b.is_contiguous()


def check_float32_cpu(tensors: dict) -> None:
    """Argument check of the CPU-only fused kernels.

    Args:
        tensors: argument name -> value.

    Raises:
        ValueError: a value that is not a float32 CPU tensor (names it).
    """
    for k, v in tensors.items():
        if not isinstance(v, torch.Tensor) or v.dtype != torch.float32 or \
                v.device.type != 'cpu':
            raise ValueError(f'{k} must be a float32 CPU tensor, got '
                             f'{getattr(v, "dtype", type(v))} on '
                             f'{getattr(v, "device", None)}')
