"""torchvision and torch.hub sources, downloading from a loopback server into a temporary TORCH_HOME."""

import hashlib
import io
import textwrap

import numpy as np
import pytest
import torch

from firstlayer_zoo.downloads import DownloadError
from firstlayer_zoo.stems import StemError, torch_stem
from firstlayer_zoo.zoo_sources.torch_hub import TorchHubSource, TorchvisionWeightsSource
from firstlayer_zoo.zoo_sources.base import GeometryCache
from firstlayer_zoo.zoo_sources import extract_stem
from loopback import LoopbackServer


def _pickled(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture
def server(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with LoopbackServer() as running:
        yield running


def _torchvision_weights(monkeypatch, data: bytes, hash_prefix: str):
    """Point ResNet18_Weights.IMAGENET1K_V1 at a file named with `hash_prefix`, as torchvision names its files."""
    from torchvision.models import ResNet18_Weights

    weights = ResNet18_Weights.IMAGENET1K_V1
    monkeypatch.setattr(weights.value, "url", f"https://download.pytorch.org/models/resnet18-{hash_prefix}.pth")
    return f"/models/resnet18-{hash_prefix}.pth"


def _torchvision_source(tmp_path, server):
    options = {"source": "torchvision", "dataset": "photos", "weights": ["ResNet18_Weights.IMAGENET1K_V1"],
               "mirror": server.url + "/models"}
    return TorchvisionWeightsSource("tv", options, str(tmp_path), GeometryCache(tmp_path / "geometry.json"))


def test_torchvision_weights_plan_with_their_own_transform(tmp_path, server):
    (spec,) = _torchvision_source(tmp_path, server).checkpoints()
    assert (spec.arch, spec.first_conv, spec.kernel_size, spec.in_chans) == ("resnet18", "conv1", 7, 3)
    assert (spec.preprocessing.resize, spec.preprocessing.crop) == (256, 224)
    assert spec.locator.startswith(server.url + "/models/resnet18-") and spec.uri == spec.locator
    assert spec.stride == 2
    assert spec.extra["dataset_tag"] == "imagenet1k"


def test_torchvision_download_passes_the_hash_check(tmp_path, server, monkeypatch):
    from torchvision.models import resnet18

    state = resnet18().state_dict()
    data = _pickled(state)
    path = _torchvision_weights(monkeypatch, data, hashlib.sha256(data).hexdigest()[:8])
    server.add(path, data)
    (spec,) = _torchvision_source(tmp_path, server).checkpoints()
    stem = extract_stem(spec)
    np.testing.assert_array_equal(stem.weight, state["conv1.weight"].double().numpy())
    assert stem.stride == 2 and stem.meta["bytes_fetched"] == len(data) == stem.meta["file_size"]
    again = extract_stem(spec)  # from torch.hub's cache: nothing fetched
    assert again.meta["bytes_fetched"] == 0 and server.sent[path] == len(data)


def test_torchvision_download_with_a_wrong_hash_is_refused_and_not_kept(tmp_path, server, monkeypatch):
    data = _pickled({"conv1.weight": torch.zeros(64, 3, 7, 7)})
    path = _torchvision_weights(monkeypatch, data, "0badc0de")
    server.add(path, data)
    (spec,) = _torchvision_source(tmp_path, server).checkpoints()
    with pytest.raises(DownloadError, match="hash check"):
        extract_stem(spec)
    assert not list((tmp_path / "torch_home" / "hub" / "checkpoints").glob("resnet18*"))


HUBCONF = '''
dependencies = ["torch"]
import torch


class TinyCifar(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.fc = torch.nn.Linear(8, 10)


def tiny_cifar(pretrained=False):
    model = TinyCifar()
    if pretrained:
        state = torch.hub.load_state_dict_from_url("{url}", progress=False, check_hash=True, weights_only=True)
        model.load_state_dict(state)
    return model
'''


def _hub_repo(tmp_path, server):
    torch.manual_seed(0)
    state = {"conv1.weight": torch.randn(8, 3, 3, 3), "fc.weight": torch.randn(10, 8), "fc.bias": torch.zeros(10)}
    data = _pickled(state)
    url = server.add(f"/cifar/tiny-{hashlib.sha256(data).hexdigest()[:8]}.pt", data)
    repo = tmp_path / "hubrepo"
    repo.mkdir()
    (repo / "hubconf.py").write_text(textwrap.dedent(HUBCONF.format(url=url)))
    return repo, state


def _hub_source(tmp_path, repo, **entry):
    options = {"source": "torchhub", "dataset": "photos", "trust_repo": True, "hub_source": "local",
               "preprocessing": {"resize": 32}, "entries": [{"entry": f"{repo}:tiny_cifar",
                                                              "kwargs": {"pretrained": True}, **entry}]}
    return TorchHubSource("hub", options, str(tmp_path), GeometryCache(tmp_path / "geometry.json"))


def test_torchhub_entry_loads_weights_from_the_server(tmp_path, server):
    repo, state = _hub_repo(tmp_path, server)
    (spec,) = _hub_source(tmp_path, repo).checkpoints()
    assert (spec.name, spec.kernel_size, spec.in_chans) == ("tiny_cifar", 3, 3)
    assert (spec.locator, spec.uri) == (f"{repo}:tiny_cifar", f"torchhub://{repo}:tiny_cifar")
    stem = extract_stem(spec)
    assert stem.status == "ok" and stem.first_conv == "conv1"
    np.testing.assert_array_equal(stem.weight, state["conv1.weight"].double().numpy())


def test_torchhub_stem_that_contradicts_the_plan_is_skipped_with_the_fix(tmp_path, server):
    repo, _ = _hub_repo(tmp_path, server)
    (spec,) = _hub_source(tmp_path, repo, kernel_size=5).checkpoints()
    stem = extract_stem(spec)
    assert stem.status.startswith("skipped:") and "set kernel_size/in_chans" in stem.status


def test_torchhub_entry_without_a_repo_names_the_key(tmp_path):
    options = {"source": "torchhub", "dataset": "photos", "trust_repo": True,
               "preprocessing": {}, "entries": ["cifar10_resnet20"]}
    with pytest.raises(ValueError, match="zoos.hub.entries"):
        TorchHubSource("hub", options, str(tmp_path), GeometryCache(tmp_path / "g.json")).checkpoints()


def test_a_torch_models_stem_is_the_conv_its_cfg_declares_else_its_first_conv2d():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 8, 3))
    assert torch_stem(model) == ("0", model[0])
    with pytest.raises(ValueError, match="declares no first_conv"):
        torch_stem(model, declared_only=True)
    model.pretrained_cfg = {"first_conv": ["1", "0"]}  # a rep-param pair: the first is the stem
    assert torch_stem(model) == torch_stem(model, declared_only=True) == ("1", model[1])
    with pytest.raises(StemError, match="Sequential has no Conv2d"):
        torch_stem(torch.nn.Sequential(torch.nn.Linear(3, 4)))
