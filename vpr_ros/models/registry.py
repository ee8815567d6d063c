"""
All model presets, collected from the model files (each declares its own ``PRESETS``).

Adding a model: write ``models/<method>.py`` with the module and its ``PRESETS``,
add the module to ``_MODEL_MODULES`` below, and add its golden test.
"""

from __future__ import annotations

from torch import nn

from vpr_ros.models import baseline, dinov2, fol, learned_grid, mutualvpr, raw_pixels, scicevpr
from vpr_ros.models.spec import ModelSpec, StateDict

_MODEL_MODULES = (baseline, learned_grid, raw_pixels, dinov2, scicevpr, mutualvpr, fol)
MODELS: dict[str, ModelSpec] = {
    spec.name: spec for module in _MODEL_MODULES for spec in module.PRESETS
}
DEFAULT_MODEL = "baseline"


def names() -> list[str]:
    return list(MODELS)


def spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def build(name: str) -> nn.Module:
    """Build the named model with its default (random) initialisation, in eval mode."""
    return spec(name).build().eval()


def guess_model(state_dict: StateDict) -> str:
    """
    Which preset a state_dict most likely belongs to ('' when unclear).

    A preset matches when every key of its signature is present with the declared
    shape; the most specific match wins (the teacher's signature extends the
    student's).  When the keys fit but not the shapes, the family is named.
    """
    def fits(s: ModelSpec, check_shapes: bool) -> bool:
        return bool(s.signature) and all(
            k in state_dict
            and (shape is None or not check_shapes or tuple(state_dict[k].shape) == shape)
            for k, shape in s.signature.items()
        )

    exact = [s for s in MODELS.values() if fits(s, True)]
    if exact:
        return max(exact, key=lambda s: len(s.signature)).name
    layout = [s for s in MODELS.values() if fits(s, False)]
    if layout:
        best = max(layout, key=lambda s: len(s.signature))
        return f"{best.family} (the {best.name} layout at another width)"
    return ""
