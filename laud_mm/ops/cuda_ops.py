"""The CUDA operators of ``laud_mm._ext`` (``torch.ops.laud_mm.<name>``,
registered by ``csrc/cuda_bindings.cpp`` for the CUDA dispatch key when the
extension is built with CUDA), and how the Python API calls them.

``tools/check_cuda_build.sh`` reads :data:`CUDA_OPS` (the part of this file
above the end marker, without importing laud_mm) and checks that every one
has a CUDA kernel in a ``FORCE_CUDA=1`` build.

Source: paper sec. 3.4 (fused gather / scatter-add operators).
"""
#: every operator with a CUDA kernel
CUDA_OPS = ('gather_patches', 'scatter_add_relu', 'scatter_patches_add_relu',
            'gather_kept_weights')
# ---- end of op list (tools/check_cuda_build.sh reads the lines above)

import torch  # noqa: E402

#: dtypes the CUDA kernels take (16-bit types computed in float)
CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def cuda_op(name: str):
    """``torch.ops.laud_mm.<name>`` (an operator of :data:`CUDA_OPS`)."""
    return getattr(torch.ops.laud_mm, name)
