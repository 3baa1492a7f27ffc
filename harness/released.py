"""Stage `released`: score the official released checkpoints without training.

Two ways in, one code path:

- ``csrbench evaluate --weights FILE --model NAME --codec C --level Q`` scores one downloaded
  checkpoint (the documented command; README "Released weights");
- ``csrbench released --model NAME`` (the DVC stage, a matrix over params ``released``) scores
  the entry of params ``released`` for that model. An entry whose file is absent is skipped with
  one line naming where to download it; it is never an error.

Loading (:func:`load_released`): ``torch.load(weights_only=True)`` (no pickled code runs); the
model file's own ``checkpoint_filter_fn`` unwraps the official container (BasicSR's
``params_ema`` is preferred over ``params``; a bare state dict; DataParallel's ``module.``
prefix) and drops buffers the model recomputes; then ``load_state_dict(strict=True)``. Which
container key held the weights is recorded. A file that does not fit raises
:class:`harness.checkpoint.CheckpointError` naming the missing / unexpected / mis-shaped keys
and, when the keys belong to another network, that network's name (:func:`detect_architecture`,
a spandrel-style signature match against every ``harness.models`` network built on the meta
device).

Release records: each model file keeps ``RELEASED_WEIGHTS = {file name: {...}}`` as plain data
next to its variants (timm's ``_cfg``): model name, URL, sha256 (``None`` with a note where the
authors publish none), container key, training data and degradation, the official evaluation
settings and ``official`` config overrides. :func:`release_of` reads them into :class:`Release`.
A file whose sha256 differs from the recorded one gets a warning naming both hashes.

Fidelity: where the official code computes something other than its paper, the release's
``official`` overrides reproduce the official behaviour (MambaCSR: ``official_cross_unscan=True``,
the column-major un-scan of cross-scale columns on non-square window grids). ``fidelity:
official`` (the default) applies them, ``paper`` does not; the metrics JSON records which.

Output: ``results/metrics/<model>_released/x<s>_<codec>_<level>.json`` (the evaluate layout,
``model`` = ``<model>_released``, plus a ``released`` block: file, sha256, recorded sha256,
container key, fidelity and the overrides used, official evaluation settings) and
``results/metrics/<model>_released/status.txt`` (one line: scored or skipped, and why).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from harness.checkpoint import CheckpointError, file_sha256, load_checkpoint
from harness.config import Config, Degradation

__all__ = ["Release", "releases", "release_of", "load_released", "detect_architecture", "check_sha256",
           "evaluate_weights", "run", "STATUS_NAME"]

log = logging.getLogger(__name__)

#: One line per stage run: scored / skipped (and where to download), so the stage always has an output.
STATUS_NAME = "status.txt"


# ----------------------------------------------------------------------------- release records

@dataclasses.dataclass(frozen=True)
class Release:
    """One released checkpoint, as its model file records it (``RELEASED_WEIGHTS``).

    Args:
        file: official file name.
        model: ``harness.models`` name of the network it fits (paper size).
        url: where to download it.
        sha256: published / recorded hash, or ``None``.
        sha256_note: where the hash comes from, or why there is none.
        params_key: container key the official test reads (``params_ema``, ``params``, or ``None`` = bare).
        license: licence of the weights as stated upstream.
        train_data: training set and patch / sub-image settings.
        degradation: ``{"scale", "codec", "level", "how"}`` the weights were trained for.
        eval: official evaluation settings: ``tile``, ``tile_overlap`` (our grid's nearest
            equivalent), ``pad_multiple``, ``self_ensemble``, ``crop_border``, ``note``.
        official: config overrides that reproduce the official code where it differs from the paper.
    """
    file: str
    model: str
    url: str
    sha256: str | None
    sha256_note: str
    params_key: str | None
    license: str
    train_data: str
    degradation: dict
    eval: dict
    official: dict


_REQUIRED = tuple(f.name for f in dataclasses.fields(Release) if f.name != "file")


@functools.lru_cache(maxsize=1)
def releases() -> dict[str, Release]:
    """Every ``RELEASED_WEIGHTS`` record of every model file, by file name."""
    from harness import models
    out: dict[str, Release] = {}
    modules = {sys.modules[e.variant.__module__] for e in models.MODELS.values()}
    for mod in sorted(modules, key=lambda m: m.__name__):
        for fname, rec in getattr(mod, "RELEASED_WEIGHTS", {}).items():
            missing = [k for k in _REQUIRED if k not in rec]
            extra = [k for k in rec if k not in _REQUIRED]
            if missing or extra:
                raise ValueError(f"{mod.__name__}.RELEASED_WEIGHTS[{fname!r}]: missing {missing}, unknown {extra}")
            if rec["model"] not in models.MODELS:
                raise ValueError(f"{mod.__name__}.RELEASED_WEIGHTS[{fname!r}]: unknown model {rec['model']!r}")
            out[fname] = Release(file=fname, **rec)
    return out


def release_of(model: str, path: str | Path) -> Release | None:
    """The release record of ``path`` (matched by file name) for ``model``, else ``None``."""
    rel = releases().get(Path(path).name)
    if rel is None or rel.model != model:
        return None
    return rel


def check_sha256(path: str | Path, expected: str | None) -> str:
    """sha256 of ``path``; logs a warning naming both hashes when ``expected`` is set and differs."""
    actual = file_sha256(path)
    if expected and actual != expected.lower():
        log.warning("%s: sha256 %s differs from the recorded %s (another release, a re-upload or a damaged "
                    "download?); scoring it anyway", path, actual, expected)
    return actual


# ----------------------------------------------------------------------------- architecture detection

def _module_of(model: str):
    from harness import models
    base = model[: -len("_smoke")] if model.endswith("_smoke") else model
    return sys.modules[models.MODELS[base].variant.__module__]


@functools.lru_cache(maxsize=None)
def _meta_model(name: str) -> nn.Module | None:
    """``name`` built on the meta device (no memory, no init cost), or ``None`` if it cannot be."""
    from harness import models
    try:
        with torch.device("meta"):
            return models.build(name)
    except Exception as e:  # noqa: BLE001 - a network that cannot be built on meta is just not a candidate
        log.debug("detect_architecture: %s not built on meta (%s)", name, e)
        return None


@functools.lru_cache(maxsize=1)
def _signatures() -> dict[str, dict[str, tuple[int, ...]]]:
    """``{model name: {state-dict key: shape}}`` of every ``harness.models`` network."""
    from harness import models
    nets = {name: _meta_model(name) for name in models.list_models()}
    return {name: {k: tuple(v.shape) for k, v in net.state_dict().items()} for name, net in nets.items()
            if net is not None}


def _filtered_for(candidate: str, raw: dict) -> dict[str, tuple[int, ...]]:
    """The file's keys as ``candidate``'s own ``checkpoint_filter_fn`` leaves them (plain keys if it refuses)."""
    try:
        sd = _module_of(candidate).checkpoint_filter_fn(raw, _meta_model(candidate))
    except Exception:  # noqa: BLE001 - a filter that rejects the file: compare the unwrapped keys as they are
        sd = _unwrapped(raw)[0]
    return {k: tuple(v.shape) for k, v in sd.items() if hasattr(v, "shape")}


def _unwrapped(raw: dict) -> tuple[dict, str | None]:
    """Weights and the container key that held them, by the one helper every model filter uses."""
    from mambacsr.layers import unwrap_state_dict
    return unwrap_state_dict(raw, "checkpoint")


def detect_architecture(raw: dict) -> list[tuple[str, float]]:
    """Which ``harness.models`` networks a checkpoint's keys fit, best first.

    Spandrel-style, but the signatures are not hand-written: every network is built on the
    meta device and its ``state_dict`` keys and shapes are the signature. The score is the
    Jaccard overlap of key sets; 1.0 means keys and shapes match exactly (ties between
    identical networks, e.g. ``mambacsr`` and ``mambacsr_sequential_cross``, are all listed).

    Args:
        raw: what ``torch.load`` returned (any official container).

    Returns:
        ``[(model name, score)]`` with score > 0.5, best first (at most 5).
    """
    sigs = _signatures()
    keys = _unwrapped(raw)[0]
    file_keys = {k for k, v in keys.items() if hasattr(v, "shape")}
    # cheap pre-selection on plain keys, then each close candidate through its own filter
    rough = []
    for name, sig in sigs.items():
        inter = len(file_keys & set(sig))
        if inter:
            rough.append((inter / len(file_keys | set(sig)), name))
    rough.sort(reverse=True)
    scored = []
    for _, name in rough[:12]:
        got = _filtered_for(name, raw)
        sig = sigs[name]
        inter = set(got) & set(sig)
        jac = len(inter) / max(1, len(set(got) | set(sig)))
        exact = jac == 1.0 and all(got[k] == sig[k] for k in inter)
        scored.append((name, 1.0 if exact else min(jac, 0.999)))
    scored.sort(key=lambda t: (-t[1], t[0].endswith("_smoke"), t[0]))
    return [(n, round(s, 3)) for n, s in scored if s > 0.5][:5]


# ----------------------------------------------------------------------------- loading

def load_released(path: str | Path, model: str, *, fidelity: Literal["official", "paper"] = "official",
                  expected_sha256: str | None = None, device: torch.device | str = "cpu"
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``model`` and load an official checkpoint into it, strictly.

    Args:
        path: the downloaded file.
        model: ``harness.models`` name the file is for.
        fidelity: ``official`` applies the release's ``official`` config overrides (the
            official code's behaviour), ``paper`` builds the model as the paper describes it.
        expected_sha256: hash to check against (default: the release record's, if any).
        device: where the network goes.

    Returns:
        ``(network in eval mode, info)``; info: ``file, sha256, expected_sha256, params_key,
        fidelity, overrides, release`` (the record as a dict, or ``None``).

    Raises:
        CheckpointError: missing / unreadable file, or weights that do not fit ``model`` (names
            the keys, and the network they do fit when there is one).
    """
    from harness import models
    path = Path(path)
    rel = release_of(model, path)
    if fidelity not in ("official", "paper"):
        raise ValueError(f"fidelity must be 'official' or 'paper', got {fidelity!r}")
    raw = load_checkpoint(path)
    overrides = dict(rel.official) if (rel and fidelity == "official") else {}
    if fidelity == "official" and rel is None:
        overrides = _default_official(model)
    net = models.build(model, **overrides)
    try:
        sd = _module_of(model).checkpoint_filter_fn(raw, net)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: does not fit {model!r}: {e}{_hint(raw, model)}") from None
    _strict_check(path, model, net, sd, raw)
    net.load_state_dict(sd, strict=True)
    expected = expected_sha256 if expected_sha256 is not None else (rel.sha256 if rel else None)
    info = {
        "file": str(path), "sha256": check_sha256(path, expected), "expected_sha256": expected,
        "params_key": _unwrapped(raw)[1], "fidelity": fidelity, "overrides": overrides,
        "release": dataclasses.asdict(rel) if rel else None,
    }
    if rel and rel.params_key and info["params_key"] != rel.params_key:
        log.warning("%s: weights read from %r; the official test reads %r", path, info["params_key"], rel.params_key)
    return net.to(device).eval(), info


