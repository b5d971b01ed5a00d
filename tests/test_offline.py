"""Remote sources without a network: one clear line naming the endpoint and the ways out, and the documented
way round it (fetch where there is network, then run offline). "No network" is a closed port on 127.0.0.1."""

import socket

import numpy as np
import pytest

from firstlayer_zoo.downloads import DownloadError, RetryPolicy, download
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.zoo_sources.timm_hub import TimmSource
from firstlayer_zoo.zoo_sources.torch_hub import TorchvisionWeightsSource
from firstlayer_zoo.zoo_sources.base import GeometryCache
from firstlayer_zoo.zoo_sources import extract_stem
from loopback import HubImitation

TAG = "test_resnet.r160_in1k"


@pytest.fixture
def closed_port():
    """A loopback URL nothing listens on: every connection is refused, as on a machine without network."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def quick_retries(monkeypatch):
    """Short waits between attempts: the number of attempts is what is under test, not the wait."""
    monkeypatch.setattr(RetryPolicy, "wait", lambda self, attempt: None)


@pytest.fixture
def hf_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    return tmp_path / "hf_home"


def timm_spec(tmp_path) -> CheckpointSpec:
    source = TimmSource("hub", {"source": "timm", "dataset": "photos", "models": [TAG]}, str(tmp_path),
                        GeometryCache(tmp_path / "geometry.json"))
    (spec,) = source.checkpoints()
    return spec


def assert_one_clear_line(error, endpoint, *ways_out):
    from firstlayer_zoo.downloads import NetworkError

    assert isinstance(error, NetworkError)
    message = str(error)
    assert "\n" not in message and message.startswith(f"network: cannot connect to {endpoint} ")
    assert "ConnectionRefusedError" in message or "ConnectError" in message, message
    for way in ways_out:
        assert way in message, (way, message)


def test_timm_without_network_says_which_endpoint_and_the_ways_out(tmp_path, monkeypatch, closed_port, hf_home,
                                                                  quick_retries):
    monkeypatch.setenv("HF_ENDPOINT", closed_port)
    with pytest.raises(DownloadError) as failed:
        extract_stem(timm_spec(tmp_path))
    assert_one_clear_line(failed.value, closed_port, "HF_ENDPOINT", "HF_HUB_OFFLINE=1",
                          "snakemake --cores 4 fetch_remote")
    assert failed.value.__cause__ is None and failed.value.__suppress_context__


def test_a_fetched_timm_checkpoint_is_read_offline_from_the_cache(tmp_path, monkeypatch, closed_port, hf_home):
    import timm
    from safetensors.torch import save

    from firstlayer_zoo.zoo_sources import fetch_checkpoint

    state = timm.create_model(TAG, pretrained=False).state_dict()
    with HubImitation() as hub:
        hub.add_file(f"timm/{TAG}", "model.safetensors", save({k: v.contiguous() for k, v in state.items()}))
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        spec = timm_spec(tmp_path)
        record = fetch_checkpoint(spec)
    assert record["fetched"].startswith(str(hf_home)) and record["bytes"] > 0
    monkeypatch.setenv("HF_ENDPOINT", closed_port)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    stem = extract_stem(spec)
    assert stem.status == "ok" and stem.meta["fetch"] == "cache"
    np.testing.assert_array_equal(stem.weight, state["conv1.0.weight"].double().numpy())


def test_offline_without_a_filled_cache_says_how_to_fill_it(tmp_path, monkeypatch, closed_port, hf_home):
    monkeypatch.setenv("HF_ENDPOINT", closed_port)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match=r"HF_HUB_OFFLINE=1 and its weights are not in the Hugging Face cache .*"
                                            r"snakemake --cores 4 fetch_remote"):
        extract_stem(timm_spec(tmp_path))


def test_archive_and_ranged_downloads_give_up_after_a_few_refused_connections(tmp_path, closed_port, quick_retries):
    from firstlayer_zoo.downloads import read_range

    attempts = []
    policy = RetryPolicy(attempts=6, connect_attempts=3)
    with pytest.raises(DownloadError) as failed:
        download(f"{closed_port}/zoo.zip", tmp_path / "zoo.zip", policy=policy, log=attempts.append)
    assert_one_clear_line(failed.value, closed_port, "snakemake --cores 4 fetch_remote")
    assert len(attempts) == 2  # retried twice, then given up: not six attempts with a growing backoff
    with pytest.raises(DownloadError) as failed:
        read_range(f"{closed_port}/model.safetensors", 0, 100, policy=policy)
    assert_one_clear_line(failed.value, closed_port)
    assert not list(tmp_path.iterdir())


def test_torchvision_weights_without_network(tmp_path, monkeypatch, closed_port):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    options = {"source": "torchvision", "dataset": "photos", "weights": ["ResNet18_Weights.IMAGENET1K_V1"],
               "mirror": closed_port + "/models"}
    (spec,) = TorchvisionWeightsSource("tv", options, str(tmp_path), GeometryCache(tmp_path / "g.json")).checkpoints()
    with pytest.raises(DownloadError) as failed:
        extract_stem(spec)
    assert_one_clear_line(failed.value, closed_port, "`mirror`", "TORCH_HOME", "snakemake --cores 4 fetch_remote")


def test_dataset_download_without_network(tmp_path, closed_port):
    from firstlayer_zoo.dataset_sources import dataset_source

    source = dataset_source("cifar", {"source": "cifar10", "url": f"{closed_port}/cifar-10-python.tar.gz",
                                      "md5": "0" * 32})
    with pytest.raises(DownloadError) as failed:
        source.prepare(tmp_path / "cifar")
    assert_one_clear_line(failed.value, closed_port, "datasets.cifar.url", "snakemake --cores 4 fetch_remote")
