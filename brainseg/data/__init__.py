"""The data pipeline, in the order data flows through it:

- :mod:`~brainseg.data.kaggle`: finding and reading the Kaggle ``kaggle_3m`` folders and TIFFs
  (:class:`CaseFiles`, :class:`DatasetError`);
- :mod:`~brainseg.data.preprocess`: the reference preprocessing of one case and its inverse
  (docs/protocol.md, section 2);
- :mod:`~brainseg.data.volume`: :class:`CaseVolume`, one preprocessed case, what every later step takes;
- :mod:`~brainseg.data.cache`: :func:`load_volumes`, preprocessed cases cached on disk;
- :mod:`~brainseg.data.splits`: patient-level splits (reference, k-fold, inner) and
  :func:`split_cases`, the cases of a config's split;
- :mod:`~brainseg.data.dataset`: slices as a torch ``Dataset`` and the training samplers;
- :mod:`~brainseg.data.transforms`: joint image + mask augmentation, per slice or per batch.

The names below are the entry points of each step; everything else is imported from its module.
"""

from .cache import load_volumes
from .dataset import SliceDataset, make_sampler
from .kaggle import CaseFiles, DatasetError, discover_cases, read_case, resolve_data_dir
from .preprocess import Geometry, preprocess_case, restore_geometry
from .splits import inner_split, kfold_split, reference_split, split_cases
from .transforms import BatchAugment, JointAugment
from .volume import CaseVolume

__all__ = ["BatchAugment", "CaseFiles", "CaseVolume", "DatasetError", "Geometry", "JointAugment", "SliceDataset",
           "discover_cases", "inner_split", "kfold_split", "load_volumes", "make_sampler", "preprocess_case",
           "read_case", "reference_split", "resolve_data_dir", "restore_geometry", "split_cases"]