def _default_official(model: str) -> dict:
    """``official`` overrides of any release of ``model`` or of the paper size its ``_smoke`` twin stands
    for (they describe the official code, not one file)."""
    base = model[: -len("_smoke")] if model.endswith("_smoke") else model
    for rel in releases().values():
        if rel.model == base and rel.official:
            return dict(rel.official)
    return {}


def _hint(raw: dict, model: str) -> str:
    ranked = detect_architecture(raw)
    found = [n for n, _ in ranked]
    if not found:
        return "; its keys match no csrbench network"
    if model in found and ranked[0][1] < 1.0:
        return ""
    if model in found:  # exact fits elsewhere but not here: only shapes differ (another size or scale)
        found.remove(model)
        ranked = [r for r in ranked if r[0] != model]
        if not found:
            return ""
    best = ranked[0]
    same = [n for n, sc in ranked[1:] if sc == best[1] == 1.0]
    return (f"; its keys fit {best[0]!r}" + (" exactly" if best[1] == 1.0 else f" best (overlap {best[1]:.2f})")
            + f": try --model {best[0]}" + (f" (identical: {', '.join(same)})" if same else ""))


def _strict_check(path: Path, model: str, net: nn.Module, sd: dict, raw: dict) -> None:
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(k for k in set(own) & set(sd) if tuple(sd[k].shape) != own[k])
    if not (missing or unexpected or shapes):
        return

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {few(unexpected)}")
    if shapes:
        parts.append("shape mismatch: " + few([f"{k} file {tuple(sd[k].shape)} vs model {own[k]}" for k in shapes]))
    raise CheckpointError(f"{path}: does not fit {model!r} ({'; '.join(parts)}){_hint(raw, model)}")


