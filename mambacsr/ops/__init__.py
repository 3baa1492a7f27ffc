"""Sequence operators for MambaCSR and the Mamba baselines (see `selective_scan` for the backends)."""
from .selective_scan import (
    BACKENDS,
    ENV_VAR,
    SCAN_OP_NAMES,
    SelectiveScanNumba,
    SelectiveScanTorch,
    current_backend,
    selective_scan,
    selective_scan_chunked,
    selective_scan_ref,
    set_backend,
    use_backend,
)

__all__ = [
    "BACKENDS", "ENV_VAR", "SCAN_OP_NAMES", "SelectiveScanNumba", "SelectiveScanTorch", "current_backend",
    "selective_scan", "selective_scan_chunked", "selective_scan_ref", "set_backend", "use_backend",
]
