"""Hub repositories resolved into a pinned index and their stems read, against an imitation of the Hub.

Every family of hf_stems.csv is served as a repository in the real format (config files written by transformers
or open_clip_torch themselves, see tests/hf_families.py) and its stem, read through the Hub's endpoints, must
equal, and profile exactly as, the same weights file read from a folder.
"""

import json
import socket
import time

import numpy as np
import pytest

from firstlayer_zoo.analysis import analyse_stem
from firstlayer_zoo.basis import PatchBasis
from firstlayer_zoo.downloads import DownloadError, NetworkError, RetryPolicy
from firstlayer_zoo.hf_resolve import HubRequest, fetch_whole, read_stem, resolve
from firstlayer_zoo.limits import Limits, applied
from firstlayer_zoo.weight_standardisation import effective_filters
from firstlayer_zoo.zoo_sources.base import GeometryCache
from firstlayer_zoo.zoo_sources import extract_stem
from firstlayer_zoo.zoo_sources.local_files import FolderSource
from hf_families import load_fixtures, safetensors_bytes, serve, tiny_state
from loopback import HubImitation

FAST = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.05, read_timeout_s=30)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with HubImitation() as server:
        _use(monkeypatch, tmp_path, server)
        yield server


def _use(monkeypatch, tmp_path, server):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)


def _resolve(options, previous=None, **kwargs):
    return resolve(HubRequest.from_options(options), previous, policy=FAST, log=lambda line: None, **kwargs)


def _random_basis(kernel: int, chans: int, seed: int = 0) -> PatchBasis:
    """An orthonormal basis of signed, permuted pixel axes (cheap at p = 3,072) with a decaying spectrum."""
    dimension = chans * kernel * kernel
    rng = np.random.default_rng(seed)
    vectors = np.zeros((dimension, dimension))
    vectors[rng.permutation(dimension), np.arange(dimension)] = rng.choice([-1.0, 1.0], dimension)
    values = np.sort(rng.uniform(0.01, 5.0, dimension))[::-1]
    return PatchBasis(kernel_size=kernel, in_chans=chans, mean=np.zeros(dimension),
                      covariance=(vectors * values) @ vectors.T, eigenvalues=values, eigenvectors=vectors,
                      n_patches=1, n_images=1)


# Family by family -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", sorted(load_fixtures()))
def test_each_family_is_read_and_profiled_as_the_same_file_in_a_folder(hub, tmp_path, family):
    fixture = load_fixtures()[family]
    repo = f"org/{family}-tiny"
    state = serve(hub, fixture, repo, seed=3)
    index = _resolve({"models": [repo]})
    entry = index["entries"][repo]
    assert entry["status"] == "ok", entry["status"]
    assert entry["commit"] == hub.repos[repo]["commit"] and entry["stem"]["key"] == fixture["stem"]["key"]
    stem = read_stem(entry, policy=FAST)
    assert stem.meta["fetch"] == "range"
    # The stem read is one Range request for its bytes, nothing else of the weights file.
    assert stem.meta["bytes_fetched"] == sum(np.prod(entry["stem"]["entries"][key]["shape"]) * 4
                                             for key in entry["stem"]["entries"])

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(safetensors_bytes(state))
    linear = entry["stem"]["module_type"] == "Linear"
    options = {"source": "folder", "dataset": "photos", "root": str(folder), "stem_key": entry["stem"]["key"],
               **({"patch_size": entry["stem"]["kernel_size"], "patch_layout": entry["stem"]["patch_layout"]}
                  if linear else {})}
    (spec,) = FolderSource("local", options, "results", GeometryCache(tmp_path / "g.json")).checkpoints()
    local = extract_stem(spec)
    assert local.status == "ok", local.status
    expected = local.weight
    if entry["stem"]["module_type"] == "StdConv2d":  # the folder source reads the stored weight as it is
        expected = effective_filters({"w.weight": expected}, {**entry["stem"], "module_type": "StdConv2d"}, "w")
    np.testing.assert_array_equal(stem.weight, expected)

    basis = _random_basis(stem.kernel_size, stem.in_chans)
    remote_profile = analyse_stem(spec, stem, basis, subtract_init=False)
    local_profile = analyse_stem(spec, local if entry["stem"]["module_type"] != "StdConv2d" else
                                 type(local)(weight=expected, init=None, stride=local.stride,
                                             first_conv=local.first_conv), basis, subtract_init=False)
    assert remote_profile.status == local_profile.status == "ok"
    np.testing.assert_array_equal(remote_profile.energy, local_profile.energy)
    assert remote_profile.measures == local_profile.measures


