"""dvc.yaml's deps cannot drift from the code: a stale result is the worst bug a harness can have.

For every stage of every preset (matrix rows resolved by DVC itself), the stage's entry module is
the one its ``csrbench`` subcommand calls. Each project file in that module's import closure must
be covered by a ``deps`` entry (the file or a folder above it), and each params key its code reads
must be listed in ``params`` (the key or its section). Model files are the one exception, by
design: a row that trains or scores one model depends on that model's own file (``code`` in
params), so editing baselines/hat.py reruns only HAT's rows; the test checks that ``code`` really
is the file that defines the row's model. See tests/_closure.py for what counts as "reads".
"""
from __future__ import annotations

import ast
import inspect
import shlex
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from _closure import ROOT, file_closure, imported_modules, params_read, usage
from harness import models
from harness.cli import build_parser

# Params that choose the machine, not the result; each result records them in its provenance.
NOT_RESULT_PARAMS = {"device"}
PRESETS = sorted(p.stem for p in (ROOT / "harness" / "profiles").glob("*.yaml"))


def _model_file(name: str) -> str:
    base = name[: -len("_smoke")] if name.endswith("_smoke") else name
    return Path(inspect.getsourcefile(models.MODELS[base].cls)).resolve().relative_to(ROOT).as_posix()


MODEL_FILES = {_model_file(n) for n in models.MODELS}


@pytest.fixture(scope="module", params=PRESETS)
def stages(request, tmp_path_factory):
    """The preset's resolved stages, by DVC's own parser: [(name, cmd, dep paths, params keys)],
    and the preset's params sections."""
    from dvc.repo import Repo
    root = tmp_path_factory.mktemp(request.param)
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(ROOT / "harness" / "profiles" / f"{request.param}.yaml", root / "params.yaml")
    repo = Repo.init(str(root), no_scm=True)
    out = []
    for st in repo.index.stages:
        deps, params = [], []
        for d in st.deps:
            if getattr(d, "params", None) is not None:
                params += list(d.params)
            else:
                deps.append(Path(d.fs_path).relative_to(root).as_posix())
        out.append((st.name, st.cmd, deps, params))
    repo.close()
    return out, yaml.safe_load((root / "params.yaml").read_text())


class _TakeParsedBranch(ast.NodeTransformer):
    """Keep only the branch the stage's own options take: ``if a.weights is not None:`` in a
    handler is dead code for a stage that passes no ``--weights``."""

    def __init__(self, args):
        self.args = args

    def visit_If(self, node: ast.If):
        t = node.test
        if isinstance(t, ast.Compare) and len(t.ops) == 1 and isinstance(t.ops[0], (ast.Is, ast.IsNot)) \
                and isinstance(t.left, ast.Attribute) and isinstance(t.left.value, ast.Name) \
                and t.left.value.id == "a" and isinstance(t.comparators[0], ast.Constant) \
                and t.comparators[0].value is None and hasattr(self.args, t.left.attr):
            is_none = getattr(self.args, t.left.attr) is None
            taken = node.body if is_none == isinstance(t.ops[0], ast.Is) else node.orelse
            return [self.visit(n) for n in taken] or ast.Pass()
        return self.generic_visit(node)


def _handler(cmd: str):
    argv = shlex.split(cmd)
    assert argv[0] == "csrbench", f"{cmd!r}: every stage runs one csrbench subcommand"
    args = build_parser().parse_args(argv[1:])
    tree = ast.parse(textwrap.dedent(inspect.getsource(args.fn)))
    return args, _TakeParsedBranch(args).visit(tree)


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def _param_covered(key: str, params: list[str]) -> bool:
    section = key.split(".")[0]
    if "." not in key:  # the whole section is passed on: any key of it listed counts
        return any(p == key or p.startswith(key + ".") for p in params)
    return key in params or section in params


_USAGE: dict[str, tuple] = {}


def _stage_usage(cmd: str):
    """The subcommand's parsed args and what its handler plus its entry module's ``run`` use."""
    args, tree = _handler(cmd)
    key = ast.dump(tree)  # matrix rows of one stage share it
    if key not in _USAGE:
        cli = ROOT / "harness" / "cli.py"
        entry = imported_modules(tree, cli)
        assert entry, f"{cmd!r}: cannot tell which module `{cmd.split()[1]}` runs"
        _USAGE[key] = entry, usage(entry, extra=((tree, cli),))
    return (args, *_USAGE[key])


def test_every_stage_depends_on_its_code(stages):
    problems = []
    for address, cmd, deps, _ in stages[0]:
        args, entry, used = _stage_usage(cmd)
        needed = set(used.files)
        model = getattr(args, "model", None)
        if isinstance(model, str):  # one model's row: its own file, no other model's
            own = _model_file(model)
            if own not in deps:
                problems.append(f"{address}: model {model} is defined in {own}, which is not in deps")
            needed -= MODEL_FILES
        problems += [f"{address}: {f} (run by {', '.join(sorted(entry))}) is not in deps"
                     for f in sorted(needed) if not _covered(f, deps)]
    assert not problems, "\n".join(problems)


def test_every_stage_lists_the_params_it_reads(stages):
    problems = []
    stage_list, preset = stages
    for address, cmd, _, params in stage_list:
        _, _, used = _stage_usage(cmd)
        problems += [f"{address}: reads params `{k}`, not in its params"
                     for k in sorted(used.params(preset) - NOT_RESULT_PARAMS) if not _param_covered(k, params)]
    assert not problems, "\n".join(problems)


def test_the_analysis_sees_what_the_issue_found():
    """The closure finds the files and keys whose omission was reported (the test can fail)."""
    assert {"mambacsr/scan_orders.py", "harness/provenance.py", "harness/data/images.py"} <= file_closure("harness.train")
    assert {"harness/checkpoint.py", "harness/data/loader.py"} <= file_closure("harness.evaluate")
    assert "harness/config.py" not in file_closure("harness.train")
    read = params_read("harness.train")
    assert "train" in read and "data.patch_size" in read and "report.crop" not in read
    assert "harness/evaluate.py" not in file_closure("harness.check")
    assert not _covered("mambacsr/scan_orders.py", ["mambacsr/ops", "mambacsr/model.py"])
    assert _covered("mambacsr/ops/_chunked.py", ["mambacsr/ops"])
    assert not _param_covered("report.crop", ["report.visual_images"])
    args, tree = _handler("csrbench evaluate --model swinir --codec jpeg --level 10")
    assert "harness.released" not in imported_modules(tree, ROOT / "harness" / "cli.py")
    args, tree = _handler("csrbench evaluate --model swinir --codec jpeg --level 10 --weights w.pth")
    assert "harness.released" in imported_modules(tree, ROOT / "harness" / "cli.py")
    assert _param_covered("runs", ["runs.models"]) and _param_covered("runs.models", ["runs"])
