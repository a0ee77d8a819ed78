"""CPU heap tuning for dynamic inference: keep freed tensor memory mapped.

Dynamic inference allocates tensors whose sizes change with the gates (the
gathered patches, the kept samples, the per-sample channel weights). glibc
serves large allocations (above ``M_MMAP_THRESHOLD``, 128 KiB by default,
raised adaptively only up to the largest chunk freed so far) with a fresh
``mmap`` and returns them to the kernel on free, so every forward pays page
faults and zero-filling for each of these tensors: measured here on LAUD-R50
stage-1 spatial blocks (8 x 256 x 56 x 56, r = 0.5, one thread), 68 ms per
block instead of 37 ms. The static network allocates the same sizes every
call and is barely affected (41.8 vs 40.5 ms), so without this tuning the
comparison is unfair to the dynamic network.

:func:`tune_cpu_allocator` fixes both thresholds with ``mallopt`` so freed
memory stays in the process heap and is reused. It is called once, the first
time a dynamic block runs on a CPU tensor (``laud_mm.models.resnet.dynamic``), and
can be disabled with the environment variable ``LAUD_MM_MALLOPT=0``. Memory
freed by the model is then kept by the process (its peak resident size does
not shrink) rather than returned to the OS.

Source: engineering of the paper's sec. 3.4 dynamic operators on CPU
(no equation); glibc ``mallopt(3)``.
"""
import ctypes
import ctypes.util
import os
from typing import Optional

# mallopt(3) parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# 1 GiB: above any single activation of a ResNet backbone at detection size
# (the largest, 1 x 256 x 200 x 304 fp32, is 62 MB); glibc caps the mmap
# threshold at HEAP_MAX (32 MiB on 64-bit) for the adaptive setting only
DEFAULT_THRESHOLD_BYTES = 1 << 30

_state: Optional[bool] = None


def tune_cpu_allocator(threshold_bytes: int = DEFAULT_THRESHOLD_BYTES
                       ) -> bool:
    """Keep freed CPU tensor memory in the heap (glibc ``mallopt``).

    Args:
        threshold_bytes: allocations below this size (bytes) come from the
            heap instead of ``mmap``, and the heap top is trimmed only when
            more than this many bytes are free.

    Returns:
        True if the thresholds are set (now or by an earlier call), False if
        disabled (``LAUD_MM_MALLOPT=0``) or not glibc (e.g. macOS, musl),
        where nothing is changed.

    Raises:
        ValueError: if ``threshold_bytes`` is not a positive int below 2**31
            (mallopt takes a C int).
    """
    global _state
    if not isinstance(threshold_bytes, int) or \
            not 0 < threshold_bytes < 2 ** 31:
        raise ValueError(f'threshold_bytes={threshold_bytes!r} must be an int '
                         f'in (0, 2**31)')
    if _state is not None:
        return _state
    flag = os.environ.get('LAUD_MM_MALLOPT', '1')
    if flag not in ('0', '1'):
        raise ValueError(f'LAUD_MM_MALLOPT={flag!r} must be 0 or 1')
    _state = False
    if flag == '0':
        return False
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], \
        ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, threshold_bytes) == 1 and \
        mallopt(M_TRIM_THRESHOLD, threshold_bytes) == 1
    _state = bool(ok)
    return _state


def allocator_tuned() -> bool:
    """Whether :func:`tune_cpu_allocator` has set the thresholds."""
    return bool(_state)
