"""The package's layout rules, checked statically: imports between laud_mm
modules form no cycle (module-level and function-level imports alike), each
layer imports only the layers below it (ops <- models.layers <- families <-
latency <- evaluation / engine / datasets <- analysis), no sys.path edits in
tools/ or tests/, no upstream class patched at import, no citation of a
document outside the repository, and every cited section of docs/ exists."""
import ast
import os
import os.path as osp
import re

import pytest

from conftest import ROOT

PKG = osp.join(ROOT, 'laud_mm')

# a module may import modules of its own layer and of the layers listed
# before it (registry, version and compat are the bottom)
LAYERS = [
    ('version', 'registry', 'compat'),
    ('structures',),
    ('ops',),
    ('models.layers',),
    ('models.resnet', 'models.regnet', 'models.t2t_vit'),
    ('models.losses', 'models.detectors', 'models.classifiers',
     'models.segmentors', 'models'),
    ('latency',),
    ('evaluation', 'engine', 'datasets'),
    ('analysis',),
]
FAMILIES = ('models.resnet', 'models.regnet', 'models.t2t_vit')


def _modules():
    out = {}
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if f.endswith('.py'):
                path = osp.join(dirpath, f)
                rel = osp.relpath(path, ROOT)[:-3].replace(os.sep, '.')
                if rel.endswith('.__init__'):
                    rel = rel[:-len('.__init__')]
                out[rel] = path
    return out


def _imports(mod, path, modules):
    """laud_mm modules imported anywhere in the file (incl. functions)."""
    tree = ast.parse(open(path).read())
    is_pkg = path.endswith('__init__.py')
    base = mod.split('.') if is_pkg else mod.split('.')[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[:len(base) - node.level + 1]
                prefix = '.'.join(parent + ([node.module] if node.module
                                            else []))
            else:
                prefix = node.module or ''
            names = [prefix] + [f'{prefix}.{a.name}' for a in node.names]
        else:
            continue
        for n in names:
            if n in modules and n != mod:
                found.add(n)
    return found


def _layer(mod):
    rel = mod[len('laud_mm.'):] if mod != 'laud_mm' else ''
    best = None
    for i, group in enumerate(LAYERS):
        for name in group:
            if rel == name or rel.startswith(name + '.'):
                if best is None or len(name) > best[1]:
                    best = (i, len(name))
    return None if best is None else best[0]


def test_no_import_cycles():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    # packages' __init__ re-exports do not count as dependencies of their
    # children: drop edges from a module to its own parent packages
    for m, deps in graph.items():
        graph[m] = {d for d in deps if not m.startswith(d + '.')}
    seen, stack, cycles = {}, [], []

    def visit(m):
        seen[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if seen.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in seen:
                visit(d)
        stack.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)
    assert not cycles, 'import cycles:\n' + '\n'.join(
        ' -> '.join(c) for c in cycles)


def test_layers_import_downwards_and_families_not_each_other():
    modules = _modules()
    bad = []
    for m, p in modules.items():
        lm = _layer(m)
        if lm is None:
            continue
        for d in _imports(m, p, modules):
            ld = _layer(d)
            if ld is not None and ld > lm:
                bad.append(f'{m} (layer {lm}) imports {d} (layer {ld})')
            for fam in FAMILIES:
                pre = 'laud_mm.' + fam
                if d.startswith(pre) and not m.startswith(pre) and \
                        _layer(m) == _layer(pre):
                    bad.append(f'{m} imports another family: {d}')
    assert not bad, '\n'.join(bad)


@pytest.mark.parametrize('folder', ['tools', 'tests'])
def test_no_sys_path_edits(folder):
    bad = []
    for dirpath, _, files in os.walk(osp.join(ROOT, folder)):
        for f in files:
            if f.endswith('.py'):
                path = osp.join(dirpath, f)
                for i, line in enumerate(open(path), 1):
                    if re.search(r'sys\.path\.(insert|append)', line) and \
                            're.search' not in line:
                        bad.append(f'{osp.relpath(path, ROOT)}:{i}')
    assert not bad, bad


def test_no_global_patch_of_upstream_classes():
    """No assignment to an attribute of an mmengine / mmdet / mmpretrain /
    torch class at import (``LoggerHook.x = ...``)."""
    upstream = ('LoggerHook', 'HistoryBuffer', 'Runner', 'MessageHub',
                'ResNet', 'T2T_ViT', 'BaseDetector', 'ImageClassifier',
                'EncoderDecoder', 'BaseSegmentor', 'BaseSegDataset')
    bad = []
    for m, p in _modules().items():
        for node in ast.walk(ast.parse(open(p).read())):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Attribute) and \
                            isinstance(t.value, ast.Name) and \
                            t.value.id in upstream:
                        bad.append(f'{m}: {t.value.id}.{t.attr} = ...')
            if isinstance(node, ast.Call) and \
                    isinstance(node.func, ast.Name) and \
                    node.func.id == 'setattr' and node.args and \
                    isinstance(node.args[0], ast.Name) and \
                    node.args[0].id in upstream:
                bad.append(f'{m}: setattr({node.args[0].id}, ...)')
    assert not bad, bad


