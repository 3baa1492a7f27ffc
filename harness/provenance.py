"""How every number in ``results/`` was made, and writing results files so a kill loses nothing.

Every results file goes through :func:`write_json` (or :func:`write_text` /
:func:`write_csv` for non-JSON files, whose provenance lives in the JSON beside
them). Writes are atomic: the bytes go to a temporary file in the same folder,
are fsynced, then ``os.replace``-d over the target, so a killed run leaves
either the old file or the new one, never half of one.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:  # annotations only: writing a JSON does not import torch
    import torch

    from harness.config import Config

__all__ = ["provenance", "write_json", "write_text", "write_bytes", "write_csv", "git_state", "read_json"]


@lru_cache(maxsize=None)
def git_state(repo: str = ".") -> dict[str, Any]:
    """Commit of ``repo`` and whether code differs from it.

    ``dirty`` ignores ``results/`` and ``dvc.lock``: the pipeline itself rewrites
    them, and they are outputs, not code.
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results", ":!dvc.lock")
        return {"commit": commit, "dirty": bool(status)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    try:
        import torch
        out["torch"] = torch.__version__
        out["cuda"] = torch.version.cuda
        out["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    except ImportError:  # pragma: no cover - torch is a hard dependency
        out["torch"] = None
    for mod in ("mamba_ssm", "numba", "numpy", "fvcore", "cv2", "imageio_ffmpeg", "skimage"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "unknown")
        except Exception:  # mamba_ssm raises more than ImportError without its kernel
            out[mod] = None
    return out


def _device_name(device: torch.device | str | None) -> str:
    try:
        import torch
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if dev.type == "cuda" and torch.cuda.is_available():
            return torch.cuda.get_device_name(dev)
    except Exception:
        pass
    return platform.processor() or platform.machine() or "cpu"


def provenance(cfg: Config | None = None, device: torch.device | str | None = None, **extra: Any) -> dict[str, Any]:
    """The provenance block: commit, profile, seed, versions, device, host, UTC time.

    Args:
        cfg: the :class:`harness.config.Config` the stage ran with (profile and seed come from it).
        device: the torch device the numbers were computed on.
        **extra: stage-specific facts (scan backend, tile settings, ...), stored under their names.
    """
    block: dict[str, Any] = {
        "git": git_state(),
        "profile": getattr(cfg, "profile", None),
        "seed": getattr(getattr(cfg, "train", None), "seed", None),
        "params_file": getattr(cfg, "source", None),
        "versions": _versions(),
        "device": str(device) if device is not None else "cpu",
        "device_name": _device_name(device),
        "host": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                 "torch_threads": _torch_threads(), "numba_threads": _numba_threads()},
        "argv": sys.argv,
        "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    block.update(extra)
    return block


def _torch_threads() -> int | None:
    try:
        import torch
        return torch.get_num_threads()
    except ImportError:  # pragma: no cover
        return None


def _numba_threads() -> int | None:
    """numba's thread count (the scan kernel's), if this process imported numba; else None."""
    numba = sys.modules.get("numba")
    return numba.get_num_threads() if numba is not None else None


def _finite(x: Any) -> Any:
    """JSON has no NaN/inf: store them as null, loudly distinguishable from a number."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path`` (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read and served
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, payload: dict[str, Any], *, cfg: Config | None = None,
               device: torch.device | str | None = None, **extra: Any) -> Path:
    """Write ``payload`` as JSON with a ``provenance`` block, atomically.

    A ``provenance`` dict already in ``payload`` is kept and completed (its keys win).

    Args:
        path: target file.
        payload: JSON-serialisable mapping (numpy scalars are converted; NaN/inf become null).
        cfg: the run's Config, for profile, seed and params file.
        device: torch device the figures were computed on.
        **extra: more provenance facts (e.g. ``scan_backend="numba"``, ``tile={...}``).
    """
    if not isinstance(payload, dict):
        raise TypeError(f"write_json({path}): payload must be a dict, got {type(payload).__name__}")
    block = provenance(cfg, device, **extra)
    block.update(payload.get("provenance") or {})
    body = {"provenance": block, **{k: v for k, v in payload.items() if k != "provenance"}}
    text = json.dumps(_finite(body), indent=2, sort_keys=False, default=_json_default) + "\n"
    return write_text(path, text)


def _json_default(o: Any) -> Any:
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Atomically write a CSV file (e.g. training curves for ``dvc plots``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return write_text(path, buf.getvalue())


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a results JSON; the error names the file when it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: results file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
