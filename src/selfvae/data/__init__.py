"""Data loading with the paper protocols.

``load_dataset(name, root, split)`` returns an :class:`ImageDataset` of uint8 ``[C, H, W]`` images for
one of the data sets registered in ``DATASETS``; ``dataset_shape`` gives (C, H, W) without loading.
``download`` fetches the official MNIST / Fashion-MNIST / CIFAR-10 files on request.
"""

from selfvae.data.datasets import (
    DATASETS,
    DatasetSpec,
    ImageDataset,
    augment_image,
    augment_shift,
    batches_of,
    dataset_shape,
    infer_dataset,
    load_dataset,
    load_split,
    load_test_split,
    own_shape,
    split_indices,
)
from selfvae.data.download import download, fetch_url

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ImageDataset",
    "augment_image",
    "augment_shift",
    "batches_of",
    "dataset_shape",
    "infer_dataset",
    "download",
    "fetch_url",
    "load_dataset",
    "load_split",
    "load_test_split",
    "own_shape",
    "split_indices",
]
