"""One test over every buildable name (timm's test_models): tiny CPU forward, shape, no NaN.

Paper sizes are built on the meta device (no memory); their `_smoke` twins run for real.
"""
import inspect
from pathlib import Path

import pytest
import torch

from harness import config, models

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", models.list_models(smoke=True))
def test_smoke_forward_shape(name):
    torch.manual_seed(0)
    model = models.build(name).eval()
    scale = models.config_of(name).upscale
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, 9 * scale, 11 * scale)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", models.list_models(smoke=False))
def test_paper_size_builds_on_meta(name):
    with torch.device("meta"):
        model = models.build(name)
    assert sum(p.numel() for p in model.parameters()) > 100_000


def test_unknown_model_suggests_names():
    with pytest.raises(KeyError, match="did you mean.*mambacsr"):
        models.build("mambacrs")


@pytest.mark.parametrize("profile", config.PROFILES)
def test_profile_code_paths_name_the_defining_file(profile):
    runs = config.load(config.profile_path(profile)).runs
    for run in runs.models + runs.ablations + runs.classic_x2:
        base = run.name.removesuffix("_smoke")
        src = Path(inspect.getsourcefile(models.MODELS[base].cls)).resolve()
        assert src == (ROOT / run.code).resolve(), f"{profile}: {run.name} is defined in {src}, not {run.code}"
