import cv2
import numpy as np
import pytest
from conftest import SHARED, needs_shared
import torch

from vpr_ros.evaluation.recall import positives_by_frame, rank_database, recall_at_n
from vpr_ros.inference.factory import create_extractor
from vpr_ros.models.shipped import efficientnet_lite0_checkpoint
from vpr_ros.models import registry
from vpr_ros.models.baseline import EfficientNetLite0Trunk, GridCNNDescriptor, SameConv2d

NORDLAND = SHARED / "data" / "nordland_trimmed"
# Every 4th of the 3576 places keeps the test fast; the full set gives 0.545
# (bench/baseline_selection.py).
NORDLAND_STEP = 4
MIN_RECALL_AT_1 = 0.55  # measured 0.615 on this subset


def test_same_padding_matches_tensorflow_for_even_and_odd_sizes():
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    assert conv(torch.zeros(1, 1, 32, 64)).shape[-2:] == (16, 32)
    assert conv(torch.zeros(1, 1, 33, 65)).shape[-2:] == (17, 33)
    # TensorFlow pads an even input by (0, 1), not (1, 1): with a kernel of ones the
    # top-left output sees 9 pixels and the bottom-right one 4.
    conv.weight.data.fill_(1.0)
    out = conv(torch.ones(1, 1, 4, 4))[0, 0]
    assert (out[0, 0].item(), out[-1, -1].item()) == (9.0, 4.0)


def test_trunk_loads_every_tensor_of_the_shipped_checkpoint():
    checkpoint = efficientnet_lite0_checkpoint()
    trunk = EfficientNetLite0Trunk(num_blocks=16)
    trunk.load_state_dict({k: checkpoint[k] for k in trunk.state_dict()}, strict=True)
    backbone_keys = {k for k in checkpoint if not k.startswith(("_conv_head", "_bn1", "_fc"))}
    assert backbone_keys == set(trunk.state_dict())
    assert trunk.eval()(torch.zeros(1, 3, 64, 128)).shape == (1, 320, 2, 4)


def test_descriptor_shape_and_norm_and_batch_independence():
    model = GridCNNDescriptor(num_blocks=5, grid=(8, 16)).eval()
    x = torch.randn(3, 3, 64, 128)
    with torch.no_grad():
        batch, single = model(x), model(x[1:2])
    assert batch.shape == (3, 40 * 8 * 16) and model.dim == 40 * 8 * 16
    torch.testing.assert_close(batch.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(batch[1:2], single, atol=1e-5, rtol=1e-5)


def test_baseline_preset_extracts_from_any_image_size():
    extractor = create_extractor("baseline", backend="torch")
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (480, 640, 3), np.uint8),
        rng.integers(0, 256, (32, 64, 3), np.uint8),
    ]
    descriptors = extractor.extract(images)
    assert (
        descriptors.shape == (2, registry.spec("baseline").dim) and descriptors.dtype == np.float32
    )
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, rtol=1e-5)
    # Same weights, same fingerprint: maps built with it stay valid across runs.
    assert create_extractor("baseline", backend="torch").fingerprint == extractor.fingerprint


def load_season(season: str) -> list[np.ndarray]:
    paths = sorted((NORDLAND / season).glob("images-*.png"))[::NORDLAND_STEP]
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


@needs_shared("data", "nordland_trimmed")
def test_baseline_recognises_nordland_winter_against_summer():
    extractor = create_extractor("baseline", backend="torch")
    summer, winter = extractor.extract(load_season("summer")), extractor.extract(
        load_season("winter")
    )
    frames = np.arange(len(winter))
    # Tolerance 0 on the subset: the right place among places 4 frames (40 source frames) apart.
    recall = recall_at_n(
        rank_database(winter, summer, 1), positives_by_frame(frames, frames, 0), (1,)
    )
    assert recall[1] >= MIN_RECALL_AT_1


def test_baseline_exports_to_onnx_with_the_same_descriptors(tmp_path):
    import onnxruntime as ort

    from vpr_ros.models.load import load_model
    from vpr_ros.inference.onnx_export import export_onnx

    model, spec, _ = load_model("baseline")
    session = ort.InferenceSession(str(export_onnx(model, spec, tmp_path / "baseline.onnx")))
    x = torch.randn(3, 3, *spec.input_size)
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, model(x).numpy(), atol=1e-5)


def test_grid_must_divide_the_feature_map():
    with pytest.raises(ValueError, match="grid"):
        GridCNNDescriptor(num_blocks=5, grid=(3, 16))(torch.zeros(1, 3, 64, 128))
