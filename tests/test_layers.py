"""The packages of ``uno`` import one way: no cycle among them."""
import ast
import os
import os.path as osp
from collections import defaultdict

from tests.conftest import REPO


def _package_imports():
    """``{package: {packages it imports}}`` over ``uno/`` (top-level
    modules such as ``uno/errors.py`` count as packages)."""
    edges = defaultdict(set)
    root = osp.join(REPO, 'uno')
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith('.py'):
                continue
            path = osp.join(folder, name)
            parts = osp.relpath(path, REPO)[:-3].split(os.sep)
            package = parts[1] if len(parts) > 2 else parts[-1]
            here = parts[:-1]  # the module's package
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = here[:len(here) - node.level + 1]
                        targets = ['.'.join(base + [node.module or ''])]
                    else:
                        targets = [node.module or '']
                elif isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                else:
                    continue
                for target in targets:
                    words = target.strip('.').split('.')
                    if words[0] == 'uno' and len(words) > 1 and \
                            words[1] != package and words[1] != '__init__':
                        edges[package].add(words[1])
    return edges


def test_no_import_cycle_among_uno_packages():
    edges = _package_imports()
    assert edges['engine'] and 'structures' in edges['models']  # it parses

    def reaches(start, goal):
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a]
                     if reaches(b, a)})
    assert not cycles, f'import cycles between uno packages: {cycles}'
