"""
Match -> vpr_ros/msg/PlaceMatch, and any message -> the nested dict of its fields.

The message is filled from ``vpr_ros.place_match.place_match_fields``, the dict ``vpr-ros
localize`` writes as JSON: a field of one that the other lacks fails here, not downstream.
``message_fields`` turns a received PlaceMatch back into that dict.
"""

from __future__ import annotations

import array

import numpy as np

from vpr_ros.localizer import Match
from vpr_ros.msg import PlaceCandidate, PlaceMatch
from vpr_ros.place_match import place_match_fields


def place_match_msg(match: Match) -> PlaceMatch:
    return _fill(PlaceMatch(), place_match_fields(match))


def _fill(msg, fields: dict):
    for name, value in fields.items():
        if isinstance(value, dict):
            _fill(getattr(msg, name), value)
        elif name == "candidates":
            msg.candidates = [_fill(PlaceCandidate(), c) for c in value]
        else:
            setattr(msg, name, value)
    return msg


def message_fields(msg) -> dict:
    """Return a message's fields as nested dicts and lists, in the order of its definition."""
    return {name: _value(getattr(msg, name)) for name in msg.get_fields_and_field_types()}


def _value(value):
    if hasattr(value, "get_fields_and_field_types"):
        return message_fields(value)
    if isinstance(value, (list, tuple, array.array, np.ndarray)):
        return [_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
