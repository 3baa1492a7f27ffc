"""The ``csrbench`` command: one subcommand per pipeline stage, parsing only.

Each subcommand loads params.yaml strictly (a typo fails before any work),
then calls one module's ``run(cfg, ...)`` with explicit paths; ``dvc.yaml``
passes the same paths it declares as deps and outs. Logs go to stderr, results
to files. Bad input (params, names, files) and a missing third-party package
exit with one line naming the thing (and, for a package, the pip command); any
other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["main", "build_parser"]

log = logging.getLogger("csrbench")

_STARTED = time.time()  # this module's import: the command's start, about 0.05 s after the interpreter's

#: When set, each command appends one JSON line to this file: argv, exit code and the wall-clock times
#: ``start`` (this module imported), ``ready`` (params loaded and checked: torch and the models imported)
#: and ``end``. `csrbench bench rehearsal` reads it to split a stage's seconds between csrbench and DVC.
TIMING_ENV = "CSRBENCH_TIMING_LOG"

STAGES = ("prepare", "degrade", "train", "evaluate", "complexity", "erf", "report", "check")
BENCHES = ("scan", "degrade", "pipeline", "rehearsal", "train", "evaluate")  # `gpu` was renamed `train` (device-agnostic)


def _degradation(codec: str | None, level: int | None):
    from harness.config import ConfigError, Degradation, _FieldError
    if codec is None:
        if level is not None:
            raise ConfigError(f"--level {level} needs --codec")
        return None
    if level is None and codec != "none":
        what = "JPEG quality factor, 1..100" if codec == "jpeg" else "QP"
        raise ConfigError(f"--codec {codec} needs --level ({what})")
    try:
        return Degradation(codec=codec, level=0 if level is None else level)
    except _FieldError as e:  # the dataclass check
        raise ConfigError(f"--codec {codec} --level {level}: {e.msg}") from None


def _models(names: Sequence[str] | None) -> None:
    """Reject an unknown ``--model`` before any work (names the closest)."""
    from harness.config import ConfigError, _unknown
    from harness.models import list_models
    known = list_models()
    for n in names or ():
        if n not in known:
            raise ConfigError(f"--model: {_unknown('model', n, known)}; see harness.models.list_models()")


def _datasets(names: Sequence[str] | None) -> None:
    """Reject an unknown ``--dataset`` before any work (lists the registered ones)."""
    from harness.config import ConfigError
    from harness.data import registry
    for n in names or ():
        try:
            registry.get(n)
        except registry.UnknownDatasetError as e:
            raise ConfigError(f"--dataset: {e}") from None


def _run_tag(scale: int, codec: str, level: int) -> str:
    return f"x{scale}_{codec}_{level}"


# ----------------------------------------------------------------------------- handlers (parse -> call)

def _prepare(a, cfg):
    _datasets(a.dataset)
    return _call("harness.data.prepare", cfg, datasets=a.dataset or None, data_root=a.data_root, out=a.out)


def _degrade(a, cfg):
    _datasets(a.dataset)
    deg = _degradation(a.codec, a.level)
    return _call("harness.data.degrade", cfg, datasets=a.dataset or None, degradations=[deg] if deg else None,
                 scale=a.scale or cfg.degrade.scale, data=a.data)


def _train(a, cfg):
    _models([a.model])
    scale = a.scale or cfg.degrade.scale
    deg = _degradation(a.codec, a.level)
    tag = _run_tag(scale, deg.codec, deg.level)
    return _call("harness.train", cfg, model=a.model, degradation=deg, scale=scale,
                 out=a.out or Path("models") / a.model / tag,
                 curves=a.curves or Path("results/curves") / a.model / f"{tag}.csv",
                 data=a.data, resume=a.resume, device=_device(a, cfg))


def _evaluate(a, cfg):
    _models([a.model])
    _datasets(a.dataset)
    if a.weights is not None:  # a released (official) checkpoint: harness/released.py
        if a.checkpoint is not None:
            from harness.config import ConfigError
            raise ConfigError("--weights and --checkpoint exclude each other (--checkpoint is our own final.pt)")
        from harness import released
        deg = _degradation(a.codec, a.level)
        return released.evaluate_weights(cfg, model=a.model, weights=a.weights, degradation=deg, scale=a.scale,
                                         out=a.out, datasets=a.dataset or None, data=a.data,
                                         device=_device(a, cfg), fidelity=a.fidelity)
    scale = a.scale or cfg.degrade.scale
    deg = _degradation(a.codec, a.level)
    tag = _run_tag(scale, deg.codec, deg.level)
    return _call("harness.evaluate", cfg, model=a.model, degradation=deg, scale=scale,
                 checkpoint=a.checkpoint or Path("models") / a.model / tag,
                 out=a.out or Path("results/metrics") / a.model / f"{tag}.json",
                 datasets=a.dataset or None, data=a.data, device=_device(a, cfg),
                 visual=a.visual or Path("results/visual") / a.model / tag)


def _released(a, cfg):
    return _call("harness.released", cfg, model=a.model,
                 out=a.out or Path("results/metrics") / f"{a.model}_released", data=a.data, device=_device(a, cfg))


def _complexity(a, cfg):
    _models(a.model)
    return _call("harness.complexity", cfg, models=a.model or None, out=a.out, device=_device(a, cfg))


def _erf(a, cfg):
    _models(a.model)
    return _call("harness.erf", cfg, models=a.model or None, checkpoints=a.checkpoints, data=a.data,
                 out=a.out, device=_device(a, cfg))


def _generalize(a, cfg):
    return _call("harness.generalize", cfg, checkpoints=a.checkpoints, data=a.data, out=a.out,
                 models=a.model or None, datasets=a.dataset or None, device=_device(a, cfg))


def _tables(a, cfg):
    return _call("harness.tables", cfg, results=a.results, out=a.out)


def _report(a, cfg):
    return _call("harness.report.render", cfg, results=a.results, data=a.data, out=a.out)


def _check(a, cfg):
    return _call("harness.check", cfg, results=a.results, against=a.against, baseline=a.baseline,
                 update=a.update)


def _textzoom_prepare(a, cfg):
    from harness.data import textzoom
    return textzoom.prepare_embedded(a.out or textzoom.embedded_root(cfg))


def _textzoom_train(a, cfg):
    _models([a.model])
    return _call("harness.textzoom_train", cfg, model=a.model, out=a.out or Path("models/textzoom") / a.model,
                 curves=a.curves or Path("results/curves/textzoom") / f"{a.model}.csv", resume=a.resume,
                 device=_device(a, cfg))


def _textzoom(a, cfg):
    _models([a.model])
    return _call("harness.textzoom_eval", cfg, model=a.model, checkpoint=a.checkpoint,
                 out=a.out or Path("results/textzoom") / f"{a.model}.json", device=_device(a, cfg))


def _bench(a, cfg):
    from harness.config import ConfigError
    from harness.deps import import_stage
    module = f"harness.bench.{a.name}"
    opts = {"models": ("--model", a.model), "batch_size": ("--batch-size", a.batch_size),
            "patch_size": ("--patch-size", a.patch_size), "iterations": ("--iterations", a.iterations),
            "warmup": ("--warmup", a.warmup), "precisions": ("--precision", a.precision),
            "max_seconds": ("--max-seconds", a.max_seconds)}  # run() keyword: (flag, value)
    given = {k: v for k, (_, v) in opts.items() if v is not None}
    unused = [opts[k][0] for k in given if k not in inspect.signature(import_stage(module).run).parameters]
    if unused:
        raise ConfigError(f"bench {a.name}: {', '.join(unused)} not an option of this benchmark")
    return _call(module, cfg, out=a.out or Path("results/bench") / f"{a.name}.json", device=_device(a, cfg), **given)


def _profile(a, cfg):
    from harness.config import switch_profile
    path = switch_profile(a.name, a.params)
    print(f"{path}: now the {a.name!r} profile")
    return 0


def _device(a, cfg):
    from harness.runtime import resolve_device
    return resolve_device(a.device or cfg.device)


def _call(module: str, cfg, **kwargs: Any) -> Any:
    from harness.deps import import_stage
    fn: Callable[..., Any] = import_stage(module).run
    if "cfg" not in inspect.signature(fn).parameters:  # a benchmark that needs no params
        return fn(**kwargs)
    return fn(cfg, **kwargs)


# ----------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="csrbench",
        description="Compressed image super-resolution benchmark: each subcommand is one dvc.yaml stage "
                    "(prepare -> degrade -> train -> evaluate -> complexity -> erf -> report -> check).")
    p.add_argument("--version", action="version", version="csrbench 0.1.0")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    common.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="compute device (default: params.yaml `device`)")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v debug)")
    common.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    def run_args(sp, need_model: bool = True):
        sp.add_argument("--model", required=need_model, help="model name (see harness.models.list_models())")
        sp.add_argument("--codec", choices=("none", "jpeg", "hevc", "vvc"), required=True)
        sp.add_argument("--level", type=int, default=None, help="JPEG quality / HEVC-VVC QP (0 for codec none)")
        sp.add_argument("--scale", type=int, default=None, help="SR factor (default: degrade.scale)")
        sp.add_argument("--data", type=Path, default=Path("data"), help="data folder (default: data)")

    sp = add("prepare", _prepare, "download / verify datasets into data/raw and mod-crop HR into data/hr")
    sp.add_argument("--dataset", action="append", help="dataset name (repeatable; default: params data.train + data.test)")
    sp.add_argument("--data-root", type=Path, default=None, help="existing local copy of the datasets (skip download)")
    sp.add_argument("--out", type=Path, default=Path("data"), help="data folder (default: data)")

    sp = add("degrade", _degrade, "bicubic downscale then JPEG / HEVC / VVC into data/lr")
    sp.add_argument("--dataset", action="append", help="dataset (repeatable; default: params data.train + data.test)")
    sp.add_argument("--codec", choices=("none", "jpeg", "hevc", "vvc"), default=None,
                    help="one codec (default: every degradation in params runs)")
    sp.add_argument("--level", type=int, default=None)
    sp.add_argument("--scale", type=int, default=None)
    sp.add_argument("--data", type=Path, default=Path("data"))

    sp = add("train", _train, "train one model on one degradation (resumes from its newest checkpoint)")
    run_args(sp)
    sp.add_argument("--out", type=Path, default=None, help="checkpoint folder (default: models/<model>/x<s>_<codec>_<level>)")
    sp.add_argument("--curves", type=Path, default=None, help="loss/val CSV (default: results/curves/<model>/...csv)")
    sp.add_argument("--no-resume", dest="resume", action="store_false", help="start from scratch")

    sp = add("evaluate", _evaluate, "PSNR / SSIM on Y (BasicSR convention) of one trained model")
    run_args(sp)
    sp.add_argument("--checkpoint", type=Path, default=None, help="checkpoint file or folder")
    sp.add_argument("--dataset", action="append", help="test dataset (repeatable; default: params data.test)")
    sp.add_argument("--out", type=Path, default=None, help="metrics JSON (default: results/metrics/<model>/...json)")
    sp.add_argument("--visual", type=Path, default=None,
                    help="folder of the report's visual crops (default: results/visual/<model>/x<s>_<codec>_<level>)")
    sp.add_argument("--weights", type=Path, default=None,
                    help="a released (official) checkpoint file instead of our final.pt: bare state dict, "
                         "BasicSR params / params_ema, module. prefixes (default out: "
                         "results/metrics/<model>_released/...json)")
    sp.add_argument("--fidelity", choices=("official", "paper"), default="official",
                    help="with --weights: the official code's behaviour (default) or the paper's")

    sp = add("released", _released, "score the released checkpoints of params `released` (absent files are skipped)")
    sp.add_argument("--model", required=True, help="the model of a params `released` entry")
    sp.add_argument("--data", type=Path, default=Path("data"), help="data folder (default: data)")
    sp.add_argument("--out", type=Path, default=None, help="folder (default: results/metrics/<model>_released)")

    sp = add("complexity", _complexity, "params and MACs (fvcore with the scan; the paper's method), latency, memory")
    sp.add_argument("--model", action="append", help="model (repeatable; default: params runs.models)")
    sp.add_argument("--out", type=Path, default=Path("results/complexity.json"))

    sp = add("erf", _erf, "effective receptive field maps")
    sp.add_argument("--model", action="append", help="model (repeatable; default: params erf.models)")
    sp.add_argument("--checkpoints", type=Path, default=Path("models"), help="folder of trained checkpoints")
    sp.add_argument("--data", type=Path, default=Path("data"))
    sp.add_argument("--out", type=Path, default=Path("results/erf"))

    sp = add("generalize", _generalize, "codec generalization: each trained run on JPEG / HEVC / VVC / WebP / AVC "
             "at matched bits per pixel (evaluation only)")
    sp.add_argument("--model", action="append", help="model (repeatable; default: params runs.models)")
    sp.add_argument("--dataset", action="append", help="test dataset (repeatable; default: params data.test)")
    sp.add_argument("--checkpoints", type=Path, default=Path("models"), help="folder of trained checkpoints")
    sp.add_argument("--data", type=Path, default=Path("data"))
    sp.add_argument("--out", type=Path, default=Path("results/generalization"))

    sp = add("tables", _tables, "every paper table as CSV + Markdown (ours, paper, delta) into results/tables")
    sp.add_argument("--results", type=Path, default=Path("results"))
    sp.add_argument("--out", type=Path, default=Path("results/tables"))

    sp = add("report", _report, "render results/ into one HTML page")
    sp.add_argument("--results", type=Path, default=Path("results"))
    sp.add_argument("--data", type=Path, default=Path("data"))
    sp.add_argument("--out", type=Path, default=Path("results/report/index.html"))

    sp = add("check", _check, "fail (exit 1) when PSNR / SSIM regress against a reference or a git revision")
    sp.add_argument("--results", type=Path, default=Path("results"))
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--against", default=None, help="git revision whose committed results are the baseline")
    g.add_argument("--baseline", type=Path, default=None, help="baseline metrics folder (default: params check.reference)")
    sp.add_argument("--update", action="store_true", help="copy the current metrics into the reference folder instead")

    sp = add("textzoom-prepare", _textzoom_prepare,
             "render the embedded TextZoom-format smoke set (LMDB) into data/raw/textzoom_embedded")
    sp.add_argument("--out", type=Path, default=None, help="folder (default: <data.root>/raw/textzoom_embedded)")

    sp = add("textzoom-train", _textzoom_train, "train an x2 model on TextZoom's training LMDBs (params textzoom)")
    sp.add_argument("--model", required=True, help="an x2 model name (params textzoom.models)")
    sp.add_argument("--out", type=Path, default=None, help="checkpoint folder (default: models/textzoom/<model>)")
    sp.add_argument("--curves", type=Path, default=None, help="loss/val CSV (default: results/curves/textzoom/<model>.csv)")
    sp.add_argument("--no-resume", dest="resume", action="store_false", help="start from scratch")

    sp = add("textzoom", _textzoom, "text SR on TextZoom easy/medium/hard: PSNR/SSIM and recognition accuracy")
    sp.add_argument("--model", required=True, help="an x2 model name")
    sp.add_argument("--checkpoint", type=Path, default=None, help="checkpoint file or folder (default: untrained)")
    sp.add_argument("--out", type=Path, default=None, help="JSON (default: results/textzoom/<model>.json)")

    sp = add("bench", _bench, "benchmarks writing results/bench/<name>.json")
    sp.add_argument("name", choices=BENCHES)
    sp.add_argument("--out", type=Path, default=None)
    g = sp.add_argument_group("bench train (defaults: the six paper models, the paper's batch 32 and LR patch 64); "
                              "--model and --max-seconds also apply to bench evaluate")
    g.add_argument("--model", action="append", help="model (repeatable; e.g. mambacsr_smoke for a quick check)")
    g.add_argument("--batch-size", type=int, default=None, help="batch tried first (halved on out-of-memory)")
    g.add_argument("--patch-size", type=int, default=None, help="LR patch side (HR: 4x)")
    g.add_argument("--iterations", type=int, default=None, help="timed iterations per loop (default 30)")
    g.add_argument("--warmup", type=int, default=None, help="untimed iterations before them (default 3)")
    g.add_argument("--precision", action="append", choices=("fp32", "bf16"),
                   help="repeatable (default: fp32 and bf16 on CUDA, fp32 on CPU)")
    g.add_argument("--max-seconds", type=float, default=None, help="start no new model/precision after this")

    from harness.config import PROFILES
    sp = add("profile", _profile, f"validate a params preset ({' | '.join(PROFILES)}; harness/profiles/) "
                                  "and copy it into params.yaml")
    sp.add_argument("name", choices=PROFILES)
    return p


def _limit_threads(cfg, command: str) -> None:
    """Smoke profile: one CPU thread for torch, up to two for numba's scan kernel, unless the user chose.

    Not for ``bench``: a benchmark measures the machine with all its cores (and records the count).

    torch: the smoke models are so small that two threads cost more in synchronisation than
    they gain under load (mambacsr_smoke fwd+bwd 0.61 s with 1 thread, 10.8 s with 2 on a
    loaded 2-core box), and torch 2.13's first exp/log/tanh/erf call with 2+ threads is
    sometimes inexact, which would make smoke results differ between runs. numba: its scan
    kernel's results do not depend on the thread count at these shapes (work units write
    disjoint outputs; the backward's channel slicing is 1 for batch x groups >= 2 x threads,
    the case of every smoke call) and the scan is ~40 % of a MambaCSR smoke step, so it gets
    min(2, cores): a mambacsr_smoke training went from 48.4 s to 38.8 s, bit-identical weights.
    (``mambacsr.ops.selective_scan`` keeps numba's OpenMP layer from raising torch's count.)
    Must run before torch or numba is imported; OMP_NUM_THREADS / NUMBA_NUM_THREADS set by the
    user win.
    """
    if cfg is None or cfg.profile != "smoke" or command == "bench":
        return
    if "torch" in sys.modules or "numba" in sys.modules:
        return  # called in-process (e.g. from tests): numba refuses a thread change once launched
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("NUMBA_NUM_THREADS", str(min(2, os.cpu_count() or 1)))


def main(argv: Sequence[str] | None = None) -> int:
    marks = {"start": _STARTED if argv is None else time.time()}
    rc = None  # an exception that is a bug propagates with its traceback: logged as rc null
    try:
        rc = _main(argv, marks)
        return rc
    finally:
        if os.environ.get(TIMING_ENV):
            _log_timing(os.environ[TIMING_ENV], sys.argv[1:] if argv is None else list(argv), marks, rc)


def _main(argv: Sequence[str] | None, marks: dict[str, float]) -> int:
    from harness.config import ConfigError, check_names, load

    args = build_parser().parse_args(argv)
    try:
        cfg = None if args.command == "profile" else load(args.params, names=False)
        _limit_threads(cfg, args.command)
        if cfg is not None:
            check_names(cfg)  # imports torch: after the thread limits
        marks["ready"] = time.time()
        from harness.runtime import setup_logging
        setup_logging(-1 if args.quiet else args.verbose)
        result = args.fn(args, cfg)
    except ConfigError as e:
        print(f"csrbench {args.command}: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        if args.verbose:
            raise
        print(f"csrbench {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"csrbench {args.command}: interrupted; finished outputs are kept", file=sys.stderr)
        return 130
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    if result is not None:
        log.info("wrote %s", result)
    return 0


def _log_timing(path: str, argv: list[str], marks: dict[str, float], rc: int | None) -> None:
    """Append this command's times to ``path`` (one JSON line; one append, so concurrent commands interleave
    whole lines)."""
    line = json.dumps({"argv": argv, "rc": rc, **marks, "end": time.time()}) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
