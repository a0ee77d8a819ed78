"""The weight layout of the CPU tile kernels: 64-column panels.

The register tiles (``csrc/cpu/tile.h``) put 64 output channels on the
AVX-512 lanes and stream their weights as K rows of 64 floats. A (K, M)
weight matrix (K input terms, M output channels) is therefore stored as its
64-column panels one after the other: panel j holds columns [64 j, 64 j +
64) of every row, rows of ``min(64, M - 64 j)`` floats. The spatial kernel
takes all three conv weights this way; the channel kernel takes conv3's
(its tiles read a sample's kept rows of a panel in place).

Source: paper sec. 3.4 (operators scheduled for the hardware).
"""
import torch

PANEL = 64  # output channels per panel of the tile kernels (csrc/cpu/tile.h)


def pack_panels(wt: torch.Tensor) -> torch.Tensor:
    """Cut a (K, M) matrix into 64-column panels stored one after the other
    (panel j: rows of ``min(64, M - 64 j)`` floats), the weight layout of the
    tile kernels.

    Args:
        wt: (K, M) matrix (e.g. conv1's weight transposed, (C_in, width)).

    Returns:
        (K * M,) contiguous tensor.

    Raises:
        ValueError: ``wt`` not 2-D.

    Source: paper sec. 3.4 (operators scheduled for the hardware).
    """
    if wt.dim() != 2:
        raise ValueError(f'wt must be a (K, M) matrix, got {tuple(wt.shape)}')
    return torch.cat([wt[:, j:j + PANEL].reshape(-1)
                      for j in range(0, wt.shape[1], PANEL)])


def unpack_panels(flat: torch.Tensor, k: int, m: int) -> torch.Tensor:
    """Inverse of :func:`pack_panels`.

    Args:
        flat: (K * M,) panels; k, m: the matrix's K and M.

    Returns:
        (K, M) matrix (a copy).

    Raises:
        ValueError: ``flat`` not 1-D with k * m elements.
    """
    if flat.dim() != 1 or flat.numel() != k * m:
        raise ValueError(f'flat must be 1-D with k * m = {k * m} elements, '
                         f'got {tuple(flat.shape)}')
    cols, off = [], 0
    for j in range(0, m, PANEL):
        wdt = min(PANEL, m - j)
        cols.append(flat[off:off + k * wdt].view(k, wdt))
        off += k * wdt
    return torch.cat(cols, 1)
