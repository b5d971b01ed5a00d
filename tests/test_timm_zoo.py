"""The timm source: the committed stem table, planning from it, and stems read from a Hub imitation."""

import hashlib
import json

import numpy as np
import pytest
import torch

from firstlayer_zoo.paths import TIMM_STEM_TABLE
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.timm_table import eval_preprocessing, load_timm_table
from firstlayer_zoo.timm_table_build import build_row, dataset_tag
from firstlayer_zoo.zoo_sources.timm_hub import TimmSource
from firstlayer_zoo.zoo_sources.base import GeometryCache
from firstlayer_zoo.zoo_sources import extract_stem
from loopback import HubImitation


def _source(tmp_path, **options):
    options = {"source": "timm", "dataset": "photos", **options}
    return TimmSource("hub", options, str(tmp_path), GeometryCache(tmp_path / "geometry.json"))


def _safetensors(state: dict) -> bytes:
    from safetensors.torch import save

    return save({key: value.detach().contiguous() for key, value in state.items()})


def _effective_filters_by_probing(module, chans, kernel):
    """The filters a conv applies, read from its response to one-hot c x k x k inputs (no padding)."""
    module = module.eval()
    module.padding = (0, 0)
    if hasattr(module, "same_pad"):
        module.same_pad = False
    probes = torch.eye(chans * kernel * kernel).reshape(-1, chans, kernel, kernel)
    with torch.no_grad():
        zero = module(torch.zeros(1, chans, kernel, kernel))
        response = module(probes) - zero
    return response[:, :, 0, 0].T.reshape(-1, chans, kernel, kernel).double().numpy()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with HubImitation() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
        yield server


# The committed table ---------------------------------------------------------------------------

def test_table_lists_every_pretrained_tag_of_the_installed_timm():
    import timm

    assert set(load_timm_table()) == set(timm.list_models(pretrained=True))


@pytest.mark.parametrize("tag", ["resnet50.a1_in1k", "resnetv2_50x1_bit.goog_in21k", "test_nfnet.r160_in1k",
                                 "vit_base_patch16_224.augreg2_in21k_ft_in1k", "tresnet_m.miil_in1k"])
def test_table_rows_match_a_fresh_meta_device_build(tag):
    fresh = build_row(tag)
    committed = {key: value for key, value in load_timm_table()[tag].items() if key != "default_tag"}
    fresh.pop("default_tag")
    for key in ("kernel_size", "in_chans", "out_channels", "stride", "std_eps", "std_scale", "crop_pct"):
        committed[key] = float(committed[key]) if committed[key] else None
        fresh[key] = float(fresh[key]) if fresh[key] else None
    assert committed == fresh


def test_table_marks_weight_standardised_and_space_to_depth_stems():
    table = load_timm_table()
    assert table["resnetv2_50x1_bit.goog_in21k"]["module_type"] == "StdConv2d"
    assert table["test_nfnet.r160_in1k"]["module_type"] == "ScaledStdConv2d"
    assert float(table["test_nfnet.r160_in1k"]["std_scale"]) > 0
    assert table["tresnet_m.miil_in1k"]["status"].startswith("skipped: the stem takes 48 channels")


def test_dataset_tag_keeps_pretraining_then_fine_tuning():
    assert dataset_tag("resnet50.a1_in1k") == "in1k"
    assert dataset_tag("vit_base_patch16_224.augreg2_in21k_ft_in1k") == "in21k>in1k"
    assert dataset_tag("resnet50.tv_in1k") == "in1k"


@pytest.mark.parametrize("tag", ["resnet50.a1_in1k", "test_vit.r160_in1k", "convnext_tiny.fb_in1k",
                                 "coat_lite_medium_384.in1k"])
