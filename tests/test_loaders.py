"""The batch loaders: DataLoader workers on the CPU, and the GPU JPEG path's reading and batching."""

import numpy as np
import torch
import torchvision.io
from PIL import Image
from torchvision.transforms.v2.functional import center_crop

from firstlayer_zoo.datasets import dataset_source
from firstlayer_zoo.loaders import cpu_batches, gpu_batches
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


def test_gpu_path_reads_every_jpeg_in_order_in_bounded_batches(tmp_path, monkeypatch):
    # nvJPEG needs a GPU; the same call on the CPU checks the reading, ordering and batching around it.
    decode = torchvision.io.decode_jpeg
    monkeypatch.setattr(torchvision.io, "decode_jpeg", lambda data, mode, device: decode(data, mode=mode))
    paths = _jpegs(tmp_path, 23)
    prep = Preprocessing(crop=32)
    batches = list(gpu_batches(paths, prep, batch_size=5, device="cpu", readers=2))
    assert [b.shape[0] for b in batches] == [5, 5, 5, 5, 3]
    expected = torch.stack([center_crop(decode(torchvision.io.read_file(str(p))), 32) for p in paths])
    np.testing.assert_array_equal(torch.cat(batches).numpy(), expected.numpy())
