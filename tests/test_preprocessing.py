"""Preprocessing gives timm's eval pixels exactly, and reads timm's pretrained_cfg."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from timm.data.transforms import MaybeToTensor

from firstlayer_zoo.dataset_sources import dataset_source
from firstlayer_zoo.preprocessing import Preprocessing


def _timm_pixels(transform, image: np.ndarray) -> np.ndarray:
    """Run timm's eval transform up to (not including) ToTensor/Normalize: the uint8 pixels it feeds the model."""
    pil = Image.fromarray(image).convert("RGB")
    for step in transform.transforms:
        if isinstance(step, MaybeToTensor):
            break
        pil = step(pil)
    return np.asarray(pil).transpose(2, 0, 1)


def _test_images():
    rng = np.random.default_rng(0)
    photos = list(dataset_source("photos", {"source": "skimage", "images": ["chelsea", "rocket"]}).images(None))
    # Odd margins and portrait/landscape shapes exercise rounding of the resize and of the crop offsets.
    noise = [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in [(301, 257, 3), (250, 411, 3)]]
    return photos + noise


@pytest.mark.parametrize("model_name,interpolation", [("vgg11", "bilinear"), ("resnet50", "bicubic")])
def test_apply_matches_timm_eval_transform_pixel_for_pixel(model_name, interpolation):
    with torch.device("meta"):
        model = timm.create_model(model_name)
    config = resolve_data_config({}, model=model)
    assert config["interpolation"] == interpolation
    transform = create_transform(**config)
    prep = Preprocessing.from_timm_cfg(config)
    assert prep == Preprocessing.from_timm_cfg(model.pretrained_cfg)
    for image in _test_images():
        ours = prep.apply(image)
        np.testing.assert_array_equal(ours, _timm_pixels(transform, image))
        assert ours.shape == (3, config["input_size"][1], config["input_size"][2])


def test_from_timm_cfg_reads_resize_crop_interpolation_and_normalisation():
    cfg = {"input_size": (3, 288, 288), "crop_pct": 0.95, "interpolation": "bicubic",
           "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    prep = Preprocessing.from_timm_cfg(cfg)
    assert (prep.resize, prep.crop, prep.interpolation) == (303, 288, "bicubic")
    assert prep.mean == (0.5, 0.5, 0.5) and prep.std == (0.25, 0.25, 0.25)
    assert Preprocessing.from_timm_cfg({"input_size": (3, 224, 224)}).resize == 256
    assert prep.resize_mode == "shorter"
    assert Preprocessing.from_timm_cfg({**cfg, "crop_mode": "squash"}).resize_mode == "squash"


def test_crop_without_resize_takes_torchvision_centre_offsets():
    image = np.arange(7 * 10, dtype=np.uint8).reshape(7, 10)
    crop = Preprocessing(crop=4, mean=(0.5,), std=(0.5,)).apply(image)
    # (7-4)/2 = 1.5 and (10-4)/2 = 3 round to 2 and 3, as torchvision's CenterCrop does.
    np.testing.assert_array_equal(crop[0], image[2:6, 3:7])


@pytest.mark.parametrize("tag", ["volo_d5_512.sail_in1k", "volo_d4_448.sail_in1k"])
def test_a_crop_larger_than_the_resize_is_zero_padded_as_timms_eval_transform_does(tag):
    """crop_pct > 1 resizes below the crop (512 / 1.15 -> 445): torchvision's CenterCrop pads with zeros."""
    from firstlayer_zoo.timm_table import eval_preprocessing, load_timm_table

    config = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(tag).to_dict())
    assert config["crop_pct"] > 1
    prep = Preprocessing.from_timm_cfg(config)
    assert prep == eval_preprocessing(load_timm_table()[tag]) and prep.resize < prep.crop
    transform = create_transform(**config, is_training=False)
    rng = np.random.default_rng(1)
    # Square, landscape, portrait, and odd margins on either side of the resize.
    images = _test_images() + [rng.integers(1, 256, size=shape, dtype=np.uint8) for shape in [(64, 64, 3), (97, 40, 3)]]
    for image in images:
        ours = prep.apply(image)
        np.testing.assert_array_equal(ours, _timm_pixels(transform, image))
        assert ours.shape == (3, prep.crop, prep.crop)
        assert (ours[:, 0] == 0).all() or (ours[:, :, 0] == 0).all()  # a zero border along the short side


def test_an_image_smaller_than_a_crop_without_resize_is_still_refused():
    with pytest.raises(ValueError, match="image of 6x5 is smaller than the 8 crop"):
        Preprocessing(crop=8).apply(np.zeros((5, 6, 3), dtype=np.uint8))
