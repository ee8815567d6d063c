"""The pure-torch models against golden vectors made by the official code (shared/reference)."""

from __future__ import annotations

import ast

import pytest
from conftest import SHARED, needs_shared
import torch

from vpr_ros.models import registry as models
from vpr_ros.models.dinov2 import DinoVisionTransformer, interpolate_pos_embed
from vpr_ros.models.fol import DinoV2WithClsAttention, FoLNet
from vpr_ros.models.mutualvpr import AdapterBlock, gem_linear_head
from vpr_ros.models.scicevpr import SciceVPR, SuperCricaVPR

REFERENCE = SHARED / "reference"
needs_reference = needs_shared("reference", "README.md")

DESCRIPTOR_TOL = {"atol": 1e-5, "rtol": 1e-4}
TOKEN_TOL = {"atol": 1e-4, "rtol": 1e-4}

# preset -> official key listing
KEY_FILES = {
    "dinov2-s": "dinov2_vits14.txt",
    "dinov2-b": "dinov2_vitb14.txt",
    "dinov2-l": "dinov2_vitl14.txt",
    "scicevpr-b": "scicevpr_b_student.txt",
    "scicevpr-teacher-b": "super_cricavpr_b_teacher.txt",
    "mutualvpr-b": "mutualvpr_b.txt",
    "fol-b": "fol_b.txt",
    "fol-l": "fol_l.txt",
}


def golden(name: str) -> dict:
    return torch.load(REFERENCE / f"{name}.pt", weights_only=True)


def loaded(module: torch.nn.Module, state_dict: dict) -> torch.nn.Module:
    module.load_state_dict(state_dict, strict=True)
    return module.eval()


def tiny_dinov2() -> tuple[DinoVisionTransformer, dict]:
    g = golden("dinov2_tiny")
    return loaded(DinoVisionTransformer(embed_dim=128, depth=4, num_heads=2), g["state_dict"]), g


@needs_reference
@pytest.mark.parametrize("size", ["224", "322"])
def test_dinov2_tiny_matches_official(size: str) -> None:
    model, g = tiny_dinov2()
    x, out = g["input"][size], g["outputs"][size]
    grid = x.shape[-1] // 14
    with torch.no_grad():
        features = model.forward_features(x)
        for key in ("x_norm_clstoken", "x_norm_patchtokens", "x_prenorm"):
            torch.testing.assert_close(features[key], out[key], **TOKEN_TOL)
        torch.testing.assert_close(model(x), out["forward"], **TOKEN_TOL)
        expected_maps = out["intermediate_n[2,3]_reshape"]
        for n in ([2, 3], 2):
            maps = torch.stack(model.get_intermediate_layers(x, n=n, reshape=True))
            torch.testing.assert_close(maps, expected_maps, **TOKEN_TOL)
        cls = torch.stack(
            [c for _, c in model.get_intermediate_layers(x, n=2, return_class_token=True)]
        )
        torch.testing.assert_close(cls, out["intermediate_n2_cls"], **TOKEN_TOL)
        pos = interpolate_pos_embed(model.pos_embed, grid, grid)
    torch.testing.assert_close(pos, out["interpolated_pos_embed"], atol=1e-6, rtol=1e-5)


@needs_reference
@pytest.mark.parametrize(
    ("name", "cls", "widths"),
    [
        ("scicevpr_head", SciceVPR, (3072, 768)),
        ("super_cricavpr_head_small", SuperCricaVPR, (256, 64)),
    ],
)
def test_scicevpr_heads_match_official(
    name: str, cls: type[SciceVPR], widths: tuple[int, int]
) -> None:
    g = golden(name)
    head = loaded(cls(None, *widths), g["state_dict"])
    x, out = g["input"], g["outputs"]
    with torch.no_grad():
        tokens = head.mix_tokens(x)
        regions = head.pool_regions(tokens)
        encoded = head.encode(regions)
        descriptor = head(x)
        one_by_one = torch.cat([head(x[i:i + 1]) for i in range(len(x))])
    torch.testing.assert_close(tokens[0], out["tokenmix_out_img0"], **TOKEN_TOL)
    torch.testing.assert_close(regions, out["regions_gem"], **DESCRIPTOR_TOL)
    torch.testing.assert_close(encoded, out["encoder_out"].reshape(encoded.shape), **TOKEN_TOL)
    torch.testing.assert_close(descriptor, out["descriptor"], **DESCRIPTOR_TOL)
    torch.testing.assert_close(one_by_one, out["descriptor_batch1_each"], **DESCRIPTOR_TOL)


