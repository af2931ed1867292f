import pytest

from brainseg.registry import build


class Box:
    def __init__(self, side: int = 1, colour: str = "red"):
        self.side, self.colour = side, colour


def test_build_passes_the_arguments():
    box = build({"box": Box}, "box", "shape", {"side": 3})
    assert (type(box), box.side, box.colour) == (Box, 3, "red")


def test_unknown_names_and_arguments_list_what_is_available():
    with pytest.raises(ValueError, match=r"^unknown shape 'ball'; available shapes: box, cube$"):
        build({"box": Box, "cube": Box}, "ball", "shape", {})
    with pytest.raises(ValueError, match=r"^loss 'box' has no argument\(s\) \['size'\]; it accepts: side, colour$"):
        build({"box": Box}, "box", "loss", {"size": 2})
    with pytest.raises(ValueError, match=r"available losses: box"):  # 'loss' + 'es'
        build({"box": Box}, "dice", "loss", {})


def test_defaults_lists_the_keyword_arguments_that_have_one():
    from brainseg.models import MODELS
    from brainseg.registry import defaults

    unet = defaults(MODELS, "unet")
    assert (unet["norm"], unet["features"], unet["in_channels"]) == ("batch", 32, 3)
    assert defaults(MODELS, "no such model") == {}
