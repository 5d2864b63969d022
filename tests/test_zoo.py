from __future__ import annotations

import torch

from invgray_cli.engines.registry import (
    combined_id,
    default_model_id,
    entropy_tables,
    known_model_ids,
    load_model,
    model_spec,
    weights_id,
)
from invgray_cli.model.network import InvGrayNet


def test_every_registered_model_loads_and_matches_its_id() -> None:
    for model_id in known_model_ids():
        model = load_model(model_id)
        assert isinstance(model, InvGrayNet)
        spec = model_spec(model_id)
        if spec.encodes:  # a retired model's decoder comes from its graph, checked by SHA-256 there
            assert weights_id(model.state_dict()) == spec.network_id
        else:
            assert model.decode_only and spec.weights_file is None and "encoder" not in spec.onnx
        if spec.format_version == 2:  # the id covers the network and the entropy tables
            assert combined_id(spec.network_id, entropy_tables(model_id)) == model_id
        assert not model.training


def test_default_is_registered() -> None:
    assert default_model_id() in known_model_ids()
    assert model_spec() is model_spec(default_model_id())  # one cached spec per model


def test_id_changes_with_any_weight() -> None:
    model = InvGrayNet()
    before = weights_id(model.state_dict())
    with torch.no_grad():
        model.decoder.head.bias[0] += 1e-3
    assert weights_id(model.state_dict()) != before
