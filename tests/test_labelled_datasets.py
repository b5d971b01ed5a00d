"""Class labels of the labelled dataset sources, read whole for training by load_labelled."""

import numpy as np
import pytest
from PIL import Image

from firstlayer_zoo.dataset_sources import dataset_source, prepare_dataset
from firstlayer_zoo.labelled import load_labelled
from firstlayer_zoo.preprocessing import Preprocessing
from test_datasets import TORCHVISION_CASES, _md5, served  # noqa: F401  (served is a fixture)

# The classes the archives of test_datasets hold, in image order, as torchvision numbers them:
# SVHN's digit 10 is class 0, STL-10's classes count from 1 on disk.
LABELS = {"cifar10": [0, 1] * 5, "cifar100": [0, 1], "svhn": [1, 2, 3, 0], "stl10": [0, 1, 2],
          "imagenette": [0, 0, 1]}


@pytest.mark.parametrize("source", sorted(TORCHVISION_CASES))
def test_torchvision_sources_give_each_image_its_class(served, tmp_path, source):  # noqa: F811
    folder, base_url = served
    build, options = TORCHVISION_CASES[source]
    archive, expected = build(folder)
    config = {"source": source, **options, "url": f"{base_url}/{archive.name}", "md5": _md5(archive)}
    prepare_dataset("data", config, tmp_path / "root", tmp_path / "manifest.json")
    images, labels = load_labelled(dataset_source("data", config), tmp_path / "root", None, Preprocessing(resize=32, crop=32))
    assert labels.tolist() == LABELS[source]
    assert images.shape == (len(expected), 3, 32, 32) and images.dtype == np.uint8


def _write(path, colour, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_a_folder_dataset_is_labelled_by_its_class_subfolders_in_sorted_order(tmp_path):
    for name, colour in [("zebra/a.png", "white"), ("ant/b.png", "red"), ("ant/sub/c.png", "red"),
                         ("moth/d.png", "blue")]:
        _write(tmp_path / name, colour)
    images, labels = load_labelled(dataset_source("f", {"source": "folder", "path": str(tmp_path)}), tmp_path, None, Preprocessing())
    # Files in sorted path order: ant/b, ant/sub/c, moth/d, zebra/a; classes ant=0, moth=1, zebra=2.
    assert labels.tolist() == [0, 0, 1, 2]
    assert images[:, 0, 0, 0].tolist() == [255, 255, 0, 255] and images[:, 2, 0, 0].tolist() == [0, 0, 255, 255]


def test_images_outside_a_class_folder_and_unlabelled_sources_are_refused_with_the_way_out(tmp_path):
    _write(tmp_path / "ant" / "b.png", "red")
    _write(tmp_path / "loose.png", "red")
    with pytest.raises(ValueError, match="loose.png is not in a class subfolder"):
        load_labelled(dataset_source("f", {"source": "folder", "path": str(tmp_path)}), tmp_path, None, Preprocessing())
    with pytest.raises(ValueError, match="source skimage has no class labels.*task: photo_crops"):
        load_labelled(dataset_source("p", {"source": "skimage", "images": ["coffee"]}), tmp_path, None, Preprocessing())


def test_images_of_several_sizes_are_refused_naming_the_preprocessing(tmp_path):
    _write(tmp_path / "ant" / "b.png", "red", (12, 10))
    _write(tmp_path / "moth" / "c.png", "red", (20, 10))
    with pytest.raises(ValueError, match="2 sizes after preprocessing.*resize and crop"):
        load_labelled(dataset_source("f", {"source": "folder", "path": str(tmp_path)}), tmp_path, None, Preprocessing())
    images, _ = load_labelled(dataset_source("f", {"source": "folder", "path": str(tmp_path)}), tmp_path, None,
                              Preprocessing(resize=8, crop=8))
    assert images.shape == (2, 3, 8, 8)
    assert dataset_source("f", {"source": "folder", "path": str(tmp_path)}).label(tmp_path, 1) == 1