def test_no_citation_of_documents_outside_the_repository():
    """The method's notes live in docs/method.md; the outside notes file is
    never named (the name is assembled so this file does not name it)."""
    outside = 'METHOD' + '_NOTES'
    bad = []
    for folder in ('laud_mm', 'tools', 'tests', 'configs', 'docs', 'csrc'):
        for dirpath, _, files in os.walk(osp.join(ROOT, folder)):
            for f in files:
                if f.endswith(('.py', '.md', '.cpp', '.h', '.cu', '.sh')):
                    path = osp.join(dirpath, f)
                    if outside in open(path, errors='replace').read():
                        bad.append(osp.relpath(path, ROOT))
    if outside in open(osp.join(ROOT, 'README.md')).read():
        bad.append('README.md')
    assert not bad, bad


def _doc_sections(path):
    """Normalised titles a citation may name in a doc: its headings, the
    bold openings of paragraphs and list items, and the rounds that open a
    paragraph (``The thirteenth round ...``)."""
    titles = set()
    for line in open(path):
        m = re.match(r'#+\s+(.*)', line) or \
            re.match(r'\s*(?:- )?\*\*(.+?)\*\*', line) or \
            re.match(r'The ((?:\w+-)?\w+ round)\b', line)
        if m:
            titles.add(_norm_title(m.group(1)))
    return titles


def _norm_title(text):
    return ' '.join(text.lower().replace('`', '').split()).rstrip('.')


def test_cited_doc_sections_exist():
    """A citation of a section, ``docs/<doc>.md, "Title"`` or ``docs/<doc>.md,
    thirteenth round`` (in code, comments or docs, across line breaks),
    names a document that exists and a section of it: a heading, a bold
    paragraph opening or a paragraph that opens with the round, which
    starts with or contains the cited title. Catches citations left
    behind when a section moves between documents."""
    quoted = re.compile(
        r'docs/(\w+\.md)`*\)?,?\s*(?:section\s*)?\(?"([^"]{2,80})"')
    rounds = re.compile(r'docs/(\w+\.md)`*,\s*((?:\w+-)?\w+ round)\b')
    prefix = re.compile(r'^\s*(#:|#|//|\*|--)\s?')
    cites, bad, sections = [], [], {}
    for folder in ('laud_mm', 'tools', 'csrc', 'docs', 'configs', 'tests'):
        for dirpath, _, files in os.walk(osp.join(ROOT, folder)):
            for f in files:
                if not f.endswith(('.py', '.md', '.cpp', '.h', '.cu', '.sh')):
                    continue
                path = osp.join(dirpath, f)
                # comment markers dropped, lines joined: a citation may wrap
                text = ' '.join(prefix.sub('', line.rstrip('\n'))
                                for line in open(path, errors='replace'))
                for pattern in (quoted, rounds):
                    for m in pattern.finditer(text):
                        cites.append((osp.relpath(path, ROOT),) + m.groups())
    for src, doc, title in cites:
        path = osp.join(ROOT, 'docs', doc)
        if not osp.isfile(path):
            bad.append(f'{src}: docs/{doc} does not exist')
            continue
        if doc not in sections:
            sections[doc] = _doc_sections(path)
        t = _norm_title(title)
        if not any(s.startswith(t) or t in s for s in sections[doc]):
            bad.append(f'{src}: docs/{doc} has no section "{title}"')
    # the scan itself works: the code cites docs by section in many places
    assert len(cites) > 50, cites
    assert not bad, bad
