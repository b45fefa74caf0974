"""Data sets, splits and forget sets, and batches kept on the device."""
from .arrays import DatasetArrays
from .device import Augment, augment, index_batches, to_device
from .forget import classwise_forget, longtail_counts, longtail_forget, longtail_weights, random_forget
from .options import DataOptions
from .registry import DATASETS, data_options, dataset_info, load_dataset, make_splits
from .splits import Splits

__all__ = [
    "DATASETS", "Augment", "DataOptions", "DatasetArrays", "Splits", "augment", "classwise_forget", "data_options",
    "dataset_info", "index_batches", "load_dataset", "longtail_counts", "longtail_forget", "longtail_weights",
    "make_splits", "random_forget", "to_device",
]
