"""Build and install laud_mm (an OpenMMLab plugin for LAUDNet).

Install torch first (the README pins torch==2.13.0), then ``pip install -e .``
or ``pip install .`` (with or without ``--no-build-isolation``; old and new
pip). The extension ``laud_mm._ext`` (C++ CPU kernels from csrc/cpu) is always
built, against the torch installed in the environment (its C++ standard and
ABI), with ninja when available and without debug information; the CUDA
kernels (csrc/cuda/*.cu + csrc/cuda_bindings.cpp) are added when torch has
CUDA and a CUDA toolkit is found, or when FORCE_CUDA=1. Set LAUD_MM_NO_EXT=1
to install the pure-Python package only (laud_mm.ops then uses its PyTorch
reference), LAUD_MM_DEBUG=1 to keep debug information. torch is deliberately
neither in install_requires nor a build requirement, so pip never replaces it.
"""
import glob
import os
import re
import site
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def import_installed_torch():
    """The environment's torch, also from an isolated build environment.

    pip's build isolation hides the environment's site-packages; the
    extension must nevertheless link against the torch that will import it
    (a torch fetched into the isolated environment may have another C++
    ABI), so its site-packages are searched as a fallback.

    Raises:
        RuntimeError: no torch installed (install it first, or set
            LAUD_MM_NO_EXT=1 for the pure-Python package).
    """
    try:
        import torch
        return torch
    except ImportError:
        pass
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        dirs.append(site.getusersitepackages())
    for d in dirs:
        if os.path.isdir(os.path.join(d, 'torch')) and d not in sys.path:
            sys.path.append(d)
    try:
        import torch
        return torch
    except ImportError as e:
        raise RuntimeError(
            'laud_mm builds its C++ extension against the installed torch, '
            'and none was found: install torch first (pip install '
            'torch==2.13.0), or set LAUD_MM_NO_EXT=1 to install the '
            'pure-Python package (PyTorch reference ops)') from e


def get_version() -> str:
    with open(os.path.join(HERE, 'laud_mm', 'version.py')) as f:
        m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", f.read())
    if m is None:
        raise RuntimeError('laud_mm/version.py has no __version__')
    return m.group(1)


def openmp_backend(torch) -> bool:
    """Whether torch's intra-op thread pool is OpenMP (its Linux wheels),
    so the extension must be compiled with -fopenmp (GCC / Clang on
    Linux; elsewhere the kernels are built serial)."""
    info = torch.__config__.parallel_info()
    return sys.platform.startswith('linux') and \
        'ATen parallel backend: OpenMP' in info


def get_extensions():
    if os.environ.get('LAUD_MM_NO_EXT', '0') == '1':
        return [], {}
    torch = import_installed_torch()
    from torch.utils.cpp_extension import (CUDA_HOME, BuildExtension,
                                           CppExtension, CUDAExtension)
    sources = ['csrc/bindings.cpp'] + sorted(glob.glob('csrc/cpu/*.cpp'))
    # no -std: torch's BuildExtension adds the standard its headers need
    # (C++20 for torch 2.13, C++17 before); -g0 after Python's -g drops the
    # debug information (~20 MB) unless LAUD_MM_DEBUG=1
    debug = os.environ.get('LAUD_MM_DEBUG', '0') == '1'
    cxx = ['-O3'] + ([] if debug else ['-g0'])
    # torch's at::parallel_for is a header template: with torch's OpenMP
    # backend it only runs in parallel in code compiled with -fopenmp
    # (without it, every at::parallel_for of csrc/cpu runs serially).
    # Linking -fopenmp resolves to the libgomp.so.1 torch has loaded.
    link = []
    # dlsym (csrc/cpu/sample_gemm_cpu.cpp): libdl before glibc 2.34
    if sys.platform.startswith('linux'):
        link.append('-ldl')
    if openmp_backend(torch):
        cxx.append('-fopenmp')
        link.append('-fopenmp')
    nvcc = ['-O3'] + (['-lineinfo'] if debug else [])
    # the version the extension was compiled against, checked on import
    define_macros = [('LAUD_MM_TORCH_VERSION',
                      '"%s"' % torch.__version__.split('+')[0])]
    force_cuda = os.environ.get('FORCE_CUDA', '0') == '1'
    with_cuda = force_cuda or (torch.version.cuda is not None
                               and CUDA_HOME is not None)
    if with_cuda:
        sources += ['csrc/cuda_bindings.cpp'] + sorted(glob.glob('csrc/cuda/*.cu'))
        define_macros.append(('WITH_CUDA', None))
        ext = CUDAExtension(
            'laud_mm._ext', sources, define_macros=define_macros,
            include_dirs=[os.path.join(HERE, 'csrc')],
            extra_compile_args={'cxx': cxx, 'nvcc': nvcc},
            extra_link_args=link)
    else:
        ext = CppExtension(
            'laud_mm._ext', sources, define_macros=define_macros,
            include_dirs=[os.path.join(HERE, 'csrc')],
            extra_compile_args={'cxx': cxx}, extra_link_args=link)
    # ninja (parallel compilation) when installed, else setuptools' own
    return [ext], {'build_ext': BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = get_extensions()

setup(
    name='laud_mm',
    version=get_version(),
    description='LAUDNet latency-aware unified dynamic networks for OpenMMLab',
    packages=find_packages(exclude=('tests', 'tests.*', 'tools', 'configs')),
    python_requires='>=3.8',
    install_requires=['mmengine>=0.10', 'mmdet>=3.0', 'mmpretrain>=1.0',
                      'mmsegmentation>=1.2.2', 'ftfy', 'regex',
                      'prettytable', 'numpy'],
    extras_require={'tests': ['pytest', 'hypothesis'],
                    'benchmark': ['matplotlib']},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
