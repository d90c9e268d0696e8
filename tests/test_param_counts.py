"""Exact parameter counts against the official numbers (1000 classes, 224², patch 16)."""

import pytest

from learngene_jax.models import create_model
from learngene_jax.models.vit import abstract_params, count_params

CASES = [
    ("tleg_aux_ti", {}, 1_268_392), ("tleg_aux_s", {}, 4_305_256), ("tleg_aux_b", {}, 15_687_400),
    ("sws_aux_s", {}, 9_628_648), ("sws_aux_b", {}, 36_951_016),
    ("vit_s", {"depth": 12}, 22_049_896), ("vit_s", {"depth": 6}, 11_403_112), ("vit_s", {"depth": 3}, 6_079_720),
    ("deit_ti", {}, 5_717_416), ("deit_s", {}, 22_050_664),
]


@pytest.mark.parametrize("name,kwargs,expected", CASES)
def test_param_count(name, kwargs, expected):
    assert count_params(abstract_params(create_model(name, **kwargs))) == expected


def test_tleg_gene_closed_form():
    for size, d in (("ti", 192), ("s", 384), ("b", 768)):
        closed = 2 * (12 * d * d + 13 * d) + 769 * d + 196 * d + 2 * d + 1000 * d + 1000
        assert count_params(abstract_params(create_model(f"tleg_aux_{size}"))) == closed


def test_sws_aux_s_uses_12_heads_of_32():
    model = create_model("sws_aux_s")
    assert (model.num_heads, model.width // model.num_heads, model.stage_sizes) == (12, 32, (3, 3, 4, 3, 3))