@needs_reference
def test_scicevpr_student_is_batch_independent_teacher_is_not() -> None:
    student = golden("scicevpr_head")["outputs"]
    teacher = golden("super_cricavpr_head_small")["outputs"]
    torch.testing.assert_close(
        student["descriptor"], student["descriptor_batch1_each"], atol=1e-6, rtol=0
    )
    assert (teacher["descriptor"] - teacher["descriptor_batch1_each"]).abs().max() > 1e-3


@needs_reference
def test_mutualvpr_adapter_block_matches_official() -> None:
    g = golden("mutualvpr_block_w192")
    block = loaded(AdapterBlock(192, num_heads=3), g["state_dict"])
    x, out = g["input"], g["outputs"]
    with torch.no_grad():
        after_attention = x + block.attn_residual(x)
        adapter_out = block.adapter(block.norm2(after_attention))
        block_out = block(x)
    torch.testing.assert_close(adapter_out, out["adapter_out"], **TOKEN_TOL)
    torch.testing.assert_close(block_out, out["block_out"], **TOKEN_TOL)


@needs_reference
def test_mutualvpr_aggregation_matches_official() -> None:
    g = golden("mutualvpr_aggregation")
    state = {k.removeprefix("aggregation."): v for k, v in g["state_dict"].items()}
    head = loaded(gem_linear_head(768, 512), state)
    with torch.no_grad():
        torch.testing.assert_close(head(g["input"]), g["outputs"]["descriptor"], **DESCRIPTOR_TOL)


@needs_reference
def test_fol_head_matches_official() -> None:
    g = golden("fol_b_head")
    model = loaded(FoLNet(None, num_channels=768), g["state_dict"])
    f, t, att = g["input"]["f"], g["input"]["t"], g["input"]["att"]
    out = g["outputs"]
    with torch.no_grad():
        result = model.head(f, t, att.clone())
        global_only = model.global_descriptor(f, t, att.clone())
    torch.testing.assert_close(
        result.global_descriptor, out["global_descriptor"], **DESCRIPTOR_TOL
    )
    torch.testing.assert_close(global_only, out["global_descriptor"], **DESCRIPTOR_TOL)
    torch.testing.assert_close(result.local_map[:1], out["local_all"], **DESCRIPTOR_TOL)
    torch.testing.assert_close(result.mask_separate, out["mask_separate"], **DESCRIPTOR_TOL)
    torch.testing.assert_close(result.mix_matrix, out["mix_matrix"], **DESCRIPTOR_TOL)
    assert torch.equal(result.mask_guide, out["mask_guide"])
    assert torch.equal(result.selection_mask, out["selection_mask_23"])
    torch.testing.assert_close(result.loss_kl_1, out["loss_kl_1"], **DESCRIPTOR_TOL)
    torch.testing.assert_close(result.loss_kl_2, out["loss_kl_2"], **DESCRIPTOR_TOL)
    assert list(result.local_features.shape) == out["local_feature_shape"].tolist()
    assert torch.equal(result.num_local, out["local_feature_nonzero_rows"])
    torch.testing.assert_close(
        result.local_features[:, :64], out["local_feature_first64"], **DESCRIPTOR_TOL
    )
    assert not result.local_features[0, result.num_local[0]:].any()  # zero padding


@needs_reference
def test_fol_backbone_wrapper_matches_official() -> None:
    dino, g = tiny_dinov2()
    out = golden("fol_backbone_wrapper_tiny")["outputs"]
    with torch.no_grad():
        f, t, att = DinoV2WithClsAttention(dino).eval()(g["input"]["322"])
    torch.testing.assert_close(f, out["f"], **TOKEN_TOL)
    torch.testing.assert_close(t, out["t"], **TOKEN_TOL)
    torch.testing.assert_close(att, out["att_cls_to_patches_mean"], **DESCRIPTOR_TOL)


def official_keys(file_name: str) -> dict[str, list[int]]:
    keys = {}
    for line in (REFERENCE / "keys" / file_name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape, _dtype = line.split("\t")
            keys[key] = ast.literal_eval(shape)
    return keys


def meta_state_shapes(name: str) -> dict[str, list[int]]:
    with torch.device("meta"):  # no memory, no init cost: keys and shapes only
        model = models.build(name)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@needs_reference
@pytest.mark.parametrize("name", sorted(KEY_FILES))
def test_preset_state_dict_matches_official_keys(name: str) -> None:
    assert meta_state_shapes(name) == official_keys(KEY_FILES[name])


def test_scicevpr_l_is_the_b_layout_at_vitl_width() -> None:
    shapes = meta_state_shapes("scicevpr-l")
    assert shapes["conv.weight"] == [1024, 4096, 1, 1]
    assert shapes["backbone.dino_model.pos_embed"] == [1, 1370, 1024]
    assert "backbone.dino_model.blocks.23.ls2.gamma" in shapes
    assert "encoder.layers.1.norm1.weight" not in shapes
