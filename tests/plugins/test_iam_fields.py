"""The plugin identity in sgformerIamFields.h matches pipeline/plugin_spec.py (defined once on each side)."""
from __future__ import annotations

import re
from pathlib import Path

from pipeline.iam import spec as plugin_spec

HEADER = Path(__file__).resolve().parents[2] / "plugins" / "sgformer_iam" / "sgformerIamFields.h"


def _header_strings() -> dict[str, str]:
    text = HEADER.read_text()
    return dict(re.findall(r'constexpr\s+char\s+(k[A-Z_]+)\[\]\s*=\s*"([^"]*)"\s*;', text))


def _header_ints() -> dict[str, int]:
    text = HEADER.read_text()
    return {k: int(v) for k, v in re.findall(r"constexpr\s+int32_t\s+(k[A-Z_]+)\s*=\s*(\d+)\s*;", text)}


def test_identity_matches_plugin_spec() -> None:
    strings = _header_strings()
    assert strings["kPLUGIN_NAME"] == plugin_spec.PLUGIN_NAME
    assert strings["kPLUGIN_VERSION"] == plugin_spec.PLUGIN_VERSION
    assert strings["kPLUGIN_NAMESPACE"] == plugin_spec.PLUGIN_NAMESPACE


def test_field_names_and_order_match_plugin_spec() -> None:
    strings = _header_strings()
    fields = [v for k, v in strings.items() if k.startswith("kFIELD_")]  # declaration order = serialization order
    assert tuple(fields) == plugin_spec.ATTRIBUTES, f"{HEADER.name} fields {fields} != {plugin_spec.ATTRIBUTES}"
    assert _header_ints()["kNB_FIELDS"] == len(plugin_spec.ATTRIBUTES)


def test_tensor_slots_match_plugin_spec() -> None:
    ints = _header_ints()
    assert ints["kNB_INPUTS"] == len(plugin_spec.INPUTS)
    assert ints["kNB_OUTPUTS"] == len(plugin_spec.OUTPUTS)
    for i, role in enumerate(plugin_spec.INPUTS):
        key = {"tokens": "kTOKENS_IDX", "importance": "kIMPORTANCE_IDX", "agg_weight": "kWEIGHT_IDX",
               "agg_bias": "kBIAS_IDX"}[role]
        assert ints[key] == i, f"input {role} is slot {ints[key]} in the header, {i} in plugin_spec"
    for i, role in enumerate(plugin_spec.OUTPUTS):
        key = {"seq_row": "kSEQ_ROW_IDX", "seq_col": "kSEQ_COL_IDX"}[role]
        assert ints[key] == i