# ----------------------------------------------------------------------------- scoring

def evaluate_weights(cfg: Config, model: str, weights: Path, degradation: Degradation, scale: int | None, out: Path | None,
                     datasets: list[str] | None, data: Path, device: torch.device,
                     fidelity: Literal["official", "paper"] = "official",
                     tile_from: Literal["release", "params"] = "release") -> Path:
    """Score one released checkpoint on the test sets; write its metrics JSON.

    Args:
        cfg: the run's Config (``evaluate`` and ``data.test``).
        model: network name the file is for.
        weights: the downloaded checkpoint.
        degradation: test degradation (:class:`harness.config.Degradation`).
        scale: SR factor; ``None`` = the network's.
        out: metrics JSON path; ``None`` = ``results/metrics/<model>_released/x<s>_<codec>_<level>.json``.
        datasets: test sets (default ``cfg.data.test``).
        data: data folder (``hr/``, ``lr/``).
        device: torch device.
        fidelity: see :func:`load_released`.
        tile_from: ``release`` = the official tile settings of the release record (params
            ``evaluate`` when the file has no record), ``params`` = params ``evaluate``.

    Returns:
        The metrics JSON path.
    """
    from harness.evaluate import TILE_BLEND, scan_backend, score_network
    from harness.provenance import write_json

    device = torch.device(device)
    net, info = load_released(weights, model, fidelity=fidelity, device=device)
    net_scale = int(net.cfg.upscale)
    scale = net_scale if scale is None else int(scale)
    if net_scale != scale:
        raise CheckpointError(f"{weights}: {model!r} is an x{net_scale} network, asked to evaluate x{scale}")
    if out is None:
        out = Path("results/metrics") / f"{model}_released" / f"x{scale}_{degradation.codec}_{degradation.level}.json"
    rel = info["release"]
    ev = cfg.evaluate
    if tile_from == "release" and rel:
        tile, overlap = int(rel["eval"]["tile"]), int(rel["eval"]["tile_overlap"])
        ens, source = bool(rel["eval"]["self_ensemble"]), "release"
    else:
        tile, overlap, ens, source = ev.tile, ev.tile_overlap, ev.self_ensemble, "params"
    if rel:
        trained = rel["degradation"]
        if (trained["codec"], trained["level"], trained["scale"]) != (degradation.codec, degradation.level, scale):
            log.warning("%s was released for x%s %s_%s and is evaluated on x%d %s", weights, trained["scale"],
                        trained["codec"], trained["level"], scale, degradation.tag)
    border = ev.border(scale)
    names = list(datasets) if datasets else list(cfg.data.test)
    results = score_network(net, f"{model}_released", names, degradation, scale, Path(data), tile, overlap, ens,
                            border, device, ev.max_images)
    backend = scan_backend(device)
    tile_info = {"size": tile, "overlap": overlap, "blend": TILE_BLEND, "from": source}
    released = {k: info[k] for k in ("file", "sha256", "expected_sha256", "params_key", "fidelity", "overrides")}
    released.update(url=rel["url"] if rel else None, official_eval=rel["eval"] if rel else None,
                    trained_on=rel["degradation"] if rel else None, train_data=rel["train_data"] if rel else None)
    payload = {
        "model": f"{model}_released", "network": model, "scale": scale, "codec": degradation.codec,
        "level": degradation.level, "profile": cfg.profile, "iterations": None,
        "ema": info["params_key"] == "params_ema", "backend": backend,
        "checkpoint": {"path": info["file"], "sha256": info["sha256"]}, "released": released,
        "tile": tile_info, "self_ensemble": ens, "crop_border": border, "max_images": ev.max_images,
        "datasets": results,
    }
    return write_json(out, payload, cfg=cfg, device=device, scan_backend=backend, tile=tile_info,
                      weights_sha256=info["sha256"])


