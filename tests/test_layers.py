"""The package layers only point down: samplers <- hamiltonians <- ansatz <- qvmc (checked on the
source, lazy imports inside functions included), and modules stay small."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ('samplers', 'hamiltonians', 'ansatz', 'qvmc')  # each may import only the ones before it
MAX_LINES = 450  # "about 400": a module past this should be split


def _imported_packages(path: pathlib.Path):
    """``(line, top-level package)`` of every import statement in a file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split('.')[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split('.')[0]


@pytest.mark.parametrize('layer', LAYERS)
def test_no_import_from_a_higher_layer(layer):
    higher = set(LAYERS[LAYERS.index(layer) + 1:])
    offences = [f'{path.relative_to(ROOT)}:{line} imports {package}'
                for path in sorted((ROOT / layer).glob('*.py'))
                for line, package in _imported_packages(path) if package in higher]
    assert not offences, f'{layer} may import only {LAYERS[:LAYERS.index(layer)]}: ' + '; '.join(offences)


def test_modules_stay_small():
    long = [f'{p.relative_to(ROOT)} ({n} lines)' for layer in LAYERS for p in sorted((ROOT / layer).glob('*.py'))
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, 'split these modules: ' + ', '.join(long)


def test_checker_catches_an_upward_import(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text('def f():\n    from qvmc.stats import compute_stats\n    return compute_stats\n')
    assert (2, 'qvmc') in list(_imported_packages(bad))


def _module_imports(path: pathlib.Path):
    """The modules of our four packages that a module imports (``from qvmc import checkpoint`` counts as
    ``qvmc.checkpoint``; a package's ``__init__`` as the package), lazy imports included."""
    found = set()
    for _, node in ((None, n) for n in ast.walk(ast.parse(path.read_text(), filename=str(path)))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in LAYERS:
                found |= {f'{node.module}.{a.name}' for a in node.names if (ROOT / node.module / f'{a.name}.py').exists()}
            elif node.module.split('.')[0] in LAYERS:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split('.')[0] in LAYERS and '.' in a.name}
    return found


def test_no_import_cycle_between_modules():
    """No module reaches itself through imports (e.g. a file-format module importing the loader that
    imports it back)."""
    graph = {f'{layer}.{p.stem}': _module_imports(p) for layer in LAYERS for p in (ROOT / layer).glob('*.py')
             if p.stem != '__init__'}
    state, cycles = {}, []

    def visit(name, stack):
        state[name] = 'open'
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == 'open':
                cycles.append(' -> '.join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[name] = 'done'
    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, 'import cycles: ' + '; '.join(cycles)
