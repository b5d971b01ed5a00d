"""The batch loader: DataLoader workers on the CPU keep the order and PIL's pixels."""

import numpy as np
import torch
from PIL import Image

from firstlayer_zoo.dataset_sources import dataset_source
from firstlayer_zoo.loaders import cpu_batches
from firstlayer_zoo.preprocessing import Preprocessing


def _jpegs(folder, count):
    for i in range(count):
        size = (40 + i % 3, 50)  # mixed shapes before the crop
        image = np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{i:02d}.jpg", quality=95)
    return sorted(folder.glob("*.jpg"))


def test_cpu_batches_with_workers_keep_order_and_pixels(tmp_path):
    _jpegs(tmp_path, 11)
    source = dataset_source("f", {"source": "folder", "path": str(tmp_path)})
    prep = Preprocessing(resize=36, crop=32)
    batches = list(cpu_batches(source, None, prep, workers=2, batch_size=4))
    expected = np.stack([prep.apply(image) for image in source.images(None)])
    np.testing.assert_array_equal(torch.cat(batches).numpy(), expected)