def test_eval_preprocessing_matches_timms_own_eval_transform(tag):
    import timm
    from torchvision.transforms import CenterCrop, Normalize, Resize

    config = timm.data.resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(tag).to_dict())
    transform = timm.data.create_transform(**config, is_training=False)
    steps = {type(step): step for step in transform.transforms}
    prep = eval_preprocessing(load_timm_table()[tag])
    size = steps[Resize].size
    assert (prep.resize_mode, prep.resize) == (("squash", size[0]) if isinstance(size, (tuple, list)) else
                                               ("shorter", size))
    assert prep.crop == steps[CenterCrop].size[0]
    assert prep.interpolation == steps[Resize].interpolation.value
    assert prep.mean == pytest.approx([float(v) for v in steps[Normalize].mean])
    assert prep.std == pytest.approx([float(v) for v in steps[Normalize].std])


# Planning ----------------------------------------------------------------------------------------

def test_names_globs_defaults_and_excludes_resolve_from_the_table(tmp_path):
    source = _source(tmp_path, models=["resnet50", "test_vit*", "test_resnet.r160_in1k"],
                     exclude=["test_vit3*"], revisions={"test_resnet.r160_in1k": "abc123"})
    specs = {spec.name: spec for spec in source.checkpoints()}
    table = load_timm_table()
    default = [tag for tag, row in table.items() if row["arch"] == "resnet50" and row["default_tag"] == "True"]
    assert set(specs) == {*default, "test_vit.r160_in1k", "test_vit2.r160_in1k", "test_resnet.r160_in1k"}
    resnet = specs["test_resnet.r160_in1k"]
    # The reader opens the Hub repository; people read where it comes from, revision included.
    assert (resnet.locator, resnet.uri) == ("timm/test_resnet.r160_in1k", "hf://timm/test_resnet.r160_in1k@abc123")
    assert resnet.stride == int(float(load_timm_table()["test_resnet.r160_in1k"]["stride"]))
    assert (resnet.first_conv, resnet.kernel_size, resnet.in_chans) == ("conv1.0", 3, 3)
    assert resnet.extra["dataset_tag"] == "in1k"
    assert not (tmp_path / "geometry.json").exists()  # nothing was built


def test_a_tag_missing_from_the_table_is_built_on_the_meta_device_once(tmp_path):
    table = tmp_path / "table.csv"
    table.write_text(TIMM_STEM_TABLE.read_text().splitlines()[0] + "\n")
    source = _source(tmp_path, models=["test_resnet.r160_in1k"], table=str(table))
    (spec,) = source.checkpoints()
    source.cache.save()
    assert (spec.first_conv, spec.kernel_size) == ("conv1.0", 3)
    assert "test_resnet.r160_in1k" in (tmp_path / "geometry.json").read_text()


def test_a_glob_matching_nothing_names_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"zoos.hub.models: 'no_such_net\*' matches no timm pretrained tag"):
        _source(tmp_path, models=["no_such_net*"]).checkpoints()


# Reading stems from the Hub imitation --------------------------------------------------------------

def _serve_model(hub, tag, model, filename="model.safetensors"):
    state = model.state_dict()
    data = _safetensors(state) if filename.endswith(".safetensors") else _pickled(state)
    hub.add_file(f"timm/{tag}", filename, data)
    return state, len(data)


def _pickled(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_conv_stem_is_read_with_ranges_from_safetensors(hub, tmp_path):
    import timm

    model = timm.create_model("test_resnet.r160_in1k", pretrained=False)
    state, size = _serve_model(hub, "test_resnet.r160_in1k", model)
    (spec,) = _source(tmp_path, models=["test_resnet.r160_in1k"]).checkpoints()
    stem = extract_stem(CheckpointSpec.from_dict(spec.to_dict()))
    assert stem.status == "ok"
    np.testing.assert_array_equal(stem.weight, state["conv1.0.weight"].double().numpy())
    assert stem.stride == 2 and stem.meta["fetch"] == "range"
    assert stem.meta["file_size"] == size
    assert stem.meta["bytes_fetched"] == hub.sent["timm/test_resnet.r160_in1k/model.safetensors"] < size
    assert stem.meta["commit"] == hub.repos["timm/test_resnet.r160_in1k"]["commit"]


def test_scaled_weight_standardised_stem_is_the_filter_the_model_applies(hub, tmp_path):
    import timm

    model = timm.create_model("test_nfnet.r160_in1k", pretrained=False)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.randn_like(param))  # gain away from 1, so that forgetting it fails
    _serve_model(hub, "test_nfnet.r160_in1k", model)
    (spec,) = _source(tmp_path, models=["test_nfnet.r160_in1k"]).checkpoints()
    stem = extract_stem(spec)
    conv = model.get_submodule(spec.first_conv)
    expected = _effective_filters_by_probing(conv, spec.in_chans, spec.kernel_size)
    np.testing.assert_allclose(stem.weight, expected, rtol=1e-4, atol=1e-5)


