"""The pipeline package: each step's entry points, re-exported from the module that holds them."""

import brainseg.data as data
from brainseg.data import cache, dataset, kaggle, preprocess, splits, transforms, volume


def test_the_entry_points_are_the_modules_own():
    homes = {kaggle: ["CaseFiles", "DatasetError", "discover_cases", "read_case", "resolve_data_dir"],
             preprocess: ["Geometry", "preprocess_case", "restore_geometry"], volume: ["CaseVolume"],
             cache: ["load_volumes"], splits: ["inner_split", "kfold_split", "reference_split", "split_cases"],
             dataset: ["SliceDataset", "make_sampler"], transforms: ["BatchAugment", "JointAugment"]}
    assert sorted(data.__all__) == sorted(name for names in homes.values() for name in names)
    for module, names in homes.items():
        for name in names:
            assert getattr(data, name) is getattr(module, name), name
