"""Old module paths (before issue 15 regrouped the package) still import, warn, and give the new modules."""

from __future__ import annotations

import importlib
import sys

import pytest
from fastclipseg._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_warns_and_is_the_new_module(old, monkeypatch):
    for name in [n for n in sys.modules if n == old or n.startswith(old + ".")]:
        monkeypatch.delitem(sys.modules, name)  # import it afresh, so that the warning is given
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED[old]}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])


def test_names_from_an_old_path_are_the_new_objects():
    from fastclipseg.prompts.image_prompts import ImagePrompt

    with pytest.warns(DeprecationWarning, match="fastclipseg.image_prompts moved to fastclipseg.prompts.image_prompts"):
        sys.modules.pop("fastclipseg.image_prompts", None)
        from fastclipseg.image_prompts import ImagePrompt as old

    assert old is ImagePrompt


def test_the_old_encode_image_prompts_warns_and_gives_the_core_s_embeddings(tiny_segmenter):
    import numpy as np
    from fastclipseg.prompts.image_prompts import encode_image_prompts

    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.warns(DeprecationWarning, match="call segmenter.encode_image_prompts"):
        old = encode_image_prompts(tiny_segmenter, [image])
    assert (old == tiny_segmenter.encode_image_prompts([image])).all()


def test_an_unknown_module_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("fastclipseg.no_such_module")


@pytest.mark.parametrize(("name", "new"), [("ImagePromptEncoder", "fastclipseg.model.image_prompt_encoder"),
                                           ("check_conditional_embeddings", "fastclipseg.prompts.embeddings")])
def test_names_moved_out_of_image_prompts_warn_and_are_the_new_objects(name, new):
    import fastclipseg.prompts.image_prompts as image_prompts

    with pytest.warns(DeprecationWarning, match=f"{name} moved to {new}"):
        old = getattr(image_prompts, name)
    assert old is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        image_prompts.nothing_here  # noqa: B018
