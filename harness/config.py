"""params.yaml -> frozen dataclasses, strictly.

Every section of ``params.yaml`` loads into one frozen dataclass below. Loading
is strict (nanoGPT's configurator without the ``exec``, and the opposite of
BasicSR's ``opt.get(key, default)``): an unknown key, a missing key, a value of
the wrong type or an out-of-range value raises :class:`ConfigError` naming the
file, the dotted key and, for a typo, the closest valid key. Nothing is filled
in silently: every key of every section is spelled out in the profile files
(``harness/profiles/smoke.yaml``, ``harness/profiles/paper.yaml``).

Why presets instead of ``dvc exp run -S profile=paper``: DVC resolves the
``matrix`` of ``dvc.yaml`` from params.yaml before anything runs and forbids
nested interpolation (``${${profile}.models}`` fails to parse), so a profile
cannot change the list of stages from inside one params file. The profile is
therefore a whole preset copied into params.yaml by ``csrbench profile NAME``
(the ``profile`` key records which preset a run started from).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

__all__ = [
    "ConfigError", "Config", "DataConfig", "DegradeConfig", "Degradation", "ModelRun", "RunsConfig", "TrainConfig",
    "EvaluateConfig", "ComplexityConfig", "ErfConfig", "ReportConfig", "CheckConfig", "TextZoomConfig",
    "ReleasedRun",
    "load", "load_dict", "check_names", "PROFILES", "profile_path", "switch_profile",
]

PROFILES = tuple(sorted(p.stem for p in (Path(__file__).parent / "profiles").glob("*.yaml")))  # every preset
CODECS = ("none", "jpeg", "hevc", "vvc")


class ConfigError(ValueError):
    """A params file that does not match the schema; the message names file and key."""


# ----------------------------------------------------------------------------- sections

@dataclass(frozen=True)
class Degradation:
    """One degradation of the x``scale`` LR images: codec and its quality level."""
    codec: Literal["none", "jpeg", "hevc", "vvc"]
    level: int  # JPEG quality factor, HEVC/VVC QP, 0 for codec none

    def __post_init__(self):
        _check(self.codec != "none" or self.level == 0, "level", "must be 0 for codec 'none'")
        _check(self.codec != "jpeg" or 1 <= self.level <= 100, "level", "JPEG quality must be in 1..100")
        if self.codec in ("hevc", "vvc"):
            from harness.data.codecs import QP_RANGE  # the encoders' real ranges, measured there
            lo, hi = QP_RANGE[self.codec]
            _check(lo <= self.level <= hi, "level", f"{self.codec.upper()} QP must be in {lo}..{hi}")

    @property
    def tag(self) -> str:
        """``jpeg_10``: the folder name under ``data/lr/<dataset>/x<s>/``."""
        return f"{self.codec}_{self.level}"


@dataclass(frozen=True)
class DataConfig:
    root: str                          # folder holding raw/, hr/, lr/ (a DVC output)
    train: str                         # training dataset, a name from harness.data.registry
    test: tuple[str, ...]              # test datasets
    local: dict[str, str]              # dataset -> path of an existing local copy (skips download)
    patch_size: int                    # LR training patch (HR patch = scale * patch_size)
    num_workers: int                   # data-loader worker processes
    sub_images: bool                   # extract BasicSR-style sub-images from the training set
    train_images: int                  # first N training images in name order are degraded and trained on;
                                       # 0 = all (a length knob: the rehearsal profile's DF2K stand-in)
    standin: bool                      # prepare writes synthetic stand-ins in the published layouts
                                       # (harness/data/standin.py; the rehearsal profile), not the real data

    def __post_init__(self):
        _check(self.patch_size >= 4, "patch_size", "must be >= 4")
        _check(self.num_workers >= 0, "num_workers", "must be >= 0")
        _check(self.train_images >= 0, "train_images", "must be >= 0 (0 = every image)")
        _check(len(self.test) > 0, "test", "needs at least one dataset")

    def first_train_images(self, names: Sequence[str]) -> list[str]:
        """The training images used: the first ``train_images`` of ``names`` in name order (all when 0)."""
        return first_n(names, self.train_images)


def first_n(items: Sequence[Any], n: int) -> list[Any]:
    """The first ``n`` of ``items`` in sorted (name) order; all of them when ``n`` is 0.

    The one rule behind ``data.train_images``, ``evaluate.max_images``, ``train.val_images`` and
    ``report.visual_images`` (items: names, or ``(name, ...)`` tuples with distinct names)."""
    items = sorted(items)
    return items[:n] if n else items


@dataclass(frozen=True)
class DegradeConfig:
    scale: int                         # downscaling factor of the MATLAB bicubic step
    workers: int                       # processes that degrade images in parallel
    hevc_encoder: Literal["ffmpeg", "hm"]   # ffmpeg's libx265, or HM's TAppEncoder at hm_path
    vvc_encoder: Literal["ffmpeg", "vtm"]   # ffmpeg's libvvenc, or VTM's EncoderApp at vtm_path
    hm_path: str                       # TAppEncoder binary; "" = unused
    vtm_path: str                      # EncoderApp binary; "" = unused

    def __post_init__(self):
        _check(self.scale in (2, 3, 4), "scale", "must be 2, 3 or 4")
        _check(self.workers >= 1, "workers", "must be >= 1")


@dataclass(frozen=True)
class ModelRun:
    """A model the pipeline trains, and the source file that defines it.

    ``code`` lets dvc.yaml list the one file each matrix row depends on, so that
    editing ``baselines/hat.py`` reruns only HAT's stages (DVC cannot look the file
    up from the name itself: nested interpolation is not allowed). A test checks
    that ``code`` is the file defining the model.
    """
    name: str                          # a harness.models name, e.g. mambacsr or mambacsr_smoke
    code: str                          # e.g. mambacsr/model.py

    def __post_init__(self):
        _check(self.code.endswith(".py") and self.code.split("/")[0] in ("mambacsr", "baselines"),
               "code", f"must be the model's source file under mambacsr/ or baselines/, got {self.code!r}")


@dataclass(frozen=True)
class RunsConfig:
    """What the pipeline trains and scores: the dvc.yaml matrices read these lists."""
    models: tuple[ModelRun, ...]       # main comparison (Table 1), trained on every degradation
    degradations: tuple[Degradation, ...]
    ablations: tuple[ModelRun, ...]    # MambaCSR variants (Tables 2-4), trained on ablation_degradation
    ablation_degradation: Degradation
    classic_x2: tuple[ModelRun, ...]   # MambaIR study, bicubic x2 (codec none)

    def __post_init__(self):
        _check(len(self.models) > 0, "models", "needs at least one model")
        _check(len(self.degradations) > 0, "degradations", "needs at least one degradation")

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @property
    def ablation_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.ablations)

    @property
    def classic_x2_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.classic_x2)


@dataclass(frozen=True)
class TrainConfig:
    iterations: int                    # total optimiser steps
    batch_size: int                    # global batch, split over DDP ranks
    lr: float                          # Adam learning rate
    betas: tuple[float, float]         # Adam betas
    weight_decay: float
    milestones: tuple[int, ...]        # MultiStepLR steps (paper text: 150k/225k/275k; official code: 250k)
    gamma: float                       # lr factor at each milestone
    loss: Literal["l1", "charbonnier"]
    charbonnier_eps: float
    ema_decay: float                   # 0 disables EMA; evaluation uses EMA weights otherwise
    grad_clip: float                   # max grad norm; 0 disables clipping
    amp: Literal["none", "bf16", "fp16"]
    val_every: int                     # iterations between validation PSNR
    val_images: int                    # first N images of data.test[0] in that validation (EMA weights)
    ckpt_every: int                    # iterations between checkpoints
    keep_last: int                     # checkpoints kept
    log_every: int
    seed: int

    def __post_init__(self):
        _check(self.iterations >= 1, "iterations", "must be >= 1")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(self.lr > 0, "lr", "must be > 0")
        _check(all(0 <= b < 1 for b in self.betas), "betas", "must be in [0, 1)")
        _check(list(self.milestones) == sorted(self.milestones), "milestones", "must be increasing")
        _check(0 < self.gamma <= 1, "gamma", "must be in (0, 1]")
        _check(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1)")
        _check(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 disables)")
        _check(self.charbonnier_eps > 0, "charbonnier_eps", "must be > 0")
        for k in ("val_every", "val_images", "ckpt_every", "keep_last", "log_every"):
            _check(getattr(self, k) >= 1, k, "must be >= 1")


@dataclass(frozen=True)
class EvaluateConfig:
    tile: int                          # LR tile size for tiled inference; 0 = whole image
    tile_overlap: int                  # LR pixels of overlap between tiles
    crop_border: int | Literal["scale"]  # pixels cropped before PSNR/SSIM; "scale" = BasicSR's convention
    self_ensemble: bool                # x8 geometric self-ensemble ("+" rows)
    max_images: int                    # first N images in name order of each test set (evaluate, released,
                                       # generalize; TextZoom: first N crops of each split); 0 = all
                                       # (a length knob: the rehearsal profile)
    generalize_datasets: tuple[str, ...]  # test sets of the codec-generalization stage; [] = data.test

    def __post_init__(self):
        _check(self.tile >= 0, "tile", "must be >= 0 (0 = whole image)")
        _check(self.tile == 0 or 0 <= self.tile_overlap < self.tile, "tile_overlap", "must be in [0, tile)")
        _check(self.crop_border == "scale" or self.crop_border >= 0, "crop_border", "must be >= 0 or 'scale'")
        _check(self.max_images >= 0, "max_images", "must be >= 0 (0 = every image)")

    def border(self, scale: int) -> int:
        """Pixels to crop at this scale."""
        return scale if self.crop_border == "scale" else self.crop_border

    def first_images(self, names: Sequence[str]) -> list[str]:
        """The test images scored: the first ``max_images`` of ``names`` in name order (all when 0)."""
        return first_n(names, self.max_images)


@dataclass(frozen=True)
class ComplexityConfig:
    input_size: int                    # LR side of the 1x3xSxS input (Table 1 used 64)
    latency_repeats: int
    latency_models: Literal["all", "table1", "none"]  # who gets latency / memory: every counted model,
                                       # runs.models only (Table 1; the ablations are counted only), nobody

    def __post_init__(self):
        _check(self.input_size >= 8, "input_size", "must be >= 8")
        _check(self.latency_repeats >= 1, "latency_repeats", "must be >= 1")


@dataclass(frozen=True)
class ErfConfig:
    num_images: int                    # LR crops the gradient map is averaged over
    crop: int                          # LR crop side
    models: tuple[str, ...]

    def __post_init__(self):
        _check(self.num_images >= 1, "num_images", "must be >= 1")
        _check(self.crop >= 8, "crop", "must be >= 8")


@dataclass(frozen=True)
class ReportConfig:
    visual_images: int                 # test images shown as visual crops
    crop: int                          # HR crop side of the visual comparison

    def __post_init__(self):
        _check(self.visual_images >= 1, "visual_images", "must be >= 1")


@dataclass(frozen=True)
class CheckConfig:
    reference: str                     # committed reference metrics of this profile (results/reference/<profile>)
    missing_reference: Literal["fail", "pass"]  # no reference for this profile yet: exit 1, or say so and exit 0
    psnr_drop_db: float                # largest allowed PSNR drop
    ssim_drop: float                   # largest allowed SSIM drop

    def __post_init__(self):
        _check(self.psnr_drop_db >= 0, "psnr_drop_db", "must be >= 0")
        _check(self.ssim_drop >= 0, "ssim_drop", "must be >= 0")


@dataclass(frozen=True)
class TextZoomConfig:
    """Text SR on TextZoom (MambaIR study): x2 models trained on its train LMDBs, scored per test split."""
    root: str                          # TextZoom LMDB folder; "" = the embedded rendered set
    models: tuple[ModelRun, ...]       # text-SR models (x2), trained by `csrbench textzoom-train`
    recognizer: Literal["tesseract", "crnn", "aster", "moran"]
    recognizer_weights: str            # local weights for crnn/aster/moran; "" for tesseract
    iterations: int                    # replace train.iterations for text SR
    batch_size: int                    # replaces train.batch_size (and is the scoring batch)
    loss: Literal["l1", "charbonnier"]  # replaces train.loss

    def __post_init__(self):
        _check(self.iterations >= 1, "iterations", "must be >= 1")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)


@dataclass(frozen=True)
class ReleasedRun:
    """A released (official) checkpoint the `released` stage scores, if its file is present.

    ``code`` is the model's source file (the dvc.yaml row depends on it, as for ``runs``).
    An absent ``file`` is skipped with one line saying where to download it.
    """
    model: str                         # harness.models name the weights fit (paper size), e.g. mambacsr
    code: str                          # e.g. mambacsr/model.py
    file: str                          # local weights file, e.g. models/released/Cross-scale-QF10-x4.pth
    scale: int                         # SR factor of the weights
    degradations: tuple[Degradation, ...]   # test degradations scored (one metrics JSON each)
    datasets: tuple[str, ...]          # test sets; [] = data.test
    fidelity: Literal["official", "paper"]  # official: the official code's behaviour (see harness/released.py)

    def __post_init__(self):
        _check(self.code.endswith(".py") and self.code.split("/")[0] in ("mambacsr", "baselines"),
               "code", f"must be the model's source file under mambacsr/ or baselines/, got {self.code!r}")
        _check(self.scale in (2, 3, 4), "scale", "must be 2, 3 or 4")
        _check(len(self.degradations) > 0, "degradations", "needs at least one degradation")


@dataclass(frozen=True)
class Config:
    profile: Literal["smoke", "paper", "rehearsal"]
    device: Literal["auto", "cpu", "cuda"]
    data: DataConfig
    degrade: DegradeConfig
    runs: RunsConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    complexity: ComplexityConfig
    erf: ErfConfig
    report: ReportConfig
    check: CheckConfig
    textzoom: TextZoomConfig
    released: tuple[ReleasedRun, ...]  # official checkpoints scored without training (`released` stage)
    source: str = field(default="<dict>", compare=False)   # file it was loaded from (not a params key)

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-ready dict of every params key (for provenance and checkpoints)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        return _plain(d)


# ----------------------------------------------------------------------------- loading

class _FieldError(Exception):
    def __init__(self, key: str, msg: str):
        super().__init__(msg)
        self.key, self.msg = key, msg


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise _FieldError(key, msg)


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if origin in (tuple, list):
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples, dicts to dataclasses."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _FieldError(key, f"must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _FieldError(key, f"must be {_type_name(tp)}, got {value!r}{hint}")
        return value
    if origin in (types.UnionType, typing.Union):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _convert(arg, value, key)
            except _FieldError as e:
                errors.append(e.msg)
        raise _FieldError(key, " or ".join(errors))
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise _FieldError(key, f"must be a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _FieldError(key, f"must be a list of {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise _FieldError(key, f"must be a mapping, got {type(value).__name__} {value!r}")
        return {_convert(kt, k, f"{key}.{k}"): _convert(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise _FieldError(key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _FieldError(key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _FieldError(key, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _FieldError(key, f"must be a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    dotted = (lambda k: f"{prefix}.{k}") if prefix else (lambda k: k)
    for k in data:
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1, cutoff=0.5)
            hint = f" (did you mean {dotted(close[0])!r}?)" if close else f"; valid keys: {', '.join(fields)}"
            raise _FieldError(dotted(k), f"unknown key{hint}")
    missing = [k for k in fields if k not in data]
    if missing:
        raise _FieldError(dotted(missing[0]), "missing key (every key is spelled out; see harness/profiles/)")
    kwargs = {k: _convert(hints[k], data[k], dotted(k)) for k in fields}
    try:
        return cls(**kwargs)
    except _FieldError as e:
        raise _FieldError(dotted(e.key), e.msg) from None


def _unknown(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}"


def check_names(cfg: Config) -> None:
    """Every dataset name against ``harness.data.registry`` and every model name against
    ``harness.models.list_models()``, so a typo fails at load, naming the key, before any work.

    Imports ``harness.models`` (torch and the model code): :func:`harness.cli.main` calls this
    after it has set the thread limits, through ``load(..., names=False)`` then ``check_names``.

    Raises:
        ConfigError: names the file, the dotted key and the closest valid names.
    """
    from harness.data import registry
    from harness.models import list_models
    datasets = registry.names()
    sources = sorted({s.name for d in registry.DATASETS.values() for s in d.sources})
    models = list_models()
    keys: list[tuple[str, str, str, list[str]]] = [("data.train", cfg.data.train, "dataset", datasets)]
    keys += [(f"data.test[{i}]", n, "dataset", datasets) for i, n in enumerate(cfg.data.test)]
    keys += [(f"data.local.{k}", k, "dataset or source", sorted({*datasets, *sources})) for k in cfg.data.local]
    keys += [(f"evaluate.generalize_datasets[{i}]", n, "test set", list(cfg.data.test))
             for i, n in enumerate(cfg.evaluate.generalize_datasets)]
    for section, runs in (("runs.models", cfg.runs.models), ("runs.ablations", cfg.runs.ablations),
                          ("runs.classic_x2", cfg.runs.classic_x2), ("textzoom.models", cfg.textzoom.models)):
        keys += [(f"{section}[{i}].name", m.name, "model", models) for i, m in enumerate(runs)]
    keys += [(f"erf.models[{i}]", n, "model", models) for i, n in enumerate(cfg.erf.models)]
    keys += [(f"released[{i}].model", e.model, "model", models) for i, e in enumerate(cfg.released)]
    for key, name, kind, known in keys:
        if name not in known:
            what = ("see harness.models.list_models()" if kind == "model" else
                    f"data.test: {', '.join(known)}" if kind == "test set" else f"registered: {', '.join(known)}")
            raise ConfigError(f"{cfg.source}: {key}: {_unknown(kind, name, known)}; {what}")


def load_dict(data: dict, source: str = "<dict>", *, names: bool = True) -> Config:
    """Validate a params mapping into a :class:`Config`; errors name ``source`` and the key.

    ``names=False`` skips :func:`check_names` (the caller runs it later).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping of sections, got {type(data).__name__}")
    try:
        cfg = _build(Config, data, "")
    except _FieldError as e:
        raise ConfigError(f"{source}: {e.key}: {e.msg}") from None
    cfg = dataclasses.replace(cfg, source=source)
    if names:
        check_names(cfg)
    return cfg


def load(path: str | Path = "params.yaml", *, names: bool = True) -> Config:
    """Load and validate a params file, dataset and model names included (see :func:`check_names`).

    Raises:
        ConfigError: the file is missing, is not YAML, breaks the schema or names an unknown dataset
            or model (message names file and key).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root, or pass --params)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return load_dict(data, str(path), names=names)


def profile_path(name: str) -> Path:
    """Path of a preset shipped with the package (a file of ``harness/profiles/``)."""
    if name not in PROFILES:
        close = difflib.get_close_matches(name, PROFILES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown profile {name!r}{hint}; choose one of {', '.join(PROFILES)}")
    return Path(__file__).parent / "profiles" / f"{name}.yaml"


def switch_profile(name: str, target: str | Path = "params.yaml") -> Path:
    """Copy the preset ``name`` over ``target`` after validating it (schema, dataset and model
    names); returns ``target``."""
    from harness.provenance import write_text
    src = profile_path(name)
    load(src)  # a broken preset must never replace a working params file
    return write_text(target, src.read_text())
