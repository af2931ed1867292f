import numpy as np

from brainseg.data.preprocess import Geometry
from brainseg.data.volume import CaseVolume


def test_a_case_volume_counts_its_slices():
    geometry = Geometry((1, 4), (0, 8), (0, 8), (0, 0), (0, 0), 8)
    image = np.zeros((3, 3, 8, 8), np.float16)
    masks = np.zeros((3, 8, 8), np.uint8), np.zeros((3, 256, 256), np.uint8)
    volume = CaseVolume("TCGA_XX_0001_20000101", image, *masks, geometry)
    assert volume.num_slices == 3 and volume.case_id == "TCGA_XX_0001_20000101" and volume.geometry == geometry
