"""Write tests/data/hf_families/*.json from transformers and OpenCLIP themselves, and check the committed stem table.

The tests imitate Hub repositories of every family in workflow/resources/hf_stems.csv without installing
transformers (a large dependency with native tokenizers): this script, run once where transformers and
open_clip_torch are installed, writes for each family what such a repository holds and what the model does:

- `config.json` (or `open_clip_config.json`) exactly as `save_pretrained` writes it, for the family's default
  (full-size) configuration and for a tiny one;
- `preprocessor_config.json` as the family's image processor writes it, with the values of the real repository
  named in FAMILIES;
- the (name, shape) of every tensor of the full-size model (built on the meta device) and of the tiny one;
- the stem found by running the tiny model: the first Conv2d or Linear its forward pass calls, with its
  stride and, for a Linear patch embedding, the patch flattening order measured against a conv;
- the eval preprocessing measured by running the image processor on images of several shapes.

Then it checks the committed table against every fixture (stem key, kind, stride, layout, preprocessing)
and prints one line per family. Rerun it after upgrading transformers or open_clip_torch:

    python scripts/dev/build_hf_fixtures.py [--out tests/data/hf_families] [--check-only]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

OUT = ROOT / "tests" / "data" / "hf_families"

VIT_TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
            "image_size": 32}
TEXT_TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
             "vocab_size": 64, "max_position_embeddings": 16}

# family: (model_type, model class, real repository imitated, tiny config kwargs, preprocessor class,
#          preprocessor values of that repository (as its preprocessor_config.json gives them))
FAMILIES = {
    "resnet": ("resnet", "ResNetForImageClassification", "microsoft/resnet-50",
               {"embedding_size": 8, "hidden_sizes": [8, 8, 8, 8], "depths": [1, 1, 1, 1]},
               "ConvNextImageProcessor", {"crop_pct": 0.875, "size": {"shortest_edge": 224},
                                          "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}),
    "convnext": ("convnext", "ConvNextForImageClassification", "facebook/convnext-tiny-224",
                 {"hidden_sizes": [8, 8, 8, 8], "depths": [1, 1, 1, 1]},
                 "ConvNextImageProcessor", {"crop_pct": 0.875, "size": {"shortest_edge": 224},
                                            "image_mean": [0.485, 0.456, 0.406],
                                            "image_std": [0.229, 0.224, 0.225]}),
    "convnextv2": ("convnextv2", "ConvNextV2ForImageClassification", "facebook/convnextv2-tiny-1k-224",
                   {"hidden_sizes": [8, 8, 8, 8], "depths": [1, 1, 1, 1]},
                   "ConvNextImageProcessor", {"crop_pct": 0.875, "size": {"shortest_edge": 224},
                                              "image_mean": [0.485, 0.456, 0.406],
                                              "image_std": [0.229, 0.224, 0.225]}),
    "vit": ("vit", "ViTForImageClassification", "google/vit-base-patch16-224", dict(VIT_TINY, patch_size=16),
            "ViTImageProcessor", {"size": {"height": 224, "width": 224}}),
    "deit": ("deit", "DeiTForImageClassificationWithTeacher", "facebook/deit-base-distilled-patch16-224",
             dict(VIT_TINY, patch_size=16), "DeiTImageProcessor",
             {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}),
    "beit": ("beit", "BeitForImageClassification", "microsoft/beit-base-patch16-224",
             dict(VIT_TINY, patch_size=16), "BeitImageProcessor",
             {"size": {"height": 224, "width": 224}, "do_center_crop": False}),
    "data2vec-vision": ("data2vec-vision", "Data2VecVisionForImageClassification",
                        "facebook/data2vec-vision-base-ft1k", dict(VIT_TINY, patch_size=16), "BeitImageProcessor",
                        {"size": {"height": 224, "width": 224}, "do_center_crop": False}),
    "swin": ("swin", "SwinForImageClassification", "microsoft/swin-tiny-patch4-window7-224",
             {"embed_dim": 8, "depths": [1, 1], "num_heads": [1, 1], "image_size": 32, "patch_size": 4,
              "window_size": 2},
             "ViTImageProcessor", {"size": {"height": 224, "width": 224}, "image_mean": [0.485, 0.456, 0.406],
                                   "image_std": [0.229, 0.224, 0.225], "resample": 3}),
    "swinv2": ("swinv2", "Swinv2ForImageClassification", "microsoft/swinv2-tiny-patch4-window8-256",
               {"embed_dim": 8, "depths": [1, 1], "num_heads": [1, 1], "image_size": 32, "patch_size": 4,
                "window_size": 2},
               "ViTImageProcessor", {"size": {"height": 256, "width": 256}, "image_mean": [0.485, 0.456, 0.406],
                                     "image_std": [0.229, 0.224, 0.225], "resample": 3}),
    "vit_mae": ("vit_mae", "ViTMAEModel", "facebook/vit-mae-base", dict(VIT_TINY, patch_size=16),
                "ViTImageProcessor", {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
                                      "resample": 3}),
    "dinov2": ("dinov2", "Dinov2Model", "facebook/dinov2-base", dict(VIT_TINY, patch_size=14, image_size=28),
               "BitImageProcessor", {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224},
                                     "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}),
    "dinov2_with_registers": ("dinov2_with_registers", "Dinov2WithRegistersModel",
                              "facebook/dinov2-with-registers-base", dict(VIT_TINY, patch_size=14, image_size=28),
                              "BitImageProcessor", {"size": {"shortest_edge": 256},
                                                    "crop_size": {"height": 224, "width": 224},
                                                    "image_mean": [0.485, 0.456, 0.406],
                                                    "image_std": [0.229, 0.224, 0.225]}),
    "clip": ("clip", "CLIPModel", "openai/clip-vit-base-patch32",
             {"text_config": TEXT_TINY, "vision_config": dict(VIT_TINY, patch_size=32, image_size=64),
              "projection_dim": 8},
             "CLIPImageProcessor", {}),
    "clip_vision_model": ("clip_vision_model", "CLIPVisionModelWithProjection", "openai/clip-vit-large-patch14",
                          dict(VIT_TINY, patch_size=14, image_size=28, projection_dim=8),
                          "CLIPImageProcessor", {}),
    "siglip": ("siglip", "SiglipModel", "google/siglip-base-patch16-224",
               {"text_config": TEXT_TINY, "vision_config": dict(VIT_TINY, patch_size=16)},
               "SiglipImageProcessor", {}),
    "siglip_vision_model": ("siglip_vision_model", "SiglipVisionModel", "google/siglip-so400m-patch14-384",
                            dict(VIT_TINY, patch_size=14, image_size=28),
                            "SiglipImageProcessor", {"size": {"height": 384, "width": 384}}),
    "siglip2": ("siglip2", "Siglip2Model", "google/siglip2-base-patch16-naflex",
                {"text_config": TEXT_TINY, "vision_config": dict(VIT_TINY, patch_size=16, num_patches=4)},
                "Siglip2ImageProcessor", {}),
    "regnet": ("regnet", "RegNetForImageClassification", "facebook/regnet-y-040",
               {"embedding_size": 8, "hidden_sizes": [8, 8, 8, 8], "depths": [1, 1, 1, 1], "groups_width": 8},
               "ConvNextImageProcessor", {"crop_pct": 0.875, "size": {"shortest_edge": 224},
                                          "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}),
    "efficientnet": ("efficientnet", "EfficientNetForImageClassification", "google/efficientnet-b0",
                     {"width_coefficient": 0.1, "depth_coefficient": 0.1, "image_size": 32, "hidden_dim": 128},
                     "EfficientNetImageProcessor", {"size": {"height": 224, "width": 224},
                                                    "crop_size": {"height": 289, "width": 289},
                                                    "image_mean": [0.485, 0.456, 0.406],
                                                    "image_std": [0.47853944, 0.4732864, 0.47434163],
                                                    "rescale_factor": 0.00392156862745098, "rescale_offset": False}),
    "mobilenet_v1": ("mobilenet_v1", "MobileNetV1ForImageClassification", "google/mobilenet_v1_1.0_224",
                     {"depth_multiplier": 0.25, "image_size": 32}, "MobileNetV1ImageProcessor",
                     {"crop_size": {"height": 224, "width": 224}, "size": {"shortest_edge": 256}}),
    "mobilenet_v2": ("mobilenet_v2", "MobileNetV2ForImageClassification", "google/mobilenet_v2_1.0_224",
                     {"depth_multiplier": 0.35, "image_size": 32}, "MobileNetV2ImageProcessor",
                     {"crop_size": {"height": 224, "width": 224}, "size": {"shortest_edge": 256}}),
    "mobilevit": ("mobilevit", "MobileViTForImageClassification", "apple/mobilevit-small",
                  {"hidden_sizes": [16, 16, 16], "neck_hidden_sizes": [8, 8, 8, 8, 8, 8, 16],
                   "num_attention_heads": 2, "image_size": 64},
                  "MobileViTImageProcessor", {"crop_size": {"height": 256, "width": 256},
                                              "size": {"shortest_edge": 288}}),
    "mobilevitv2": ("mobilevitv2", "MobileViTV2ForImageClassification", "apple/mobilevitv2-1.0-imagenet1k-256",
                    {"width_multiplier": 0.25, "image_size": 64},
                    "MobileViTImageProcessor", {"crop_size": {"height": 256, "width": 256},
                                                "size": {"shortest_edge": 288}}),
    "levit": ("levit", "LevitForImageClassificationWithTeacher", "facebook/levit-128S",
              {"hidden_sizes": [32, 48, 64], "num_attention_heads": [1, 1, 1], "depths": [1, 1, 1],
               "key_dim": [8, 8, 8], "image_size": 32},
              "LevitImageProcessor", {}),
    "poolformer": ("poolformer", "PoolFormerForImageClassification", "sail/poolformer_s12",
                   {"hidden_sizes": [8, 8, 8, 8], "depths": [1, 1, 1, 1]}, "PoolFormerImageProcessor", {}),
    "bit": ("bit", "BitForImageClassification", "google/bit-50",
            {"embedding_size": 16, "hidden_sizes": [32, 32, 32, 32], "depths": [1, 1, 1, 1], "num_groups": 4},
            "BitImageProcessor", {"crop_size": {"height": 448, "width": 448}, "size": {"shortest_edge": 448},
                                  "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2}),
}

# OpenCLIP: family: (model name in open_clip, real repository imitated, tiny model_cfg override)
OPEN_CLIP = {
    "open_clip_vit": ("ViT-B-32", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
                      {"vision_cfg": {"image_size": 64, "layers": 1, "width": 16, "patch_size": 32, "head_width": 8},
                       "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
                       "embed_dim": 8}),
    "open_clip_resnet": ("RN50", "timm/resnet50_clip.openai",
                         {"vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8},
                          "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2,
                                       "layers": 1},
                          "embed_dim": 8}),
    "open_clip_timm": ("convnext_base", "laion/CLIP-convnext_base-laion400M-s13B-b51K",
                       {"vision_cfg": {"timm_model_name": "test_convnext", "timm_model_pretrained": False,
                                       "timm_pool": "", "timm_proj": "linear", "image_size": 32},
                        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
                        "embed_dim": 8}),
}

IMAGE_SHAPES = [(300, 451), (451, 300), (230, 230), (500, 380)]


def tensors_of(model) -> list[list]:
    return [[name, list(tensor.shape)] for name, tensor in model.state_dict().items()]


def first_stem(model, run) -> dict:
    """The first Conv2d or Linear that `run(model)` calls: its state-dict key, type, stride and channels."""
    import torch

    names = {module: name for name, module in model.named_modules()}
    called = []
    hooks = [module.register_forward_pre_hook(lambda module, args: called.append(module))
             for module in names if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        run(model)
    for hook in hooks:
        hook.remove()
    module = called[0]
    found = {"key": f"{names[module]}.weight", "module": type(module).__name__}
    if isinstance(module, torch.nn.Conv2d):
        found.update(kernel=module.kernel_size[0], stride=module.stride[0], in_chans=module.in_channels,
                     out=module.out_channels)
    else:
        found.update(in_features=module.in_features, out=module.out_features)
    return found


def preprocessing_probe(processor) -> list[dict]:
    """What the processor does to images of several shapes: the output size and one pixel's values, measured."""
    import numpy as np

    rows = []
    for height, width in IMAGE_SHAPES:
        image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
        out = processor(images=image, return_tensors="np")
        values = out["pixel_values"][0]
        rows.append({"image": [height, width], "shape": list(values.shape), "mean": float(values.mean())})
    return rows