@pytest.mark.parametrize("weights", ["sharded", "pickle"])
def test_sharded_and_pickle_only_repositories(hub, weights, capsys):
    fixture = load_fixtures()["vit"]
    state = serve(hub, fixture, "org/vit-" + weights, weights=weights, seed=5)
    entry = _resolve({"models": ["org/vit-" + weights]})["entries"]["org/vit-" + weights]
    assert entry["status"] == "ok", entry["status"]
    assert entry["stem"]["format"] == ("safetensors" if weights == "sharded" else "pickle")
    if weights == "sharded":
        assert entry["stem"]["file"].startswith("model-0000")
    stem = read_stem(entry, policy=FAST)
    np.testing.assert_array_equal(stem.weight, state[fixture["stem"]["key"]].astype(np.float64))


# The listing ------------------------------------------------------------------------------------------------

def _population(hub):
    fixtures = load_fixtures()
    for i, family in enumerate(["vit", "resnet", "convnext", "swin", "deit", "beit", "regnet", "levit"]):
        serve(hub, fixtures[family], f"org{i % 3}/{family}-{i}", seed=i, downloads=1000 - 10 * i)
    serve(hub, fixtures["clip"], "openai/clip-tiny", pipeline_tag="zero-shot-image-classification", downloads=5000)
    serve(hub, fixtures["open_clip_vit"], "laion/open-clip-tiny", pipeline_tag="zero-shot-image-classification",
          downloads=4000)


def test_a_search_pages_through_the_listing_with_the_hubs_filters(hub):
    _population(hub)
    hub.page_size = 3
    index = _resolve({"search": {"library": "transformers", "pipeline_tag": "image-classification",
                                 "sort": "downloads", "limit": 7}})
    assert index["order"] == [f"org{i % 3}/{family}-{i}" for i, family in
                              enumerate(["vit", "resnet", "convnext", "swin", "deit", "beit", "regnet"])]
    assert all(entry["status"] == "ok" for entry in index["entries"].values())
    pages = [path for path in hub.api_requests if path.startswith("/api/models?")]
    assert len(pages) == 3  # 3 + 3 + 1 of the 8 that match
    assert "filter=transformers" in pages[0] and "pipeline_tag=image-classification" in pages[0]
    assert "sort=downloads" in pages[0] and "cursor=3" in pages[1]
    # the listing gave sha, siblings and card data: no model-info request was needed
    assert not [path for path in hub.api_requests if path.startswith("/api/models/")]


def test_author_tags_search_and_exclude(hub):
    _population(hub)
    index = _resolve({"search": {"author": "org0", "tags": ["swin"]}})
    assert index["order"] == ["org0/swin-3"]
    index = _resolve({"search": {"search": "clip", "pipeline_tag": "zero-shot-image-classification"},
                      "exclude": ["laion/*"]})
    assert index["order"] == ["openai/clip-tiny"] and index["excluded"] == ["laion/open-clip-tiny"]
    assert index["entries"]["openai/clip-tiny"]["stem"]["key"] == "vision_model.embeddings.patch_embedding.weight"


# What cannot be read, and overrides ---------------------------------------------------------------------------

def test_an_unknown_model_type_is_skipped_naming_it_and_stem_key_reads_it(hub):
    fixture = dict(load_fixtures()["vit"])
    fixture["tiny_config"] = {**fixture["tiny_config"], "model_type": "my_vit"}
    state = serve(hub, fixture, "org/custom")
    entry = _resolve({"models": ["org/custom"]})["entries"]["org/custom"]
    assert entry["status"] == ("skipped: org/custom: model type 'my_vit' is not in hf_stems.csv; set stem_key (the "
                               "stem tensor's name) and, unless its preprocessor_config.json is one the table reads, "
                               "preprocessing for it")
    key = fixture["stem"]["key"]
    entry = _resolve({"models": [{"repo": "org/custom", "stem_key": key}]})["entries"]["org/custom"]
    assert entry["status"] == "ok" and entry["preprocessing_source"] == "repository"
    np.testing.assert_array_equal(read_stem(entry, policy=FAST).weight, state[key].astype(np.float64))
    entry = _resolve({"models": ["org/custom"], "stem_key": {"org/custom": key}})["entries"]["org/custom"]
    assert entry["status"] == "ok"


def test_a_repository_without_weights_or_with_a_four_channel_stem_says_what_to_set(hub):
    fixture = load_fixtures()["resnet"]
    hub.add_repo("org/adapter", {"config.json": json.dumps(fixture["tiny_config"]).encode(),
                                 "adapter_model.safetensors": safetensors_bytes({"a": np.zeros(2, np.float32)})})
    state = tiny_state(fixture)
    key = fixture["stem"]["key"]
    state[key] = np.zeros((state[key].shape[0], 4, 7, 7), np.float32)
    serve(hub, fixture, "org/rgbd", state=state)
    index = _resolve({"models": ["org/adapter", "org/rgbd"]})
    assert index["entries"]["org/adapter"]["status"].startswith(
        "skipped: org/adapter: model type 'resnet': it holds none of ['model.safetensors'")
    assert index["entries"]["org/rgbd"]["status"] == (
        f"skipped: org/rgbd: model type 'resnet': its stem '{key}' takes 4 input channels, not the 3 of RGB images; "
        "set stem_key to a stem over RGB images (or leave the repository out)")


