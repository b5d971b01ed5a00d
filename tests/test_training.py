"""The train source's fixed crop sample: true labels name the photo a crop came from, random labels do not."""

import numpy as np
import pytest

from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.training import TrainRun, sample_crops

IMAGES = [np.random.default_rng(index).integers(0, 256, (3, 24, 24), dtype=np.uint8) for index in range(4)]


def _run(labels: str) -> TrainRun:
    return TrainRun(zoo="z", arch="test_resnet", seed=3, labels=labels, dataset="photos",
                    preprocessing=Preprocessing(resize=24), steps=(0, 4), crop_size=8, n_samples=200)


def _source_of(crop: np.ndarray) -> int:
    """The one photo that holds this crop somewhere, found by comparing it with every window of every photo."""
    found = [index for index, image in enumerate(IMAGES)
             if (np.lib.stride_tricks.sliding_window_view(image, crop.shape[1:], axis=(1, 2))
                 .transpose(1, 2, 0, 3, 4) == crop).all(axis=(2, 3, 4)).any()]
    assert len(found) == 1
    return found[0]


def test_true_labels_name_the_photo_each_crop_came_from():
    crops, labels = sample_crops(IMAGES, _run("true"))
    assert crops.shape == (200, 3, 8, 8)
    assert [_source_of(crop) for crop in crops.numpy()] == labels.tolist()


def test_random_labels_keep_the_crops_but_not_their_sources():
    true_crops, true_labels = sample_crops(IMAGES, _run("true"))
    crops, labels = sample_crops(IMAGES, _run("random"))
    # The same crops, so that a true- and a random-label run of a seed differ in their labels only.
    np.testing.assert_array_equal(crops.numpy(), true_crops.numpy())
    # Independent of the source: about a quarter agree by chance (200 draws: 0.25 +- 0.03 s.d.).
    agreement = float((labels == true_labels).float().mean())
    assert 0.1 < agreement < 0.4
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3]


def test_an_unknown_label_regime_is_refused():
    with pytest.raises(ValueError, match="'shuffled'"):
        sample_crops(IMAGES, _run("shuffled"))
