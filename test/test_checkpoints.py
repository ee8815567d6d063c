"""
Official checkpoint layouts load into the models.

Files that do not fit give a WeightsError that says why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_ros.models import registry as models
from vpr_ros.errors import WeightsError
from vpr_ros.models.checkpoints import load_backbone_pretrain, load_official
from vpr_ros.models.registry import guess_model
from vpr_ros.models.dinov2 import Block, DinoVisionTransformer
from vpr_ros.models.fol import DinoV2WithClsAttention, FoLNet
from vpr_ros.models.mutualvpr import AdapterBlock, MutualVPR
from vpr_ros.models.scicevpr import MultiLayerDinoV2, SciceVPR

WIDTH = 64


def tiny_dino(width: int = WIDTH, block: type[Block] = Block) -> DinoVisionTransformer:
    return DinoVisionTransformer(width, depth=2, num_heads=2, block=block)


def tiny_scicevpr(seed: int) -> SciceVPR:
    torch.manual_seed(seed)
    return SciceVPR(
        MultiLayerDinoV2(tiny_dino(), [0, 1]), backbone_out_dim=2 * WIDTH, mix_in_dim=WIDTH
    ).eval()


def tiny_mutualvpr(seed: int) -> MutualVPR:
    torch.manual_seed(seed)
    return MutualVPR(tiny_dino(block=AdapterBlock), out_dim=16).eval()


def tiny_fol(seed: int) -> FoLNet:
    torch.manual_seed(seed)
    return FoLNet(DinoV2WithClsAttention(tiny_dino()), WIDTH).eval()


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def save(tmp_path: Path, obj: object, name: str = "weights.pth") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("wrapper", [None, "model_state_dict", "state_dict"])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_layouts_round_trip(tmp_path: Path, wrapper: str | None, prefix: str) -> None:
    source = tiny_scicevpr(seed=1)
    state = {prefix + k: v for k, v in source.state_dict().items()}
    # As util.save_checkpoint writes it: extra entries, numpy recalls included.
    obj = (
        state
        if wrapper is None
        else {wrapper: state, "epoch_num": 3, "recalls": np.array([80.5, 90.1])}
    )
    target = tiny_scicevpr(seed=2)
    assert not torch.equal(target.conv.weight, source.conv.weight)
    assert load_official(target, save(tmp_path, obj)) is target
    assert_same_state(target, source)


def test_loaded_model_reproduces_outputs(tmp_path: Path) -> None:
    source = tiny_fol(seed=1)
    target = load_official(
        tiny_fol(seed=2), save(tmp_path, {"model_state_dict": source.state_dict()})
    )
    x = torch.randn(1, 3, 126, 126)  # 81 tokens: FoL needs more tokens than its 64 clusters
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), atol=0, rtol=0)


def test_other_models_file_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    path = save(
        tmp_path,
        {"model_state_dict": {"module." + k: v for k, v in tiny_fol(0).state_dict().items()}},
    )
    with pytest.raises(WeightsError) as err:
        load_official(tiny_mutualvpr(0), path)
    message = str(err.value)
    assert "missing keys" in message and "backbone.cls_token" in message
    assert "unexpected keys" in message and "backbone.model.cls_token" in message
    assert "looks like FoL" in message
    assert "more)" in message  # long lists are cut, with a count


def test_wrong_width_names_shape_mismatches(tmp_path: Path) -> None:
    path = save(tmp_path, tiny_dino(width=32).state_dict())
    with pytest.raises(
        WeightsError, match=r"shape mismatches: cls_token: file \[1, 1, 32\] vs model \[1, 1, 64\]"
    ):
        load_official(tiny_dino(), path)


def test_unreadable_files_raise_weights_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no weights file"):
        load_official(tiny_dino(), tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"<html>not a checkpoint</html>")
    with pytest.raises(WeightsError, match="not a readable torch checkpoint"):
        load_official(tiny_dino(), garbage)
    with pytest.raises(WeightsError, match="holds no state_dict"):
        load_official(tiny_dino(), save(tmp_path, {"epoch_num": 1}))


def test_backbone_pretrain_keeps_adapters_and_head(tmp_path: Path) -> None:
    pretrain = tiny_dino()
    model = tiny_mutualvpr(seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_backbone_pretrain(model, save(tmp_path, pretrain.state_dict()))
    after = model.state_dict()
    for key, value in pretrain.state_dict().items():
        assert torch.equal(after["backbone." + key], value), key
    kept = [k for k in before if ".adapter." in k or k.startswith("aggregation.")]
    assert kept and all(torch.equal(after[k], before[k]) for k in kept)


@pytest.mark.parametrize("build", [tiny_fol, tiny_scicevpr])
def test_backbone_pretrain_fills_the_nested_backbone(tmp_path: Path, build) -> None:
    pretrain = tiny_dino()
    model = build(seed=4)
    load_backbone_pretrain(model, save(tmp_path, pretrain.state_dict()))
    backbone = next(m for m in model.modules() if isinstance(m, DinoVisionTransformer))
    assert_same_state(backbone, pretrain)


def test_backbone_pretrain_rejects_incomplete_file(tmp_path: Path) -> None:
    state = tiny_dino().state_dict()
    del state["blocks.1.attn.qkv.weight"]
    with pytest.raises(WeightsError, match=r"1 missing keys: blocks\.1\.attn\.qkv\.weight"):
        load_backbone_pretrain(tiny_mutualvpr(0), save(tmp_path, state))


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("dinov2-b", "dinov2-b"),
        ("scicevpr-b", "scicevpr-b"),
        ("scicevpr-l", "scicevpr-l"),
        ("scicevpr-teacher-b", "scicevpr-teacher-b"),
        ("mutualvpr-b", "mutualvpr-b"),
        ("fol-b", "fol-b"),
        ("fol-l", "fol-l"),
    ],
)
def test_guess_model_recognises_preset_layouts(preset: str, expected: str) -> None:
    with torch.device("meta"):
        state = models.build(preset).state_dict()
    assert expected in guess_model(state)
