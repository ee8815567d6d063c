"""The JSON lines of `vpr-ros localize` and the PlaceMatch message carry the same fields."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import REPO
from rosutil import build_test_map, perturb, place_images
from vpr_ros.inference.factory import create_extractor
from vpr_ros.localizer import Localizer, LocalizerConfig, StageLatency, TemporalState
from vpr_ros.maps.mapdir import load_map
from vpr_ros.place_match import (
    LATENCY_STAGES, TEMPORAL_FIELDS, place_match_fields, place_match_json,
)

# the fields of the message types PlaceMatch uses from other packages
FOREIGN = {
    "std_msgs/Header": ["stamp", "frame_id"],
    "builtin_interfaces/Time": ["sec", "nanosec"],
    "geometry_msgs/Pose": ["position", "orientation"],
}


def _msg_fields(type_name: str) -> list[tuple[str, str]]:
    """(type, name) of each field of msg/<type_name>.msg, in order."""
    fields = []
    for line in (REPO / "msg" / f"{type_name}.msg").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            field_type, name = line.split()
            fields.append((field_type, name))
    return fields


def _check(value, field_type: str, where: str) -> None:
    """Fail unless ``value`` has exactly the fields of ``field_type``, recursively."""
    base = field_type.removesuffix("[]")
    if field_type.endswith("[]"):
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            _check(item, base, f"{where}[{i}]")
    elif base in FOREIGN:
        assert list(value) == FOREIGN[base], where
        if base == "geometry_msgs/Pose":
            assert list(value["position"]) == list("xyz"), where
            assert list(value["orientation"]) == list("xyzw"), where
    elif "/" not in base and base[0].isupper():  # a message of this package
        fields = _msg_fields(base)
        assert list(value) == [name for _, name in fields], where
        for sub_type, name in fields:
            _check(value[name], sub_type, f"{where}.{name}")
    else:
        kind = {"string": str, "bool": bool}.get(base, int if "int" in base else float)
        assert type(value) is kind, f"{where}: {base} holds {value!r}"


@pytest.fixture(scope="module")
def matches(tmp_path_factory):
    """Localize with the real pipeline: three frames per temporal filter."""
    images = place_images(6, seed=5)
    vpr_map = load_map(build_test_map(tmp_path_factory.mktemp("m") / "map", images))
    extractor = create_extractor("baseline", None, "torch", "fp32", None)
    out = []
    for temporal in ("hmm", "seqslam", "none"):
        localizer = Localizer(vpr_map, extractor, LocalizerConfig(temporal=temporal))
        for i in (1, 2, 3):
            out.append(localizer.localize(perturb(images[i], i), 10**9 * i + 7, "cam"))
    return out


def test_json_has_the_fields_of_the_message_nested_the_same_way(matches):
    for match in matches:
        _check(place_match_fields(match), "PlaceMatch", "PlaceMatch")


def test_json_line_is_strict_json_with_null_for_what_is_unknown(matches):
    for match in matches:
        line = place_match_json(match)
        assert "\n" not in line and "NaN" not in line
        doc = json.loads(line)
        assert doc["header"] == {"stamp": {"sec": match.stamp_ns // 10**9, "nanosec": 7},
                                 "frame_id": "cam"}
        assert doc["candidates"][0]["place_id"] == match.best.place_id
        assert doc["candidates"][0]["pose"]["position"]["x"] == match.best.position[0]
        assert doc["latency_ms"]["total"] == match.latency_ms.total
        assert doc["latency_ms"]["decode"] is None  # the node's stage, not this pipeline's
        filter_name = doc["temporal"]["filter"]
        assert filter_name == (match.temporal.filter if match.temporal else "")
        assert (doc["temporal"]["agreement"] is None) == (filter_name != "hmm")
        assert doc["temporal"]["applied"] == (
            filter_name == "seqslam" or bool(match.temporal and match.temporal.applied))


def test_the_typed_stages_are_the_messages_fields_in_order():
    assert [f.name for f in dataclasses.fields(StageLatency)] == list(LATENCY_STAGES)
    assert [f.name for f in dataclasses.fields(TemporalState)] == list(TEMPORAL_FIELDS)