def test_std_conv_stem_is_standardised(hub, tmp_path):
    from timm.layers import StdConv2d

    tag = "resnetv2_50x1_bit.goog_in21k"
    row = load_timm_table()[tag]
    conv = StdConv2d(3, int(row["out_channels"]), 7, stride=2, eps=float(row["std_eps"]))
    hub.add_file(f"timm/{tag}", "model.safetensors", _safetensors({f"{row['first_conv']}.weight": conv.weight}))
    (spec,) = _source(tmp_path, models=[tag]).checkpoints()
    stem = extract_stem(spec)
    np.testing.assert_allclose(stem.weight, _effective_filters_by_probing(conv, 3, 7), rtol=1e-4, atol=1e-5)


def test_pickle_only_repository_is_downloaded_whole_and_says_so(hub, tmp_path, capsys):
    import timm

    model = timm.create_model("test_resnet.r160_in1k", pretrained=False)
    state, size = _serve_model(hub, "test_resnet.r160_in1k", model, filename="pytorch_model.bin")
    (spec,) = _source(tmp_path, models=["test_resnet.r160_in1k"]).checkpoints()
    stem = extract_stem(spec)
    np.testing.assert_array_equal(stem.weight, state["conv1.0.weight"].double().numpy())
    assert stem.meta["fetch"] == "full" and stem.meta["bytes_fetched"] == size == stem.meta["file_size"]
    assert "is a pickle, which cannot be read in ranges: downloading all" in capsys.readouterr().out


def test_space_to_depth_stem_becomes_a_skipped_status_without_a_download(hub, tmp_path):
    (spec,) = _source(tmp_path, models=["tresnet_m.miil_in1k"]).checkpoints()
    stem = extract_stem(spec)
    assert stem.status.startswith("skipped: the stem takes 48 channels")
    assert spec.in_chans == 3 and hub.requests == []


def test_unknown_revision_fails_the_job_naming_the_revision(hub, tmp_path):
    import timm

    from firstlayer_zoo.downloads import DownloadError

    _serve_model(hub, "test_resnet.r160_in1k", timm.create_model("test_resnet.r160_in1k"))
    (spec,) = _source(tmp_path, models=["test_resnet.r160_in1k"], revision="v9").checkpoints()
    with pytest.raises(DownloadError, match="no revision 'v9'; fix the zoo's revision"):
        extract_stem(spec)


def test_range_path_fetches_under_one_percent_of_a_resnet50_sized_file(hub, tmp_path):
    import timm

    model = timm.create_model("resnet50.a1_in1k", pretrained=False)
    state, size = _serve_model(hub, "resnet50.a1_in1k", model)
    assert size > 90e6
    (spec,) = _source(tmp_path, models=["resnet50.a1_in1k"]).checkpoints()
    stem = extract_stem(spec)
    np.testing.assert_array_equal(stem.weight, state["conv1.weight"].double().numpy())
    served = hub.sent["timm/resnet50.a1_in1k/model.safetensors"]
    assert served == stem.meta["bytes_fetched"]
    assert served / size < 0.01
    print(f"resnet50 safetensors: {size} bytes, {served} fetched ({100 * served / size:.3f} %)")


