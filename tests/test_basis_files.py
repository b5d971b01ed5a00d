"""Bases of one (dataset, preprocessing) come from one reading of its images into one file; a kernel size added
later gets a file of its own, and nothing already computed is computed again."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from firstlayer_zoo.basis import PatchBasis, save_bases
from firstlayer_zoo.dataset_sources import dataset_source
from firstlayer_zoo.patchstats import source_basis, source_bases
from firstlayer_zoo.plan import Study
from firstlayer_zoo.preprocessing import Preprocessing
from workflow_helpers import snakemake

PHOTOS = {"source": "skimage", "images": ["astronaut", "coffee", "chelsea"]}
ARRAYS = ("mean", "covariance", "eigenvalues", "eigenvectors", "offsets", "cross_covariances")


def test_one_reading_gives_each_kernel_size_the_basis_it_gets_alone(tmp_path):
    source = dataset_source("photos", PHOTOS)
    prep = Preprocessing(resize=40)
    together = source_bases(source, None, prep, [3, 7], device="cpu", progress=False, offsets=(2, 5))
    save_bases(tmp_path / "k3-7_c3.npz", together)
    for basis in together:
        alone = source_basis(source, None, prep, basis.kernel_size, device="cpu", progress=False, offsets=(2, 5))
        loaded = PatchBasis.load(tmp_path / "k3-7_c3.npz", basis.kernel_size)
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(loaded, name), getattr(alone, name))
        assert (loaded.kernel_size, loaded.n_patches, loaded.n_images) == (alone.kernel_size, alone.n_patches, 3)
    with pytest.raises(ValueError, match=r"holds the bases of kernel sizes \[3, 7\], not 5"):
        PatchBasis.load(tmp_path / "k3-7_c3.npz", 5)


def _folder_config(workdir, stems):
    """A folder zoo of {file name: kernel size} stems, all on one preprocessing of the photos, two files a shard."""
    zoo = workdir / "zoo"
    zoo.mkdir(exist_ok=True)
    for name, k in stems.items():
        weights = torch.from_numpy(np.random.default_rng(k).normal(size=(8, 3, k, k)).astype(np.float32))
        save_file({"stem.weight": weights}, str(zoo / f"{name}.safetensors"))
    config = {"datasets": {"photos": PHOTOS},
              "zoos": {"local": {"source": "folder", "dataset": "photos", "root": str(zoo),
                                 "stem_key": "stem.weight", "preprocessing": {"resize": 48}}},
              "analysis": {"shard_size": 2}}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


def test_a_kernel_size_already_in_a_file_is_read_from_it_and_the_rest_share_a_new_one(tmp_path):
    _, config = _folder_config(tmp_path, {"a": 3, "b": 5, "c": 7})
    config["outdir"] = str(tmp_path / "results")
    study = Study(yaml.safe_load(yaml.safe_dump(config)) | {"analysis": {"shard_size": 2}},
                  cache_path=tmp_path / "geometry.json")
    assert sorted({path.rsplit("/", 1)[1] for path in study.basis_files.values()}) == ["k3-5-7_c3.npz"]
    folder = tmp_path / "results" / "bases" / "photos" / next(iter(study.preprocessing))
    folder.mkdir(parents=True)
    (folder / "k5-9_c3.npz").write_bytes(b"")
    study = Study(yaml.safe_load(yaml.safe_dump(config)) | {"analysis": {"shard_size": 2}},
                  cache_path=tmp_path / "geometry.json")
    assert {key.kernel_size: path.rsplit("/", 1)[1] for key, path in study.basis_files.items()} == \
        {3: "k3-7_c3.npz", 5: "k5-9_c3.npz", 7: "k3-7_c3.npz"}


def _planned(output):
    table = output.split("Job stats:")[1].split("total")[0]
    jobs = {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}
    blocks = re.findall(r"rule patch_statistics:\n(.*?)(?:\n\n|\n\[|\Z)", output, re.DOTALL)
    bases = sorted(re.search(r"output: \S+/(k[\d-]+_c3\.npz)", block).group(1) for block in blocks)
    return jobs, bases


@pytest.mark.slow
def test_adding_a_kernel_size_to_a_known_preprocessing_computes_only_its_basis(tmp_path):
    # Three files in two shards; a fourth keeps two shards, so "only its shard" means something.
    config, _ = _folder_config(tmp_path, {"a": 3, "b": 5, "c": 5})
    jobs, bases = _planned(snakemake(tmp_path, "--dry-run", config=config).stdout)
    assert jobs["patch_statistics"] == 1 and bases == ["k3-5_c3.npz"]
    snakemake(tmp_path, "--cores", "2", config=config)
    first = tmp_path / "results" / "bases" / "photos"
    (done,) = first.glob("*/k3-5_c3.npz")
    stamp = done.stat().st_mtime_ns

    _folder_config(tmp_path, {"d": 7})
    jobs, bases = _planned(snakemake(tmp_path, "--dry-run", config=config).stdout)
    assert jobs == {"patch_statistics": 1, "analyse_checkpoints": 1, "build_tables": 1, "plot_study": 1,
                    "plot_bases": 1, "all": 1}
    assert bases == ["k7_c3.npz"]
    snakemake(tmp_path, "--cores", "2", config=config)
    assert done.stat().st_mtime_ns == stamp
    basis = PatchBasis.load(done.parent / "k7_c3.npz", 7)
    assert basis.kernel_size == 7 and basis.n_images == 3
    log = (tmp_path / "results" / "logs" / "patch_statistics" / "photos" / done.parent.name / "k7_c3.log").read_text()
    assert re.search(r"k=7: engine \w+ on \d images: 48x\d+ images, k=7: about", log)


def test_a_basis_does_not_depend_on_its_jobs_blas_threads():
    """A job's BLAS threads are its Snakemake threads, which follow its bases' cost: the eigenvectors must not."""
    program = ("import hashlib, numpy as np; from firstlayer_zoo.basis import eigendecomposition; "
               "a = np.random.default_rng(0).standard_normal((768, 800)); "
               "values, vectors = eigendecomposition(a @ a.T); "
               "print(hashlib.sha256(values.tobytes() + vectors.tobytes()).hexdigest())")
    digests = {threads: subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True,
                                       env={**os.environ, "OPENBLAS_NUM_THREADS": threads}).stdout
               for threads in ("1", "2")}
    assert digests["1"] == digests["2"] and len(digests["1"]) == 65
