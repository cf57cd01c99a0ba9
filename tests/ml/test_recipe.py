import subprocess
import sys

import pytest

from app.ml.backbones import BACKBONES
from app.ml.recipe import (
    BACKBONE_NAMES,
    FROZEN_EPOCHS,
    RECIPE_FIELDS,
    Recipe,
    checked,
)


def test_recipe_validation():
    assert Recipe.from_dict(Recipe().to_dict()) == Recipe()
    with pytest.raises(ValueError, match="colour"):
        Recipe.from_dict({"colour": "red", "epochs": 1})
    for bad in ({"epochs": 51}, {"lr": 0}, {"valid_pct": 0.6}, {"epochs": True},
                {"batch_size": "32"}, {"lr": float("nan")}, {"backbone": "resnet9000"},
                {"head_epochs": 0}, {"image_size": 1024}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Recipe.from_dict(bad)
    with pytest.raises(ValueError, match="head_epochs"):
        Recipe(head_epochs=401)


def test_every_default_is_within_its_own_limits():
    for spec in RECIPE_FIELDS.values():
        assert spec.problem(spec.default) is None, spec.name
        assert spec.problem(None) is not None, spec.name


def test_checked_keeps_only_what_was_given():
    assert checked({"epochs": 2, "lr": None}) == {"epochs": 2}
    assert checked({}) == {}


def test_frozen_epochs_is_the_old_name_for_rounds_of_eight_head_epochs():
    assert checked({"frozen_epochs": 1}) == {"head_epochs": 8}
    assert Recipe.from_dict({"frozen_epochs": 3, "epochs": 1}) == Recipe(head_epochs=24, epochs=1)
    assert Recipe().head_epochs == 8  # what frozen_epochs=1, the old default, meant
    assert FROZEN_EPOCHS.bounds == {"ge": 1, "le": 50}
    for bad in ({"frozen_epochs": 0}, {"frozen_epochs": 51}, {"frozen_epochs": 1.5},
                {"frozen_epochs": 1, "head_epochs": 8}):
        with pytest.raises(ValueError, match="frozen_epochs"):
            checked(bad)


def test_form_attributes_come_from_the_limits():
    assert RECIPE_FIELDS["epochs"].input_attrs() == {"min": 0, "max": 50, "step": "1"}
    assert RECIPE_FIELDS["lr"].input_attrs() == {"min": 0, "max": 1, "step": "any"}
    assert RECIPE_FIELDS["valid_pct"].input_attrs() == {"min": 0.05, "max": 0.5, "step": "0.05"}
    assert RECIPE_FIELDS["batch_size"].parse("16.0") == 16
    assert RECIPE_FIELDS["valid_pct"].parse("0.25") == 0.25
    with pytest.raises(ValueError):
        RECIPE_FIELDS["seed"].parse("lots")


def test_backbone_choices_are_the_registry():
    assert set(BACKBONE_NAMES) == set(BACKBONES)


def test_recipe_imports_without_torch():
    code = ("import sys, app.ml.recipe, app.ml.split, app.ml.progress; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