@pytest.mark.parametrize("channels_last, layout", [(True, "hwc"), (False, "chw")])
def test_linear_patch_embedding_is_reshaped_in_the_models_patch_layout(channels_last, layout):
    from timm.models.naflexvit import batch_patchify

    from firstlayer_zoo.weight_standardisation import effective_filters

    chans, kernel = 3, 4
    linear = torch.randn(5, chans * kernel * kernel, dtype=torch.float64)
    patch = torch.randn(1, chans, kernel, kernel, dtype=torch.float64)
    flat, _ = batch_patchify(patch, (kernel, kernel), channels_last=channels_last)
    expected = (linear @ flat[0, 0]).numpy()
    filters = effective_filters({"embed.proj.weight": linear.numpy()},
                                {"module_type": "Linear", "kernel_size": kernel, "in_chans": chans,
                                 "patch_layout": layout}, "embed.proj")
    np.testing.assert_allclose(filters.reshape(5, -1) @ patch.flatten().numpy(), expected)


def test_naflex_vit_is_recorded_with_a_channels_last_patch_layout():
    row = build_row("naflexvit_base_patch16_gap.e300_s576_in1k")
    assert (row["module_type"], row["patch_layout"], row["kernel_size"]) == ("Linear", "hwc", "16")


def test_server_without_ranges_falls_back_to_a_full_download_and_says_so(hub, tmp_path, capsys):
    import timm

    state, size = _serve_model(hub, "test_resnet.r160_in1k", timm.create_model("test_resnet.r160_in1k"))
    hub.ignore_range.add("timm/test_resnet.r160_in1k/model.safetensors")
    (spec,) = _source(tmp_path, models=["test_resnet.r160_in1k"]).checkpoints()
    stem = extract_stem(spec)
    np.testing.assert_array_equal(stem.weight, state["conv1.0.weight"].double().numpy())
    assert stem.meta["fetch"] == "full" and stem.meta["bytes_fetched"] == size
    assert "ignores Range requests: downloading all" in capsys.readouterr().out


def test_redirect_to_a_cdn_keeps_the_token_off_the_cdn(monkeypatch, tmp_path):
    import timm

    with HubImitation(cdn=True) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        state, size = _serve_model(hub, "test_resnet.r160_in1k", timm.create_model("test_resnet.r160_in1k"))
        (spec,) = _source(tmp_path, models=["test_resnet.r160_in1k"]).checkpoints()
        stem = extract_stem(spec)
    np.testing.assert_array_equal(stem.weight, state["conv1.0.weight"].double().numpy())
    assert stem.meta["file_size"] == size and stem.meta["bytes_fetched"] < size
    resolve = [auth for path, auth in hub.authorization if "/resolve/" in path]
    cdn = [auth for path, auth in hub.authorization if path.startswith("/cdn/")]
    assert resolve == ["Bearer hf_test_token"] and len(cdn) >= 2 and set(cdn) == {None}


def test_squash_resizes_both_sides_and_keeps_older_preprocessing_keys():
    from PIL import Image

    from firstlayer_zoo.preprocessing import Preprocessing

    image = np.random.default_rng(0).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    squashed = Preprocessing(resize=20, crop=16, interpolation="bicubic", resize_mode="squash").apply(image)
    expected = np.asarray(Image.fromarray(image).resize((20, 20), Image.Resampling.BICUBIC))[2:18, 2:18]
    np.testing.assert_array_equal(squashed, expected.transpose(2, 0, 1))
    assert Preprocessing(resize=20).key == "r20c0-" + hashlib.sha1(json.dumps(
        {"crop": None, "interpolation": "bilinear", "mean": [0.485, 0.456, 0.406], "resize": 20,
         "std": [0.229, 0.224, 0.225]}, sort_keys=True).encode()).hexdigest()[:8]
    assert Preprocessing(resize=20, resize_mode="squash").key != Preprocessing(resize=20).key


# benchmarks/timm_zoo.py: its Hub imitation must be one the source reads as the table plans ------------------

