"""Bases of one (dataset, preprocessing) come from one reading of its images into one file; a kernel size added
later gets a file of its own, a normalisation added later only a basis made from the pixel statistics already
measured, and nothing already computed is computed again."""

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


def _folder_config(workdir, stems, zoo_name="local", preprocessing=None):
    """A folder zoo of {file name: kernel size} stems, all on one preprocessing of the photos, two files a shard
    (added to the config already in `workdir`, if any)."""
    zoo = workdir / zoo_name
    zoo.mkdir(exist_ok=True)
    for name, k in stems.items():
        weights = torch.from_numpy(np.random.default_rng(k).normal(size=(8, 3, k, k)).astype(np.float32))
        save_file({"stem.weight": weights}, str(zoo / f"{name}.safetensors"))
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text()) if path.exists() else {
        "datasets": {"photos": PHOTOS}, "zoos": {}, "analysis": {"shard_size": 2}}
    config["zoos"][zoo_name] = {"source": "folder", "dataset": "photos", "root": str(zoo), "stem_key": "stem.weight",
                                "preprocessing": preprocessing or {"resize": 48}}
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


def test_preprocessings_that_differ_only_in_normalisation_share_one_pixel_statistics_job(tmp_path):
    _folder_config(tmp_path, {"a": 3})
    _, config = _folder_config(tmp_path, {"b": 7}, zoo_name="other",
                               preprocessing={"resize": 48, "mean": [0.5] * 3, "std": [0.2] * 3})
    study = Study(config | {"outdir": str(tmp_path / "results")}, cache_path=tmp_path / "geometry.json")
    pixels = Preprocessing(resize=48).pixels.key
    assert {path.split("/results/")[1] for path in study.basis_files.values()} == {
        f"bases/photos/{Preprocessing(resize=48).key}/k3_c3.npz",
        f"bases/photos/{Preprocessing(resize=48, mean=[0.5] * 3, std=[0.2] * 3).key}/k7_c3.npz"}
    (measured,) = study.pixel_statistics_jobs
    assert measured.split("/results/")[1] == f"patch_statistics/photos/{pixels}/k3-7_c3.npz"
    assert study.pixel_statistics_jobs[measured] == ("photos", pixels, (3, 7), 3)
    assert {path for key in study.bases
            for path in study.basis_inputs(key.dataset, key.preprocessing, (key.kernel_size,), 3)} == {measured}


def _planned(output):
    table = output.split("Job stats:")[1].split("total")[0]
    jobs = {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}
    blocks = re.findall(r"rule patch_statistics:\n(.*?)(?:\n\n|\n\[|\Z)", output, re.DOTALL)
    statistics = sorted(re.search(r"output: \S+/(k[\d-]+_c3\.npz)", block).group(1) for block in blocks)
    return jobs, statistics


@pytest.mark.slow
def test_adding_a_kernel_size_to_a_known_preprocessing_computes_only_its_basis(tmp_path):
    # Three files in two shards; a fourth keeps two shards, so "only its shard" means something.
    config, _ = _folder_config(tmp_path, {"a": 3, "b": 5, "c": 5})
    jobs, bases = _planned(snakemake(tmp_path, "--dry-run", config=config).stdout)
    assert jobs["patch_statistics"] == 1 and bases == ["k3-5_c3.npz"]
    snakemake(tmp_path, "--cores", "2", config=config)
    pixels = Preprocessing(resize=48).pixels.key
    (done,) = (tmp_path / "results" / "bases" / "photos").glob("*/k3-5_c3.npz")
    measured = tmp_path / "results" / "patch_statistics" / "photos" / pixels / "k3-5_c3.npz"
    stamps = {path: path.stat().st_mtime_ns for path in (done, measured)}

    _folder_config(tmp_path, {"d": 7})
    jobs, statistics = _planned(snakemake(tmp_path, "--dry-run", config=config).stdout)
    assert jobs == {"patch_statistics": 1, "patch_basis": 1, "analyse_checkpoints": 1, "build_tables": 1,
                    "plot_study": 1, "plot_bases": 1, "all": 1}
    assert statistics == ["k7_c3.npz"]
    snakemake(tmp_path, "--cores", "2", config=config)
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps
    basis = PatchBasis.load(done.parent / "k7_c3.npz", 7)
    assert basis.kernel_size == 7 and basis.n_images == 3
    log = (tmp_path / "results" / "logs" / "patch_statistics" / "photos" / pixels / "k7_c3.log").read_text()
    assert re.search(r"k=7: engine \w+ on \d images: 48x\d+ images, k=7: about", log)


@pytest.mark.slow
def test_a_new_normalisation_of_known_pixels_computes_only_its_basis_from_the_statistics_measured(tmp_path):
    """timm has hundreds of preprocessings that differ only in mean and std: their images are read once."""
    config, _ = _folder_config(tmp_path, {"a": 3, "b": 5})
    snakemake(tmp_path, "--cores", "2", config=config)
    measured = tmp_path / "results" / "patch_statistics" / "photos" / Preprocessing(resize=48).pixels.key
    stamps = {path: path.stat().st_mtime_ns for path in measured.iterdir()}
    assert [path.name for path in stamps] == ["k3-5_c3.npz"]

    normalised = {"resize": 48, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.25]}
    _folder_config(tmp_path, {"c": 5}, zoo_name="other", preprocessing=normalised)
    jobs, statistics = _planned(snakemake(tmp_path, "--dry-run", config=config).stdout)
    assert jobs == {"patch_basis": 1, "analyse_checkpoints": 1, "build_tables": 1, "plot_study": 1,
                    "plot_bases": 1, "all": 1}
    assert statistics == []
    snakemake(tmp_path, "--cores", "2", config=config)
    assert {path: path.stat().st_mtime_ns for path in measured.iterdir()} == stamps
    preprocessing = Preprocessing(**normalised)
    made = PatchBasis.load(tmp_path / "results" / "bases" / "photos" / preprocessing.key / "k5_c3.npz", 5)
    alone = source_basis(dataset_source("photos", PHOTOS), None, preprocessing, 5, device="cpu", progress=False,
                         offsets=(2, 5, 10))
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(made, name), getattr(alone, name))
    assert Preprocessing.from_dict(made.meta["preprocessing"]) == preprocessing


def test_a_basis_does_not_depend_on_its_jobs_blas_threads():
    """A job's BLAS threads are its Snakemake threads, which follow its bases' cost: the eigenvectors must not.
    (768 dimensions: under OPENBLAS_NUM_THREADS=1 and =2 an unpinned eigh gives different last bits.)"""
    program = ("import hashlib, numpy as np; from firstlayer_zoo.basis import eigendecomposition; "
               "a = np.random.default_rng(0).standard_normal((768, 800)); "
               "values, vectors = eigendecomposition(a @ a.T); "
               "print(hashlib.sha256(values.tobytes() + vectors.tobytes()).hexdigest())")
    digests = {threads: subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True,
                                       env={**os.environ, "OPENBLAS_NUM_THREADS": threads}).stdout
               for threads in ("1", "2")}
    assert digests["1"] == digests["2"] and len(digests["1"]) == 65
