"""The Hub stem tables: every family's stem and eval preprocessing as transformers and OpenCLIP define them.

The fixtures (tests/data/hf_families) were written by transformers 5.25.0 and open_clip_torch 3.3.0 themselves
(scripts/dev/build_hf_fixtures.py, which also compared the preprocessing with each image processor's output
pixel by pixel); these tests need neither installed.
"""

import csv

import numpy as np
import pytest

from firstlayer_zoo.hf_table import (LayoutError, eval_preprocessing, load_processor_table, load_stem_table,
                                     open_clip_preprocessing, plan_stem, processor_preprocessing, repository_layout)
from firstlayer_zoo.paths import HF_PROCESSOR_TABLE, HF_STEM_TABLE
from hf_families import check_fixture, header_of, load_fixtures

# The families issue 25 asks for, by the fixture that stands for each.
REQUIRED = {"ResNet": "resnet", "ConvNeXt": "convnext", "ViT": "vit", "DeiT": "deit", "BEiT": "beit", "Swin": "swin",
            "DINOv2": "dinov2", "CLIP": "clip", "SigLIP": "siglip", "RegNet": "regnet", "EfficientNet": "efficientnet",
            "MobileNet v1": "mobilenet_v1", "MobileNet v2": "mobilenet_v2", "MobileViT": "mobilevit",
            "LeViT": "levit", "PoolFormer": "poolformer", "OpenCLIP": "open_clip_vit"}


def test_every_required_family_and_every_table_row_has_a_fixture():
    fixtures = load_fixtures()
    assert set(REQUIRED.values()) <= set(fixtures)
    layouts = {fixture["model_type"] or {"open_clip_vit": "open_clip:vit", "open_clip_resnet": "open_clip:resnet",
                                         "open_clip_timm": "open_clip:timm"}[family]
               for family, fixture in fixtures.items()}
    # timm repositories and the two stand-alone SigLIP 2 vision towers are tested elsewhere or share a fixture
    assert set(load_stem_table()) - layouts == {"timm", "siglip2_vision_model"}


def test_every_row_names_where_it_comes_from():
    for path in (HF_STEM_TABLE, HF_PROCESSOR_TABLE):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                assert row["source"].startswith(("transformers 5.25.0 ", "open_clip_torch 3.3.0 ", "timm 1.0.31 ")), row


@pytest.mark.parametrize("family", sorted(load_fixtures()))
def test_the_table_finds_the_stem_the_model_runs_first_and_its_eval_size(family):
    print(check_fixture(load_fixtures()[family]))


@pytest.mark.parametrize("family", sorted(load_fixtures()))
def test_the_stem_suffix_matches_one_tensor_whatever_prefix_a_wrapper_adds(family):
    fixture = load_fixtures()[family]
    if fixture["library"] == "open_clip":
        pytest.skip("OpenCLIP state dicts are matched by their exact names")
    config = fixture["config"]
    tensors = [[f"model.{name}", shape] for name, shape in fixture["tensors"]]
    plan = plan_stem(repository_layout(config, None), config, header_of(tensors))
    assert plan.key == f"model.{fixture['stem']['key']}"


# Preprocessing: the legacy formats and the affine arithmetic ------------------------------------------------