def _status(folder: Path, line: str) -> None:
    from harness.provenance import write_text
    write_text(folder / STATUS_NAME, line + "\n")


def run(cfg: Config, model: str, out: Path, data: Path, device: torch.device) -> Path:
    """Score the params ``released`` entry of ``model`` on each of its degradations.

    Args:
        cfg: the run's Config (``released``, ``evaluate``, ``data.test``).
        model: the entry's model name.
        out: folder for ``x<s>_<codec>_<level>.json`` and ``status.txt``
            (``results/metrics/<model>_released``).
        data: data folder.
        device: torch device.

    Returns:
        ``out``. An absent weights file is not an error: one warning line names where to download
        it, and ``status.txt`` says so.
    """
    entries = [e for e in cfg.released if e.model == model]
    if not entries:
        known = ", ".join(e.model for e in cfg.released) or "none"
        raise ValueError(f"{cfg.source}: released has no entry for model {model!r} (entries: {known})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for entry in entries:
        path = Path(entry.file)
        if not path.is_file():
            rel = releases().get(path.name)
            where = rel.url if rel else "the model's upstream repository"
            msg = f"skipped {model}: {path} is absent; download {path.name} from {where} into {path.parent}/"
            log.warning("%s", msg)
            lines.append(msg)
            continue
        for deg in entry.degradations:
            tag = f"x{entry.scale}_{deg.codec}_{deg.level}"
            written = evaluate_weights(cfg, model, path, deg, entry.scale, out / f"{tag}.json",
                                       list(entry.datasets) or None, data, device, fidelity=entry.fidelity)
            lines.append(f"scored {model}: {path} -> {written} (fidelity {entry.fidelity})")
    _status(out, "\n".join(lines))
    return out
