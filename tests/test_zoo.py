from __future__ import annotations

import torch

from invgray_cli.network import InvGrayNet
from invgray_cli.zoo import default_model_id, known_model_ids, load_model, registry, weights_id


def test_every_registered_model_loads_and_matches_its_id() -> None:
    for model_id in known_model_ids():
        model = load_model(model_id)
        assert isinstance(model, InvGrayNet)
        assert weights_id(model.state_dict()) == model_id
        assert not model.training


def test_default_is_registered() -> None:
    assert default_model_id() in registry()["models"]


def test_id_changes_with_any_weight() -> None:
    model = InvGrayNet()
    before = weights_id(model.state_dict())
    with torch.no_grad():
        model.decoder.head.bias[0] += 1e-3
    assert weights_id(model.state_dict()) != before