def test_legacy_feature_extractor_configs_read_an_int_size_as_their_class_does():
    vit = processor_preprocessing({"feature_extractor_type": "ViTFeatureExtractor", "size": 384, "resample": 2,
                                   "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}).preprocessing
    assert (vit.resize, vit.resize_mode, vit.crop, vit.interpolation) == (384, "squash", None, "bilinear")
    # microsoft/resnet-50's file as transformers 4.1x wrote it
    resnet = processor_preprocessing({"crop_pct": 0.875, "do_normalize": True, "do_resize": True,
                                      "feature_extractor_type": "ConvNextFeatureExtractor",
                                      "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
                                      "resample": 3, "size": 224}).preprocessing
    assert (resnet.resize, resnet.resize_mode, resnet.crop, resnet.interpolation) == (256, "shorter", 224, "bicubic")
    assert resnet.mean == pytest.approx((0.485, 0.456, 0.406))
    clip = processor_preprocessing({"image_processor_type": "CLIPImageProcessorFast", "size": 336,
                                    "crop_size": 336}).preprocessing
    assert (clip.resize, clip.resize_mode, clip.crop) == (336, "shorter", 336)


def test_convnext_squashes_without_a_crop_from_384_up():
    prep = processor_preprocessing({"image_processor_type": "ConvNextImageProcessor",
                                    "size": {"shortest_edge": 384}}).preprocessing
    assert (prep.resize, prep.resize_mode, prep.crop) == (384, "squash", None)


@pytest.mark.parametrize("offset, top", [(False, False), (True, False), (False, True), (True, True)])
def test_rescale_offset_and_include_top_become_one_mean_and_std(offset, top):
    """EfficientNet: v = p * f - offset, (v - m) / s, then / s again under include_top."""
    mean, std, factor = [0.485, 0.456, 0.406], [0.47, 0.48, 0.49], 1 / 127.5
    prep = processor_preprocessing({"image_processor_type": "EfficientNetImageProcessor", "image_mean": mean,
                                    "image_std": std, "rescale_factor": factor, "rescale_offset": offset,
                                    "include_top": top, "size": {"height": 224, "width": 224}}).preprocessing
    pixels = np.array([0.0, 17.0, 128.0, 255.0])
    for channel in range(3):
        theirs = (pixels * factor - (1 if offset else 0) - mean[channel]) / std[channel]
        theirs = theirs / std[channel] if top else theirs
        ours = (pixels / 255 - prep.mean[channel]) / prep.std[channel]
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_mobilevit_is_unnormalised_and_flips_to_bgr():
    result = processor_preprocessing(load_fixtures()["mobilevit"]["preprocessor_config"])
    assert result.channel_order == "bgr"
    assert (result.preprocessing.mean, result.preprocessing.std) == ((0.0,) * 3, (1.0,) * 3)


def test_open_clip_squash_and_its_own_mean():
    prep = open_clip_preprocessing({"model_cfg": {"vision_cfg": {"image_size": 256}},
                                    "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3,
                                                       "resize_mode": "squash", "interpolation": "bilinear"}})
    assert (prep.preprocessing.resize, prep.preprocessing.resize_mode, prep.preprocessing.crop) == (256, "squash", None)
    assert prep.preprocessing.interpolation == "bilinear" and prep.preprocessing.mean == (0.5,) * 3


def test_timm_repositories_take_their_pretrained_cfg():
    config = {"architecture": "resnet50", "num_classes": 1000,
              "pretrained_cfg": {"input_size": [3, 224, 224], "crop_pct": 0.95, "interpolation": "bicubic",
                                 "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                 "first_conv": "conv1"}}
    assert repository_layout(config, None) == "timm"
    prep = eval_preprocessing("timm", config, None, None).preprocessing
    assert (prep.resize, prep.crop, prep.interpolation) == (235, 224, "bicubic")
    plan = plan_stem("timm", config, header_of([["conv1.weight", [64, 3, 7, 7]], ["layer1.0.conv1.weight",
                                                                                   [64, 64, 1, 1]]]))
    assert (plan.key, plan.stride, plan.kernel_size) == ("conv1.weight", 2, 7)


# What cannot be read becomes a reason naming the model type and what to set --------------------------------

def test_an_unknown_model_type_names_itself_and_stem_key():
    with pytest.raises(LayoutError, match=r"model type 'segformer' is not in hf_stems.csv; set stem_key"):
        plan_stem("segformer", {"model_type": "segformer"}, header_of([["encoder.weight", [8, 3, 7, 7]]]))


def test_stem_key_reads_a_repository_the_table_does_not_know():
    plan = plan_stem("segformer", {}, header_of([["encoder.patch_embeddings.0.proj.weight", [32, 3, 7, 7]]]),
                     stem_key="encoder.patch_embeddings.0.proj.weight")
    assert (plan.kernel_size, plan.module_type, plan.stride) == (7, "Conv2d", None)


def test_a_stem_over_other_than_three_channels_names_the_count_and_what_to_set():
    config = load_fixtures()["vit"]["config"]
    with pytest.raises(LayoutError, match=r"model type 'vit': its stem .* takes 1 input channels, not the 3 of RGB "
                                          r"images; set stem_key"):
        plan_stem("vit", config, header_of([["vit.embeddings.patch_embeddings.projection.weight", [8, 1, 16, 16]]]))


def test_a_missing_stem_and_two_candidates_say_set_stem_key():
    with pytest.raises(LayoutError, match=r"model type 'resnet': its weights hold no tensor named "
                                          r"'\*embedder.embedder.convolution.weight' .*; set stem_key for it"):
        plan_stem("resnet", {}, header_of([["classifier.1.weight", [10, 2048]]]))
    two = header_of([["a.embedder.embedder.convolution.weight", [8, 3, 7, 7]],
                     ["b.embedder.embedder.convolution.weight", [8, 3, 7, 7]]])
    with pytest.raises(LayoutError, match=r"2 tensors end in .*; set stem_key"):
        plan_stem("resnet", {}, two)


def test_a_quantized_stem_is_refused_by_its_dtype():
    header = header_of([["resnet.embedder.embedder.convolution.weight", [8, 3, 7, 7]]], dtype="F32")
    header["resnet.embedder.embedder.convolution.weight"]["dtype"] = "I8"
    with pytest.raises(LayoutError, match=r"stored as I8, not as floating-point"):
        plan_stem("resnet", {}, header)


@pytest.mark.parametrize("config, match", [
    ({"image_processor_type": "DetrImageProcessor"}, r"image processor DetrImageProcessor is not in"),
    ({"image_processor_type": "ViTImageProcessor", "size": {"height": 224, "width": 320}}, r"non-square size 224x320"),
    ({"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 800, "longest_edge": 1333}},
     r"longest_edge"),
    ({"image_processor_type": "ViTImageProcessor", "resample": 4}, r"resamples with 'box'"),
    ({}, r"names no image_processor_type"),
])
def test_a_preprocessor_config_the_table_cannot_reproduce_says_set_preprocessing(config, match):
    with pytest.raises(LayoutError, match=match + r".*set preprocessing for it"):
        processor_preprocessing(config)


def test_processor_table_defaults_are_complete():
    for name, row in load_processor_table().items():
        assert row["resize_rule"] in ("sizes", "convnext", "levit", "poolformer", "naflex"), name
        assert row["image_mean"] and row["image_std"] and row["resample"] in (0, 1, 2, 3), name
