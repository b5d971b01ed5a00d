"""The train source's fixed crop sample: true labels name the photo a crop came from, random labels do not."""

import numpy as np
import pytest

from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.train_runs import TrainRun
from firstlayer_zoo.training import sample_crops

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


def test_permuted_labels_shuffle_the_true_ones_keeping_every_class_count():
    true_crops, true_labels = sample_crops(IMAGES, _run("true"))
    crops, labels = sample_crops(IMAGES, _run("permuted"))
    np.testing.assert_array_equal(crops.numpy(), true_crops.numpy())
    assert np.bincount(labels.numpy(), minlength=4).tolist() == np.bincount(true_labels.numpy(), minlength=4).tolist()
    assert 0.1 < float((labels == true_labels).float().mean()) < 0.45


def test_labelled_data_permutes_training_labels_only_and_counts_classes_from_both_splits():
    from firstlayer_zoo.training import labelled_data

    labels = np.repeat(np.arange(5), [30, 10, 5, 3, 2])
    images = np.zeros((50, 3, 8, 8), dtype=np.uint8)
    test = (np.zeros((7, 3, 8, 8), dtype=np.uint8), np.array([0, 1, 2, 3, 4, 5, 6]))
    data = labelled_data(_run("permuted"), images, labels, test)
    assert data.n_classes == 7
    assert np.bincount(data.labels.numpy()).tolist() == [30, 10, 5, 3, 2]
    assert not np.array_equal(data.labels.numpy(), labels)
    assert data.test_labels.tolist() == list(range(7))
    uniform = labelled_data(_run("random"), images, labels, test).labels.numpy()
    assert set(uniform.tolist()) <= set(range(7)) and np.bincount(uniform).tolist() != [30, 10, 5, 3, 2]