def transformers_family(family: str) -> dict:
    import torch
    import transformers

    model_type, class_name, repo, tiny_kwargs, processor_name, processor_values = FAMILIES[family]
    model_class = getattr(transformers, class_name)
    config_class = model_class.config_class
    config = config_class()
    config.architectures = [class_name]
    with torch.device("meta"):
        full = model_class(config)
    tiny_config = config_class(**tiny_kwargs)
    tiny_config.architectures = [class_name]
    torch.manual_seed(0)
    tiny = model_class(tiny_config).eval()
    vision = getattr(tiny_config, "vision_config", tiny_config)
    size = getattr(vision, "image_size", 32)
    size = size if isinstance(size, int) else size[0]
    pixels = torch.randn(1, 3, size, size)

    def run(model):
        if family == "siglip2":
            patch = vision.patch_size
            patches = pixels.reshape(1, 3, size // patch, patch, size // patch, patch).permute(0, 2, 4, 3, 5, 1)
            patches = patches.reshape(1, (size // patch) ** 2, -1)
            model.get_image_features(pixel_values=patches,
                                     pixel_attention_mask=torch.ones(1, patches.shape[1], dtype=torch.long),
                                     spatial_shapes=torch.tensor([[size // patch, size // patch]]))
        elif hasattr(model, "get_image_features"):
            model.get_image_features(pixel_values=pixels)
        else:
            model(pixel_values=pixels)

    stem = first_stem(tiny, run)
    if family == "siglip2":
        stem["patch_layout"] = linear_layout(tiny.get_submodule(stem["key"].removesuffix(".weight")),
                                             vision.patch_size)
    if stem["module"] == "WeightStandardizedConv2d":
        conv = tiny.get_submodule(stem["key"].removesuffix(".weight"))
        stem["eps"] = conv.eps
        stem["standardised_within"] = standardised_difference(conv)
    processor_class = getattr(transformers, processor_name)
    processor = processor_class(**processor_values)
    processor_config = json.loads(processor.to_json_string())
    return {
        "family": family, "library": "transformers", "model_type": model_type, "model_class": class_name,
        "repo": repo, "transformers_version": transformers.__version__,
        "config": json.loads(config.to_json_string(use_diff=True)),
        "tensors": tensors_of(full),
        "tiny_config": json.loads(tiny_config.to_json_string(use_diff=True)),
        "tiny_tensors": tensors_of(tiny),
        "preprocessor_config": processor_config,
        "processor_probe": preprocessing_probe(processor),
        "stem": stem,
    }


def standardised_difference(conv) -> float:
    """Largest difference between the filters a weight-standardised conv applies (its response to one-hot
    patches) and what weight_standardisation.effective_filters makes of its stored weight."""
    import torch

    from firstlayer_zoo.weight_standardisation import effective_filters

    out, chans, kernel, _ = conv.weight.shape
    probes = torch.eye(chans * kernel * kernel).reshape(-1, chans, kernel, kernel)
    conv.padding = (0, 0)
    with torch.no_grad():
        response = conv.double()(probes.double()) - conv.double()(torch.zeros(1, chans, kernel, kernel).double())
    applied = response[:, :, 0, 0].T.reshape(out, chans, kernel, kernel).numpy()
    ours = effective_filters({"w.weight": conv.weight.detach().double().numpy()},
                             {"module_type": "StdConv2d", "kernel_size": kernel, "in_chans": chans,
                              "std_eps": conv.eps}, "w")
    return float(abs(applied - ours).max())


def linear_layout(linear, patch: int) -> str:
    """chw or hwc: the order of a patch's values that makes the Linear equal a conv of its reshaped weight."""
    import torch

    from firstlayer_zoo.checkpoint_io import as_conv_weight

    weight = linear.weight.detach().double().numpy()
    patch_values = torch.randn(3, patch, patch, dtype=torch.float64)
    hwc = patch_values.permute(1, 2, 0).reshape(-1)  # transformers' convert_image_to_patches order
    expected = linear.weight.double() @ hwc
    for layout in ("chw", "hwc"):
        conv = torch.from_numpy(as_conv_weight(weight, patch, layout, "probe"))
        if torch.allclose((conv * patch_values).sum((1, 2, 3)), expected):
            return layout
    raise AssertionError("neither layout reproduces the patch embedding")


def open_clip_family(family: str) -> dict:
    import tempfile

    import open_clip
    import torch

    name, repo, tiny_cfg = OPEN_CLIP[family]
    model_cfg = open_clip.get_model_config(name)
    with torch.device("meta"):
        full = open_clip.create_model(name, device="meta", pretrained=None)
    tiny_model_cfg = {**model_cfg, **tiny_cfg}
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "open_clip_config.json").write_text(json.dumps({"model_cfg": tiny_model_cfg,
                                                                     "preprocess_cfg": {}}))
        torch.manual_seed(0)
        tiny = open_clip.create_model(f"local-dir:{folder}", load_weights=False).eval()
    size = tiny_model_cfg["vision_cfg"].get("image_size", 224)
    stem = first_stem(tiny, lambda model: model.encode_image(torch.randn(1, 3, size, size)))
    hf_config = {"model_cfg": model_cfg,
                 "preprocess_cfg": {"mean": list(full.visual.image_mean or open_clip.OPENAI_DATASET_MEAN),
                                    "std": list(full.visual.image_std or open_clip.OPENAI_DATASET_STD)}}
    preprocess = open_clip.image_transform(model_cfg["vision_cfg"].get("image_size", 224), is_train=False)
    return {
        "family": family, "library": "open_clip", "model_type": None, "model_class": name, "repo": repo,
        "open_clip_version": open_clip.__version__,
        "config": hf_config, "tensors": tensors_of(full),
        "tiny_config": {"model_cfg": tiny_model_cfg, "preprocess_cfg": hf_config["preprocess_cfg"]},
        "tiny_tensors": tensors_of(tiny), "preprocess": repr(preprocess), "stem": stem,
    }


def compact(fixture: dict) -> str:
    """One line per top-level key: small files whose diffs say which part changed."""
    lines = [f"{json.dumps(key)}: {json.dumps(value, sort_keys=True)}" for key, value in fixture.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--check-only", action="store_true", help="check the table against the written fixtures")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.check_only:
        out.mkdir(parents=True, exist_ok=True)
        for family in [*FAMILIES, *OPEN_CLIP]:
            if args.only and family not in args.only:
                continue
            fixture = transformers_family(family) if family in FAMILIES else open_clip_family(family)
            (out / f"{family}.json").write_text(compact(fixture))
            print(f"{family}: {fixture['stem']}", flush=True)
    check(out)


def check(out: Path) -> None:
    """Every fixture's stem and preprocessing as the committed tables read them (raises on the first mismatch),
    and the committed preprocessing against the image processor's own output, pixel by pixel."""
    sys.path.insert(0, str(ROOT / "tests"))
    from hf_families import check_fixture

    for path in sorted(out.glob("*.json")):
        fixture = json.loads(path.read_text())
        line = check_fixture(fixture)
        if fixture["library"] == "transformers":
            line += "; " + compare_pixels(fixture)
        print(line, flush=True)


def compare_pixels(fixture: dict) -> str:
    """Largest difference between the image processor's PIL backend and Preprocessing on random images."""
    import numpy as np
    import transformers

    from firstlayer_zoo.hf_table import processor_name, processor_preprocessing

    config = fixture["preprocessor_config"]
    name = processor_name(config)
    processor = getattr(transformers, name + "Pil")(**{k: v for k, v in config.items() if k != "image_processor_type"})
    ours = processor_preprocessing(config)
    if ours.approximate:
        return f"approximate: {ours.approximate}"
    prep = ours.preprocessing
    worst = 0.0
    for height, width in IMAGE_SHAPES:
        image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
        theirs = processor(images=image, return_tensors="np")["pixel_values"][0].astype(np.float64)
        pixels = prep.apply(image).astype(np.float64) / 255.0
        mine = (pixels - np.array(prep.mean)[:, None, None]) / np.array(prep.std)[:, None, None]
        if ours.channel_order == "bgr":
            mine = mine[::-1]
        if mine.shape != theirs.shape:
            raise AssertionError(f"{fixture['family']}: {mine.shape} from Preprocessing, {theirs.shape} from {name}")
        # A crop offset by one pixel (torchvision rounds half to even, transformers floors) is the one allowed
        # difference: compare with the best of the shifts by at most one pixel.
        worst = max(worst, min(float(np.abs(np.roll(mine, (dy, dx), (1, 2))[:, 1:-1, 1:-1] -
                                             theirs[:, 1:-1, 1:-1]).max())
                               for dy in (-1, 0, 1) for dx in (-1, 0, 1)))
    return f"pixels within {worst:.2e} of {name}Pil"


if __name__ == "__main__":
    main()
