"""The workflow on a torchvision dataset downloaded from a loopback server, subsampled, down to its basis."""

import hashlib
import json

import numpy as np
import pytest
import yaml

from conftest import direct_patches
from firstlayer_zoo.basis import PatchBasis
from firstlayer_zoo.dataset_sources import dataset_source
from firstlayer_zoo.preprocessing import Preprocessing
from test_datasets import _cifar10, served  # noqa: F401  (served is a fixture)
from workflow_helpers import TINY_CONFIG, snakemake, write_config


@pytest.mark.slow
def test_cifar_basis_from_a_served_archive_with_subsampling(served, tmp_path):  # noqa: F811
    folder, base_url = served
    archive, _ = _cifar10(folder)
    dataset = {"source": "cifar10", "url": f"{base_url}/{archive.name}",
               "md5": hashlib.md5(archive.read_bytes()).hexdigest(), "subsample": {"count": 6, "seed": 2}}
    zoos = yaml.safe_load(TINY_CONFIG.read_text())["zoos"]
    zoos["tiny"]["dataset"] = "cifar"
    config = write_config(tmp_path / "config.yaml", {"datasets": {"cifar": dataset}, "zoos": zoos})
    prep = Preprocessing.from_dict(zoos["tiny"]["preprocessing"])
    basis_path = f"results/bases/cifar/{prep.key}/k3_c3.npz"
    snakemake(tmp_path, "--cores", "2", "results/datasets/cifar/manifest.json", basis_path, config=config)

    manifest = json.loads((tmp_path / "results/datasets/cifar/manifest.json").read_text())
    assert (manifest["n_available"], manifest["n_images"]) == (10, 6)
    assert manifest["subsample"] == {"count": 6, "seed": 2}
    basis = PatchBasis.load(tmp_path / basis_path)
    assert basis.n_images == 6 and basis.meta["subsample"] == {"count": 6, "seed": 2}
    chosen = [prep.apply(image) for image in dataset_source("cifar", dataset).images(tmp_path / "results/datasets/cifar")]
    expected = np.cov(direct_patches(chosen, 3, prep.mean, prep.std), rowvar=False, bias=True)
    np.testing.assert_allclose(basis.covariance, expected, rtol=1e-10, atol=1e-13)