@pytest.fixture(scope="module")
def zoo_benchmark():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "timm_zoo.py"
    spec = importlib.util.spec_from_file_location("timm_zoo_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


# The smallest served tag of each module type and patch layout in the table.
BENCHMARK_TAGS = ["efficientvit_b0.r224_in1k", "dm_nfnet_f0.dm_in1k", "eca_nfnet_l0.ra2_in1k", "tf_mixnet_s.in1k",
                  "resnetv2_101x1_bit.goog_in21k", "vit_base_r50_s16_224.orig_in21k",
                  "gemma4_vit_167m.gemma4_e4b_it", "naflexvit_base_patch16_gap.e300_s576_in1k"]


def test_the_zoo_benchmarks_stem_only_files_are_read_as_the_table_plans(zoo_benchmark, hub, tmp_path):
    from safetensors.numpy import load

    rows = [row for row in zoo_benchmark.served_rows(None) if row["tag"] in BENCHMARK_TAGS]
    assert {(row["module_type"], row["patch_layout"]) for row in rows} == {
        (module, "") for module in ("Conv2d", "Conv2dSame", "StdConv2d", "StdConv2dSame", "ScaledStdConv2d",
                                    "ScaledStdConv2dSame")} | {("Linear", "chw"), ("Linear", "hwc")}
    repositories = zoo_benchmark.StemRepositories(rows)
    repositories.serve(hub)
    specs = _source(tmp_path, models=BENCHMARK_TAGS).checkpoints()
    assert len(specs) == len(BENCHMARK_TAGS)
    for spec in specs:
        stem = extract_stem(CheckpointSpec.from_dict(spec.to_dict()))
        assert stem.status == "ok", spec.name
        assert stem.weight.shape == (stem.out_channels, spec.in_chans, spec.kernel_size, spec.kernel_size)
        assert stem.meta["fetch"] == "range"
        served = load(repositories.build(spec.locator))
        if spec.extra["module_type"] in ("Conv2d", "Conv2dSame"):
            np.testing.assert_array_equal(stem.weight, served[f"{spec.first_conv}.weight"].astype(np.float64))
        assert set(served) == {f"{spec.first_conv}.weight"} | (
            {f"{spec.first_conv}.gain"} if spec.extra["module_type"].startswith("Scaled") else set())


def test_the_zoo_benchmark_reads_job_times_and_failures_from_snakemakes_log(zoo_benchmark, tmp_path):
    log = tmp_path / "main.log"
    log.write_text("""Select jobs to execute...
Execute 2 jobs...
[Sun Dec  6 03:56:14 2026]
localrule prepare_dataset:
    output: results/datasets/photos/manifest.json
    jobid: 3
    reason: Missing output files: results/datasets/photos/manifest.json
    wildcards: dataset=photos
    resources: tmpdir=/tmp

[Sun Dec  6 03:56:16 2026]
rule patch_statistics:
    input: results/datasets/photos/manifest.json
    jobid: 5
    wildcards: dataset=photos, pixels=r224c224-d16de1d4, kernels=7-16, c=3
    priority: 10
    threads: 2

[Sun Dec  6 03:56:17 2026]
Finished jobid: 3 (Rule: prepare_dataset)
1 of 3 steps (33%) done
[Sun Dec  6 03:56:30 2026]
Error in rule patch_statistics:
    message: None
    jobid: 5
    log: results/logs/patch_statistics/photos/r224c224-d16de1d4/k7-16_c3.log (check log file(s) for error details)
""")
    jobs = zoo_benchmark.parse_main_log(log)
    assert {jobid: (job["rule"], job["state"], job["seconds"]) for jobid, job in jobs.items()} == {
        3: ("prepare_dataset", "done", 3.0), 5: ("patch_statistics", "failed", 14.0)}
    assert jobs[5]["wildcards"] == {"dataset": "photos", "pixels": "r224c224-d16de1d4", "kernels": "7-16", "c": "3"}
