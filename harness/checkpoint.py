"""Training checkpoints: atomic save, safe load, keep-last-N, and "newest valid" for resume.

A checkpoint is one ``torch.save``-d dict of plain types and tensors (so it loads
with ``torch.load(weights_only=True)``: no pickled code runs on load). It is
written to a temporary file in the same folder, fsynced and ``os.replace``-d over
``ckpt_<iteration>.pt``; never ``torch.save`` straight to the target (nanoGPT's
``ckpt.pt`` is lost if the process dies mid-write). A file that still fails to load
(truncated copy, full disk, bit rot) is skipped by :func:`find_newest_valid` with a
warning naming it, and the next older one is used.

Folder layout (``models/<model>/x<s>_<codec>_<level>/``)::

    ckpt_00000100.pt   ckpt_00000200.pt   ...   (the last ``train.keep_last``)
    final.pt                                    EMA weights + model name/config, read by evaluate
    train.json                                  summary with provenance
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch

__all__ = ["CheckpointError", "checkpoint_path", "list_checkpoints", "save_checkpoint", "load_checkpoint",
           "find_newest_valid", "prune_checkpoints", "file_sha256", "FINAL_NAME"]

log = logging.getLogger(__name__)

FINAL_NAME = "final.pt"
_CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or lacks what the caller needs; the message names the file."""


def checkpoint_path(folder: str | Path, iteration: int) -> Path:
    """``<folder>/ckpt_<iteration, 8 digits>.pt``."""
    return Path(folder) / f"ckpt_{iteration:08d}.pt"


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every ``ckpt_*.pt`` in ``folder``, oldest first (temp files ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically ``torch.save`` ``state`` to ``path`` (temp file in the same folder, fsync, rename).

    Args:
        path: target file.
        state: dict of tensors and plain Python values (must load with ``weights_only=True``).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - e.g. filesystems without directory fsync
        pass
    return path


def load_checkpoint(path: str | Path, required: Iterable[str] = ()) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True``.

    Args:
        path: checkpoint file.
        required: keys the dict must contain.

    Returns:
        The saved dict.

    Raises:
        CheckpointError: missing, truncated or corrupt file, not a dict, or a required key missing.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, ...: all mean "unusable"
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: checkpoint must hold a dict, got {type(state).__name__}")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks key(s) {', '.join(missing)}")
    return state


def find_newest_valid(folder: str | Path, required: Iterable[str] = ("iteration",)
                      ) -> tuple[Path, dict[str, Any]] | None:
    """The newest ``ckpt_*.pt`` in ``folder`` that loads and whose ``iteration`` matches its name.

    Invalid files are skipped with a warning naming them (they are not deleted, so a
    person can look at them).

    Args:
        folder: checkpoint folder.
        required: keys a valid checkpoint must have.

    Returns:
        ``(path, state)``, or ``None`` when no valid checkpoint exists.
    """
    required = tuple(required)
    for iteration, path in reversed(list_checkpoints(folder)):
        try:
            state = load_checkpoint(path, required)
        except CheckpointError as e:
            log.warning("ignoring invalid checkpoint %s", e)
            continue
        if "iteration" in state and state["iteration"] != iteration:
            log.warning("ignoring checkpoint %s: it holds iteration %s, its name says %d",
                        path, state["iteration"], iteration)
            continue
        return path, state
    return None


def prune_checkpoints(folder: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` ``ckpt_*.pt`` files; returns the deleted paths."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    old = list_checkpoints(folder)[:-keep_last]
    for _, p in old:
        p.unlink(missing_ok=True)
    return [p for _, p in old]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
