"""Datasets (Fashion-MNIST IDX, tfds, synthetic), seeded batching and augmentation."""
from jaxrobust.data._datasets import (DEFAULT_FASHION_MNIST_DIR, FASHION_MNIST_DIR_ENV, Dataset,
                                      fashion_mnist_dir, load_dataset, load_fashion_mnist,
                                      load_synthetic, load_tfds)
from jaxrobust.data._idx import IdxError, read_idx, read_image_label_pair, write_idx
from jaxrobust.data._pipeline import (augment, epoch_batches, epoch_permutation, per_example_keys,
                                      to_float)
