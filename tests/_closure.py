"""What a pipeline stage's code really uses: the project files it imports and the params it reads.

Static analysis (``ast``), no import side effects, so the deps test needs no data or network.
Starting from the functions a ``csrbench`` subcommand runs (its handler in harness/cli.py and the
entry module's ``run``):

- a module's file counts once the module is imported; importing it runs its module-level imports
  (and the ``__init__.py`` of each package above it);
- a harness function counts once a counted function names it (a bare name, or ``module.name`` for an
  imported project module; a counted class brings all its methods): an over-approximation by
  name that never misses a direct call. The imports inside a counted function count too, so a lazy
  import in a function the stage never calls does not make the stage depend on that module;
- model files (``mambacsr/``, ``baselines/``) count whole: every import in them;
- string constants that name a project module (``_call("harness.train", ...)``) are imports;
- empty ``__init__.py`` files carry no behaviour and are left out; ``harness/config.py`` is a
  leaf: it turns params.yaml into values that DVC tracks through each stage's ``params`` (strict
  loading, no defaults), so it is neither required nor followed.

``cfg.<section>.<key>`` chains in the counted harness functions are the params the stage reads.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "mambacsr", "baselines")
LEAVES = {"harness/config.py"}


def module_file(name: str) -> Path | None:
    p = ROOT.joinpath(*name.split("."))
    if (p / "__init__.py").exists():
        return p / "__init__.py"
    if p.with_suffix(".py").exists():
        return p.with_suffix(".py")
    return None


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _package_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1])


def _walk_outside_functions(node: ast.AST):
    """The nodes of ``node`` that run when it runs: not the bodies of the functions it defines."""
    yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield from _walk_outside_functions(child)


def imported_modules(node: ast.AST, path: Path, *, nested: bool = True) -> set[str]:
    """Project modules imported in ``node`` (``from a import b`` yields a and a.b, where a.b is one);
    ``nested=False``: not inside the functions ``node`` defines (what runs at import)."""
    out: set[str] = set()
    for n in (ast.walk(node) if nested else _walk_outside_functions(node)):
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                pkg = _package_of(path).split(".")
                pkg = pkg[: len(pkg) - n.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in n.names}
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.split(".")[0] in PACKAGES \
                and n.value.replace(".", "").replace("_", "").isalnum():
            out.add(n.value)
    return {m for m in out if m.split(".")[0] in PACKAGES and module_file(m) is not None}


def _module_aliases(tree: ast.Module, path: Path) -> dict[str, str]:
    """Names a file binds to project modules: ``import harness.x as z`` -> {z: harness.x},
    ``from harness.data import registry`` -> {registry: harness.data.registry}."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            for m in imported_modules(node, path):
                head, _, last = m.rpartition(".")
                alias = next((a.asname or a.name for a in node.names if a.name == last), None)
                if alias and module_file(m) is not None and head:
                    names[alias] = m
    return names


def _named(fn: ast.AST, aliases: dict[str, str]) -> set[tuple[str | None, str]]:
    """``(None, name)`` for bare names, ``(module, attr)`` for ``alias.attr`` on an imported project
    module (``registry.get``); not ``obj.method``: a counted class brings all its methods along."""
    names: set[tuple[str | None, str]] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Name):
            names.add((None, node.id))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            names.add((aliases[node.value.id], node.attr))
    return names


def _cfg_chains(fn: ast.AST) -> set[str]:
    """``cfg.a.b`` -> "a.b", a bare ``cfg.a`` (passed on whole) -> "a"."""
    chains: set[str] = set()
    parents = {child: node for node in ast.walk(fn) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(fn):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "cfg":
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute) and parent.value is node:
                chains.add(f"{node.attr}.{parent.attr}")
            else:
                chains.add(node.attr)
    return chains


@dataclass
class Usage:
    files: set[str] = field(default_factory=set)        # repo-relative project files the stage runs
    functions: list[ast.AST] = field(default_factory=list)  # counted harness functions and classes

    def params(self, preset: dict | None = None) -> set[str]:
        """Params keys read. With ``preset``, only real keys: ``cfg.runs.model_names`` (a property)
        counts as reading ``runs``, a method call on ``cfg`` as nothing."""
        read = set().union(*(_cfg_chains(f) for f in self.functions)) if self.functions else set()
        if preset is None:
            return read
        return {k if "." not in k or k.split(".")[1] in (preset.get(k.split(".")[0]) or {}) else k.split(".")[0]
                for k in read if k.split(".")[0] in preset}


def usage(entry: set[str], extra: tuple[tuple[ast.AST, Path], ...] = ()) -> Usage:
    """What runs when the ``run`` of each ``entry`` module and the ``extra`` functions run."""
    files: set[Path] = set()
    defs: dict[tuple[str | None, str], list[tuple[ast.AST, dict[str, str], Path]]] = {}
    pending = set(entry)
    todo = [(n, _module_aliases(_tree(p), p), p) for n, p in extra]
    reached: dict[int, ast.AST] = {}
    named: set[tuple[str | None, str]] = set()  # every name a counted function uses
    while pending or todo:
        while pending:
            name = pending.pop()
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ first
                mod = ".".join(parts[:i])
                f = module_file(mod)
                if f is None or f in files or rel(f) in LEAVES:
                    continue
                files.add(f)
                tree = _tree(f)
                if not rel(f).startswith("harness/"):  # model code counts whole
                    pending |= imported_modules(tree, f)
                    continue
                pending |= imported_modules(tree, f, nested=False)
                aliases = _module_aliases(tree, f)
                for node in tree.body:
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        item = (node, aliases, f)
                        for key in ((None, node.name), (mod, node.name)):
                            defs.setdefault(key, []).append(item)
                            if key in named:  # named earlier, defined in a module counted only now
                                todo.append(item)
                        if node.name == "run" and mod in entry:
                            todo.append(item)
        while todo:
            fn, aliases, path = todo.pop()
            if id(fn) in reached:
                continue
            reached[id(fn)] = fn
            pending |= imported_modules(fn, path)
            keys = _named(fn, aliases) - {(None, "run")}  # `run` is every stage's entry: only by module
            named |= keys
            for key in keys:
                todo += defs.get(key, [])
    return Usage({rel(f) for f in files if f.read_text().strip()}, list(reached.values()))


def file_closure(*modules: str) -> set[str]:
    """Project files that running ``modules``' ``run`` imports (see the module docstring)."""
    return usage(set(modules)).files


def params_read(module: str, preset: dict | None = None) -> set[str]:
    """Params keys that running ``module.run`` reads."""
    return usage({module}).params(preset)
