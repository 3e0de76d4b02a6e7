"""Schema hygiene that the migration tooling relies on."""

from __future__ import annotations

import pytest
from tortoise.models import Model

from app import models

MODELS = [
    m
    for m in vars(models).values()
    if isinstance(m, type) and issubclass(m, Model) and m is not Model
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_descriptions_have_no_semicolons(model: type[Model]) -> None:
    # Field docs become SQL comments, and Tortoise splits migration SQL on ';'.
    for name, field in model._meta.fields_map.items():
        assert ";" not in (field.description or ""), f"{model.__name__}.{name}"
    assert ";" not in (model.__doc__ or "")