def test_no_such_repository_or_revision_is_its_row(hub):
    serve(hub, load_fixtures()["vit"], "org/vit")
    index = _resolve({"models": ["org/missing", "org/vit@" + hub.repos["org/vit"]["commit"], "org/vit@v9"]})
    assert index["entries"]["org/missing"]["status"].startswith(
        "skipped: org/missing: the Hub refuses repository 'org/missing' without a token")
    assert index["entries"]["org/vit"]["status"] == "ok"  # the first request for a repository wins
    index = _resolve({"models": ["org/vit@v9"]})
    assert index["entries"]["org/vit"]["status"] == ("skipped: org/vit: the Hub has no repository 'org/vit' at "
                                                     "revision 'v9'; check the repository id and revision")


def test_a_gated_repository_is_its_row_naming_the_fix_until_the_token_may_read_it(hub, monkeypatch):
    serve(hub, load_fixtures()["dinov2"], "meta/gated")
    hub.repos["meta/gated"]["info"]["gated"] = "manual"
    status = _resolve({"models": ["meta/gated"]})["entries"]["meta/gated"]["status"]
    assert "without a token" in status and "set HF_TOKEN" in status
    monkeypatch.setenv("HF_TOKEN", "hf_not_accepted")
    status = _resolve({"models": ["meta/gated"]})["entries"]["meta/gated"]["status"]
    assert f"accept them at {hub.url}/meta/gated and set HF_TOKEN" in status
    hub.accepted_tokens.add("hf_not_accepted")
    entry = _resolve({"models": ["meta/gated"]})["entries"]["meta/gated"]
    assert entry["status"] == "ok" and read_stem(entry, policy=FAST).status == "ok"


# Network discipline -------------------------------------------------------------------------------------------

def test_retry_after_is_honoured_on_the_listing_and_on_files(hub):
    serve(hub, load_fixtures()["vit"], "org/vit")
    hub.retry_after = 2
    hub.faults["/api/models"].append("429")
    hub.faults["org/vit/config.json"].append("429")
    started = time.monotonic()
    index = _resolve({"search": {"author": "org"}})
    assert time.monotonic() - started >= 4  # two waits of 2 s, where the backoff alone is 0.01 s
    assert index["entries"]["org/vit"]["status"] == "ok"


def test_the_token_stays_off_the_cdn(monkeypatch, tmp_path):
    with HubImitation(cdn=True) as hub:
        _use(monkeypatch, tmp_path, hub)
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        state = serve(hub, load_fixtures()["convnext"], "org/convnext")
        entry = _resolve({"models": ["org/convnext"]})["entries"]["org/convnext"]
        stem = read_stem(entry, policy=FAST)
    np.testing.assert_array_equal(stem.weight, state[entry["stem"]["key"]].astype(np.float64))
    cdn = [auth for path, auth in hub.authorization if path.startswith("/cdn/")]
    hub_side = [auth for path, auth in hub.authorization if not path.startswith("/cdn/")]
    assert len(cdn) >= 4 and set(cdn) == {None}
    assert set(hub_side) == {"Bearer hf_secret"}


