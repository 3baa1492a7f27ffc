"""The one lookup from a params name to a network: ``build(name)`` and ``list_models()``.

No registry decorators: ``MODELS`` below is a literal dict from name to (model
class, variant function, smoke-reducer). ``<name>_smoke`` is every model's
reduced size for the smoke profile (same code path, small width and depth).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

from torch import nn

from baselines import hat, hst, mambair, swin2sr, swinir
from mambacsr import model as mambacsr

__all__ = ["MODELS", "build", "config_of", "list_models"]


class Entry(NamedTuple):
    cls: type[nn.Module]
    variant: Callable[[], Any]     # -> frozen config dataclass
    smoke: Callable[[Any], Any]    # config -> reduced config


def _entries(module, cls: type[nn.Module], names: list[str]) -> dict[str, Entry]:
    return {n: Entry(cls, getattr(module, n), module.smoke) for n in names}


MODELS: dict[str, Entry] = {
    **_entries(swinir, swinir.SwinIR, ["swinir", "swinir_classical_x4", "swinir_classical_x2"]),
    **_entries(swin2sr, swin2sr.Swin2SR, ["swin2sr", "swin2sr_compressed_x4"]),
    **_entries(hst, hst.HST, ["hst"]),
    **_entries(hat, hat.HAT, ["hat"]),
    **_entries(mambair, mambair.MambaIR, ["mambair", "mambair_x2", "mambair_light_x2"]),
    **_entries(mambacsr, mambacsr.MambaCSR, [
        "mambacsr", "mambacsr_wo_cross", "mambacsr_sequential_cross",
        "mambacsr_t3_plain", "mambacsr_t3_hier", "mambacsr_t3_h2v", "mambacsr_t3_both",
        "mambacsr_win4", "mambacsr_win8", "mambacsr_win16", "mambacsr_win32", "mambacsr_win64"]),
}


def list_models(smoke: bool | None = None) -> list[str]:
    """Every buildable name: the paper sizes and their ``_smoke`` twins (or only one kind)."""
    names = []
    if smoke in (None, False):
        names += list(MODELS)
    if smoke in (None, True):
        names += [f"{n}_smoke" for n in MODELS]
    return names


def config_of(name: str, **overrides: Any) -> Any:
    """The frozen config ``build(name, **overrides)`` would use."""
    base, smoke = (name[: -len("_smoke")], True) if name.endswith("_smoke") else (name, False)
    if base not in MODELS:
        import difflib
        close = difflib.get_close_matches(name, list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}{hint} (see harness.models.list_models())")
    entry = MODELS[base]
    cfg = entry.variant()
    if smoke:
        cfg = entry.smoke(cfg)
    try:
        return dataclasses.replace(cfg, **overrides)
    except TypeError as e:
        raise TypeError(f"model {name!r}: bad override ({e})") from None


def build(name: str, **overrides: Any) -> nn.Module:
    """Build a model by params name; it maps (B, 3, h, w) in [0, 1] to (B, 3, s*h, s*w)."""
    base = name[: -len("_smoke")] if name.endswith("_smoke") else name
    cfg = config_of(name, **overrides)
    return MODELS[base].cls(cfg)
