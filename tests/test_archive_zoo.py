"""The archive source: a zoo archive in the layout of Schürholt et al.'s Model Zoos, served on 127.0.0.1."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from firstlayer_zoo.zoo_sources.archive import ArchiveSource
from firstlayer_zoo.downloads import DownloadError, RetryPolicy
from firstlayer_zoo.zoo_sources import extract_stem
from loopback import LoopbackServer

EPOCHS = (0, 10, 20)


def make_zoo_archive(folder, seeds=(1, 2)):
    """Runs `NN_seed=S/` with params.json and `checkpoint_EEEEEE/checkpoints` (a pickled state dict)."""
    zoo = folder / "zoo"
    stems = {}
    for index, seed in enumerate(seeds):
        run = zoo / f"{index:02d}_seed={seed}"
        run.mkdir(parents=True)
        (run / "params.json").write_text(json.dumps({"seed": seed, "optim": {"lr": 0.01 * (index + 1)},
                                                     "model": {"type": "CNN"}}))
        generator = torch.Generator().manual_seed(seed)
        for epoch in EPOCHS:
            weight = torch.randn(8, 3, 3, 3, generator=generator)
            stems[(seed, epoch)] = weight.double().numpy()
            (run / f"checkpoint_{epoch:06d}").mkdir()
            torch.save({"module_list.0.weight": weight, "module_list.0.bias": torch.zeros(8)},
                       run / f"checkpoint_{epoch:06d}" / "checkpoints")
    path = shutil.make_archive(str(folder / "zoo_archive"), "zip", zoo)
    return path, stems


def archive_options(url, sha256):
    return {"source": "archive", "dataset": "photos", "url": url, "sha256": sha256,
            "checkpoints": "*/checkpoint_*/checkpoints", "step_pattern": r"checkpoint_(\d+)",
            "params_file": "params.json", "seed_key": "seed", "labels_key": None, "arch": "CNN",
            "first_conv": "module_list.0", "kernel_size": 3, "in_chans": 3, "stride": 1,
            "preprocessing": {"resize": 32}}


@pytest.fixture
def served_archive(tmp_path):
    path, stems = make_zoo_archive(tmp_path / "build")
    data = open(path, "rb").read()
    with LoopbackServer() as server:
        yield server, server.add("/zoos/zoo_archive.zip", data), hashlib.sha256(data).hexdigest(), stems


def test_archive_is_indexed_with_seeds_epochs_and_hyperparameters(tmp_path, served_archive):
    _, url, sha256, stems = served_archive
    source = ArchiveSource("mz", archive_options(url, sha256), str(tmp_path / "results"), cache=None)
    source.write_listing(source.list_checkpoints(log=lambda _: None))
    specs = source.listed_checkpoints()
    assert sorted((spec.seed, spec.step) for spec in specs) == [(1, 10), (1, 20), (2, 10), (2, 20)]
    spec = next(spec for spec in specs if (spec.seed, spec.step) == (2, 20))
    assert spec.name == "01_seed=2-step000020"
    assert json.loads(spec.extra["hyperparameters"]) == {"seed": 2, "optim.lr": 0.02, "model.type": "CNN"}
    assert spec.init_locator.endswith("01_seed=2/checkpoint_000000/checkpoints")
    stem = extract_stem(spec)
    np.testing.assert_allclose(stem.weight, stems[(2, 20)], rtol=1e-6)
    np.testing.assert_allclose(stem.init, stems[(2, 0)], rtol=1e-6)


def test_archive_with_a_wrong_checksum_is_never_unpacked(tmp_path, served_archive, monkeypatch):
    _, url, _, _ = served_archive
    # A mismatch is retried as a corrupted transfer would be; the backoff between attempts is not under test.
    monkeypatch.setattr(RetryPolicy, "delay", lambda policy, attempt: 0.01)
    source = ArchiveSource("mz", archive_options(url, "0" * 64), str(tmp_path / "results"), cache=None)
    with pytest.raises(DownloadError, match="sha256"):
        source.list_checkpoints(log=lambda _: None)
    assert not (tmp_path / "results" / "zoos" / "mz" / "listed").exists()
    assert not (tmp_path / "results" / "zoos" / "mz" / "download" / "zoo_archive.zip").exists()


def test_archive_glob_matching_nothing_names_the_key(tmp_path, served_archive):
    _, url, sha256, _ = served_archive
    options = {**archive_options(url, sha256), "checkpoints": "*/weights/*.pt"}
    with pytest.raises(ValueError, match=r"zoos.mz.checkpoints: '\*/weights/\*.pt' matches no file"):
        ArchiveSource("mz", options, str(tmp_path / "results"), cache=None).list_checkpoints(log=lambda _: None)
