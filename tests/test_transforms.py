import pytest
import torch

from brainseg.transforms import JointAugment


def test_marker_moves_with_mask():
    torch.manual_seed(0)
    augment = JointAugment(scale=0.05, angle=15, flip_prob=0.5)
    image = torch.zeros(3, 64, 64)
    mask = torch.zeros(1, 64, 64)
    image[:, 10:16, 40:46] = 1.0  # a marker away from the centre, so rotation and flips move it
    mask[:, 10:16, 40:46] = 1.0
    for _ in range(20):
        out_image, out_mask = augment(image, mask)
        assert out_image.shape == (3, 64, 64) and out_mask.shape == (1, 64, 64)
        assert set(out_mask.unique().tolist()) <= {0.0, 1.0}  # nearest neighbour keeps the mask binary
        bright = out_image[1] > 0.5
        rows, cols = torch.nonzero(out_mask[0], as_tuple=True)
        brows, bcols = torch.nonzero(bright, as_tuple=True)
        assert abs(rows.float().mean() - brows.float().mean()) < 1.0
        assert abs(cols.float().mean() - bcols.float().mean()) < 1.0


def test_flip_only_is_an_exact_mirror():
    augment = JointAugment(scale=0, angle=0, flip_prob=1.0)
    image, mask = torch.rand(3, 8, 8), (torch.rand(1, 8, 8) > 0.5).float()
    out_image, out_mask = augment(image, mask)
    assert torch.equal(out_image, image.flip(-1)) and torch.equal(out_mask, mask.flip(-1))


@pytest.mark.parametrize("kwargs", [dict(scale=1.5), dict(angle=-1), dict(flip_prob=2)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        JointAugment(**kwargs)
