"""Build and install laud_mm (an OpenMMLab plugin for LAUDNet).

Install torch first (the README pins torch==2.13.0), then
``pip install --no-build-isolation -e .``. The extension ``laud_mm._ext``
(C++ CPU kernels from csrc/cpu) is always built; the CUDA kernels
(csrc/cuda/*.cu + csrc/cuda_bindings.cpp) are added when torch has CUDA and a
CUDA toolkit is found, or when FORCE_CUDA=1. Set LAUD_MM_NO_EXT=1 to install
the pure-Python package only (laud_mm.ops then uses its PyTorch reference).
torch is deliberately not in install_requires so pip never replaces it.
"""
import glob
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def get_version() -> str:
    with open(os.path.join(HERE, 'laud_mm', 'version.py')) as f:
        m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", f.read())
    if m is None:
        raise RuntimeError('laud_mm/version.py has no __version__')
    return m.group(1)


def get_extensions():
    if os.environ.get('LAUD_MM_NO_EXT', '0') == '1':
        return [], {}
    import torch
    from torch.utils.cpp_extension import (CUDA_HOME, BuildExtension,
                                           CppExtension, CUDAExtension)
    sources = ['csrc/bindings.cpp'] + sorted(glob.glob('csrc/cpu/*.cpp'))
    cxx = ['-O3', '-std=c++17']
    define_macros = []
    force_cuda = os.environ.get('FORCE_CUDA', '0') == '1'
    with_cuda = force_cuda or (torch.version.cuda is not None
                               and CUDA_HOME is not None)
    if with_cuda:
        sources += ['csrc/cuda_bindings.cpp'] + sorted(glob.glob('csrc/cuda/*.cu'))
        define_macros.append(('WITH_CUDA', None))
        ext = CUDAExtension(
            'laud_mm._ext', sources, define_macros=define_macros,
            include_dirs=[os.path.join(HERE, 'csrc')],
            extra_compile_args={'cxx': cxx, 'nvcc': ['-O3']})
    else:
        ext = CppExtension(
            'laud_mm._ext', sources, define_macros=define_macros,
            include_dirs=[os.path.join(HERE, 'csrc')],
            extra_compile_args={'cxx': cxx})
    return [ext], {'build_ext': BuildExtension.with_options(use_ninja=False)}


ext_modules, cmdclass = get_extensions()

setup(
    name='laud_mm',
    version=get_version(),
    description='LAUDNet latency-aware unified dynamic networks for OpenMMLab',
    packages=find_packages(exclude=('tests', 'tests.*', 'tools', 'configs')),
    python_requires='>=3.8',
    install_requires=['mmengine>=0.10', 'mmdet>=3.0', 'mmpretrain>=1.0',
                      'numpy'],
    extras_require={'tests': ['pytest', 'hypothesis'],
                    'benchmark': ['matplotlib']},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
