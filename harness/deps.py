"""Honest import errors: a missing third-party package names itself and the pip command.

A stage module that fails to import because a package it needs is not installed
raises :class:`MissingDependencyError` ("missing Python package 'fvcore', needed by
harness.complexity: pip install 'fvcore==0.1.5.post20221221'"); the version comes from
csrbench's own requirements (``pyproject.toml``) when they list the package. Any other
import failure (a project module that is missing or broken, a name that does not exist)
is a bug and propagates unchanged, with its traceback.
"""
from __future__ import annotations

import importlib
import re
from importlib import metadata
from types import ModuleType

__all__ = ["MissingDependencyError", "PROJECT_PACKAGES", "PIP_NAMES", "pip_requirement", "import_stage", "require"]

#: Top-level packages of this repository: failing to import one of them is a bug, not a missing dependency.
PROJECT_PACKAGES = frozenset({"harness", "mambacsr", "baselines"})

#: Import name -> distribution name, where they differ.
PIP_NAMES: dict[str, str] = {
    "cv2": "opencv-python-headless", "skimage": "scikit-image", "yaml": "pyyaml", "PIL": "pillow",
    "imageio_ffmpeg": "imageio-ffmpeg", "mamba_ssm": "mamba-ssm", "causal_conv1d": "causal-conv1d",
}


class MissingDependencyError(RuntimeError):
    """A third-party package is not installed; the message names it and how to install it."""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_requirement(import_name: str) -> str:
    """``fvcore`` -> ``fvcore==0.1.5.post20221221``: the requirement csrbench declares for a package
    (the distribution name alone when csrbench does not list it or is not installed)."""
    dist = PIP_NAMES.get(import_name, import_name)
    try:
        reqs = metadata.requires("csrbench") or []
    except metadata.PackageNotFoundError:
        reqs = []
    for r in reqs:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)", r)
        if m and _norm(m.group(1)) == _norm(dist):
            return f"{m.group(1)}{m.group(3).strip()}"
    return dist


def _missing(e: ModuleNotFoundError, needed_by: str) -> MissingDependencyError | None:
    top = (e.name or "").split(".")[0]
    if not top or top in PROJECT_PACKAGES:
        return None
    req = pip_requirement(top)
    return MissingDependencyError(f"missing Python package {top!r}, needed by {needed_by}: "
                                  f"pip install '{req}' (or reinstall csrbench: pip install -e .)")


def import_stage(module: str) -> ModuleType:
    """Import a stage module; a missing third-party package becomes :class:`MissingDependencyError`.

    Raises:
        MissingDependencyError: names the package and the pip command.
        ImportError: anything else (a missing or broken project module is a bug: not disguised).
    """
    return require(module, module)


def require(import_name: str, needed_by: str) -> ModuleType:
    """Import a third-party package that ``needed_by`` cannot work without.

    Raises:
        MissingDependencyError: the package (or one it imports) is not installed.
    """
    try:
        return importlib.import_module(import_name)
    except ModuleNotFoundError as e:
        err = _missing(e, needed_by)
        if err is None:
            raise
        raise err from e
