"""Stage `render`: not implemented yet (placeholder of the foundation commit)."""
from __future__ import annotations


def run(cfg, **kwargs):
    raise NotImplementedError("csrbench render: not implemented yet")