def test_no_network_fails_the_resolution_in_one_line_with_the_ways_out(monkeypatch, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(NetworkError, match=r"network: cannot connect to http://127.0.0.1:\d+ .*set HF_ENDPOINT to a "
                                           r"mirror"):
        _resolve({"search": {"author": "org"}})
    with pytest.raises(NetworkError):
        _resolve({"models": ["org/vit"]})


def test_offline_reads_come_from_the_cache_fetch_remote_fills(hub, monkeypatch):
    state = serve(hub, load_fixtures()["efficientnet"], "google/effnet")
    entry = _resolve({"models": ["google/effnet"]})["entries"]["google/effnet"]
    assert fetch_whole(entry)["bytes"] == entry["stem"]["file_size"]
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    before = len(hub.requests)
    stem = read_stem(entry, policy=FAST)
    assert len(hub.requests) == before and stem.meta["fetch"] == "cache"
    np.testing.assert_array_equal(stem.weight, state[entry["stem"]["key"]].astype(np.float64))
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE=1, and listing a search needs the Hub"):
        _resolve({"search": {"author": "google"}})


def test_limits_bound_what_resolution_reads_in_every_worker_thread(hub):
    for i in range(4):
        serve(hub, load_fixtures()["vit"], f"org/vit-{i}", seed=i)
    with applied(Limits(safetensors_header_mb=0.001)):  # 1,048 bytes: less than any config.json here
        index = _resolve({"search": {"author": "org"}}, workers=4)
    for entry in index["entries"].values():
        assert "limits.safetensors_header_mb" in entry["status"], entry["status"]


# Fine-tunes and their base ----------------------------------------------------------------------------------

def test_base_models_are_resolved_as_inits_or_say_why_not(hub):
    fixtures = load_fixtures()
    base = serve(hub, fixtures["vit"], "google/vit-base", seed=1)
    tuned = serve(hub, fixtures["vit"], "someone/vit-cats", seed=2, card_data={"base_model": "google/vit-base"})
    serve(hub, fixtures["vit"], "someone/vit-lost", seed=3, card_data={"base_model": "nobody/missing"})
    serve(hub, fixtures["vit"], "someone/vit-merge", seed=4, card_data={"base_model": ["a/b", "c/d"]})
    serve(hub, fixtures["swin"], "someone/swin-on-vit", seed=5, card_data={"base_model": "google/vit-base"})
    index = _resolve({"search": {"author": "someone"}, "init": "base_model"})
    entries = index["entries"]
    assert set(index["bases"]) == {"google/vit-base", "nobody/missing"}
    assert entries["someone/vit-cats"]["init"] == {"repo": "google/vit-base",
                                                   "commit": hub.repos["google/vit-base"]["commit"], "status": "ok"}
    assert entries["someone/vit-lost"]["init"]["status"].startswith("none: its base model cannot be read (skipped: "
                                                                    "nobody/missing: the Hub refuses")
    assert entries["someone/vit-merge"]["init"] == {"repo": None,
                                                    "status": "none: its card names 2 base models (a merge?)"}
    assert entries["someone/swin-on-vit"]["init"]["status"].startswith("none: its base model's stem is Conv2d "
                                                                       "[16, 3, 16, 16], its own Conv2d [8, 3, 4, 4]")
    stem = read_stem(entries["someone/vit-cats"], index["bases"]["google/vit-base"], policy=FAST)
    key = fixtures["vit"]["stem"]["key"]
    np.testing.assert_array_equal(stem.weight, tuned[key].astype(np.float64))
    np.testing.assert_array_equal(stem.init, base[key].astype(np.float64))


# Reruns --------------------------------------------------------------------------------------------------------

def test_a_refresh_reads_only_new_or_changed_repositories(hub):
    fixtures = load_fixtures()
    for i, family in enumerate(["vit", "resnet", "convnext", "regnet"]):
        serve(hub, fixtures[family], f"org/{family}", seed=i)
    first = _resolve({"search": {"author": "org"}})
    assert first["resolved"] == 4
    serve(hub, fixtures["resnet"], "org/resnet", seed=9)  # a new commit
    serve(hub, fixtures["deit"], "org/deit", seed=10)  # a new repository
    before = len(hub.requests)
    second = _resolve({"search": {"author": "org"}}, previous=first)
    files = [path for _, path, _ in hub.requests[before:] if "/resolve/" in path]
    assert second["resolved"] == 2 and second["entries"]["org/vit"]["reused"]
    assert second["entries"]["org/resnet"]["commit"] != first["entries"]["org/resnet"]["commit"]
    assert len(files) == 2 * 3  # config, preprocessor config and header of each
    assert {path.split("/resolve/")[0] for path in files} == {"/org/resnet", "/org/deit"}


def test_a_timm_repository_is_read_through_the_timm_table(hub):
    """timm's own repositories: config.json with architecture and pretrained_cfg, a bare state dict."""
    import timm

    from firstlayer_zoo.timm_table import load_timm_table

    tag = "test_resnet.r160_in1k"
    row = load_timm_table()[tag]
    model = timm.create_model(tag, pretrained=False)
    state = {name: value.detach().numpy() for name, value in model.state_dict().items()
             if value.dtype.is_floating_point}
    config = {"architecture": row["arch"], "num_classes": 1000,
              "pretrained_cfg": {**model.pretrained_cfg, "first_conv": row["first_conv"]}}
    hub.add_repo(f"timm/{tag}", {"config.json": json.dumps(config, default=str).encode(),
                                 "model.safetensors": safetensors_bytes(state)}, library="timm",
                 pipeline_tag="image-classification")
    entry = _resolve({"search": {"library": "timm"}})["entries"][f"timm/{tag}"]
    assert entry["status"] == "ok", entry["status"]
    assert (entry["layout"], entry["stem"]["key"], entry["stem"]["stride"]) == ("timm", "conv1.0.weight", 2)
    prep = entry["preprocessing"]
    assert (prep["crop"], prep["interpolation"]) == (model.pretrained_cfg["input_size"][-1],
                                                     model.pretrained_cfg["interpolation"])
    np.testing.assert_array_equal(read_stem(entry, policy=FAST).weight, state["conv1.0.weight"].astype(np.float64))
