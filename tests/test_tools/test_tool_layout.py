"""tools/ in mmdet's layout, checked statically: train.py / test.py and the
launchers at the top, the analysis command lines in tools/analysis_tools/,
the checkpoint converter in tools/model_converters/, the data set converter
in tools/dataset_converters/; each of those is a thin
wrapper (a usage docstring, ``parse_args`` and ``main`` calling into
``laud_mm``) that imports no other tool."""
import ast
import os
import os.path as osp

import pytest

from conftest import ROOT

TOOLS = osp.join(ROOT, 'tools')
ANALYSIS = ('benchmark_latency', 'benchmark_kernels', 'benchmark_regnet',
            'benchmark_gpu',
            'benchmark_t2t_vit', 'predict_latency', 'calibrate_hardware',
            'validate_predictor', 'plot_tradeoff', 'visualize_masks',
            'simulate_load_balance')
WRAPPERS = [f'analysis_tools/{n}.py' for n in ANALYSIS] + \
    ['model_converters/convert_checkpoint.py',
     'dataset_converters/coco_semantic.py']


def _tool_files():
    out = []
    for dirpath, _, files in os.walk(TOOLS):
        out += [osp.join(dirpath, f) for f in files if f.endswith('.py')]
    return sorted(out)


def test_layout():
    for name in ('train.py', 'test.py', 'dist_train.sh', 'dist_test.sh'):
        assert osp.isfile(osp.join(TOOLS, name)), name
    for rel in WRAPPERS:
        assert osp.isfile(osp.join(TOOLS, rel)), rel
    stray = [n for n in ANALYSIS + ('convert_checkpoint', 'coco_semantic')
             if osp.exists(osp.join(TOOLS, n + '.py'))]
    assert not stray, f'tools at the top that belong in a sub-folder: {stray}'


def test_no_tool_imports_another_tool():
    stems = {osp.splitext(osp.basename(f))[0] for f in _tool_files()}
    bad = []
    for path in _tool_files():
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or '']
            else:
                continue
            for n in names:
                if n.split('.')[0] in stems | {'tools'}:
                    bad.append(f'{osp.relpath(path, ROOT)}: import {n}')
    assert not bad, bad


@pytest.mark.parametrize('rel', WRAPPERS)
def test_wrapper_is_thin(rel):
    """Usage in the docstring; only parse_args and main; main calls into
    laud_mm."""
    tree = ast.parse(open(osp.join(TOOLS, rel)).read())
    doc = ast.get_docstring(tree)
    assert doc and 'usage' in doc.lower(), f'{rel}: no usage docstring'
    defs = [n.name for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert defs == ['parse_args', 'main'], f'{rel} defines {defs}'
    froms = [n.module for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert any(m and m.startswith('laud_mm.') for m in froms), rel


@pytest.mark.parametrize('rel,func', [
    ('analysis_tools/validate_predictor.py', 'validate_predictor'),
    ('analysis_tools/calibrate_hardware.py', 'calibrate_hardware')])
def test_predictor_tools_pass_warm_caches(rel, func, monkeypatch):
    """--warm-caches reaches the library call (default: blocks timed as
    inside a forward, warm_caches=False)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        osp.basename(rel)[:-3], osp.join(TOOLS, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    got = []
    monkeypatch.setattr(mod, func, lambda **kw: got.append(kw['warm_caches']))
    mod.main([])
    mod.main(['--warm-caches'])
    assert got == [False, True]
