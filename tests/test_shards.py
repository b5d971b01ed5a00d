"""Checkpoints in shards: stable membership, one file per shard, and one bad checkpoint costing only itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from firstlayer_zoo import shards
from firstlayer_zoo.analysis import analyse_stem
from firstlayer_zoo.basis import PatchBasis
from firstlayer_zoo.downloads import DownloadError
from firstlayer_zoo.zoo_sources.local_files import FolderSource
from firstlayer_zoo.shard_analysis import analyse_shard
from firstlayer_zoo.shards import assign_shards, load_analyses, save_analyses, shard_count
from firstlayer_zoo.stems import StemError
from firstlayer_zoo import zoo_sources
from firstlayer_zoo.zoo_sources.base import GeometryCache
from firstlayer_zoo.zoo_sources import extract_stem
from hostile_corpus import STEM_KEY, write_corpus, write_good


def folder_specs(root, tmp_path):
    options = {"source": "folder", "dataset": "photos", "root": str(root), "stem_key": STEM_KEY,
               "preprocessing": {"resize": 48}}
    return FolderSource("local", options, str(tmp_path / "results"), GeometryCache(tmp_path / "cache.json")).checkpoints()


def named(n, start=0):
    return [type("Spec", (), {"name": f"ckpt{i:05d}.safetensors"})() for i in range(start, start + n)]


@pytest.mark.parametrize(("n", "size", "count"), [(0, 4, 1), (1, 4, 1), (4, 4, 1), (5, 4, 2), (9, 4, 4), (2000, 128, 16)])
def test_shard_count_is_the_smallest_power_of_two_that_keeps_the_average_within_size(n, size, count):
    assert shard_count(n, size) == count


def test_every_checkpoint_is_in_exactly_one_shard_and_adding_one_changes_one_shard():
    before = assign_shards(named(300), 64)
    members = [spec.name for specs in before.values() for spec in specs]
    assert sorted(members) == sorted(spec.name for spec in named(300)) and len(before) == 8
    after = assign_shards(named(301), 64)
    changed = [shard for shard in after if [s.name for s in after[shard]] != [s.name for s in before.get(shard, [])]]
    assert changed == [shards.shard_name("ckpt00300.safetensors", 8)]
    # Removing one changes its shard only; the others keep their members and names.
    removed = assign_shards(named(299), 64)
    assert [shard for shard in before if [s.name for s in before[shard]] != [s.name for s in removed.get(shard, [])]] \
        == [shards.shard_name("ckpt00299.safetensors", 8)]


def power_law_basis(p: int) -> PatchBasis:
    rng = np.random.default_rng(0)
    eigenvectors, _ = np.linalg.qr(rng.normal(size=(p, p)))
    eigenvalues = 10.0 ** -np.linspace(0, 4, p)
    return PatchBasis(mean=np.zeros(p), covariance=(eigenvectors * eigenvalues) @ eigenvectors.T,
                      eigenvalues=eigenvalues, eigenvectors=eigenvectors, n_patches=1000, n_images=1,
                      kernel_size=5, in_chans=3, meta={})


@pytest.fixture()
def zoo(tmp_path):
    root = tmp_path / "zoo"
    write_corpus(root, tmp_path / "MARKER")
    for seed in range(3):
        write_good(root, f"good{seed}.safetensors", seed=seed)
    specs = folder_specs(root, tmp_path)
    basis_path = tmp_path / "basis.npz"
    power_law_basis(75).save(basis_path)
    good = next(spec for spec in specs if spec.name == "good0.safetensors")
    return specs, {good.basis.slug: str(basis_path)}


def test_a_shard_of_good_and_hostile_files_analyses_each_as_alone_and_round_trips(zoo, tmp_path):
    specs, bases = zoo
    analyses = analyse_shard(specs, bases, subtract_init=True, strict=False, progress=False)
    basis = PatchBasis.load(next(iter(bases.values())))
    for spec, analysis in zip(specs, analyses):
        alone = analyse_stem(spec, extract_stem(spec), basis if spec.basis else None, True)
        assert analysis.status == alone.status, spec.name
        np.testing.assert_array_equal(analysis.energy, alone.energy)
    assert sum(analysis.ok for analysis in analyses) == 3 < len(analyses)
    save_analyses(tmp_path / "shard.npz", analyses)
    loaded = load_analyses(tmp_path / "shard.npz")
    assert [a.checkpoint for a in loaded] == [a.checkpoint for a in analyses]
    assert [a.status for a in loaded] == [a.status for a in analyses]
    for original, back in zip(analyses, loaded):
        np.testing.assert_array_equal(back.energy, original.energy)
        np.testing.assert_array_equal(back.eigenvalues, original.eigenvalues)
        assert (back.energy_init is None) == (original.energy_init is None)
        assert back.measures == original.measures and back.stem_meta == original.stem_meta


def test_an_unforeseen_error_in_one_checkpoint_is_its_own_skipped_row(zoo, monkeypatch, capsys):
    specs, bases = zoo
    good = [spec for spec in specs if spec.name.startswith("good")]
    original = zoo_sources.extract_stem

    def failing(spec):
        if spec.name == "good1.safetensors":
            raise RuntimeError("SECRET-BYTES-FROM-THE-FILE")
        return original(spec)

    monkeypatch.setattr(zoo_sources, "extract_stem", failing)
    analyses = analyse_shard(good, bases, subtract_init=True, strict=False, progress=False)
    status = {spec.name: analysis.status for spec, analysis in zip(good, analyses)}
    assert status["good0.safetensors"] == status["good2.safetensors"] == "ok"
    assert status["good1.safetensors"].startswith(f"skipped: {good[1].uri}: reading it failed unexpectedly (RuntimeError)")
    assert "SECRET" not in status["good1.safetensors"]
    assert "SECRET-BYTES-FROM-THE-FILE" in capsys.readouterr().err  # the job's log keeps the traceback
    with pytest.raises(StemError, match="analysis.strict: checkpoint local/good1.safetensors"):
        analyse_shard(good, bases, subtract_init=True, strict=True, progress=False)


def test_a_failed_download_fails_the_shard_instead_of_leaving_a_skipped_row(zoo, monkeypatch):
    specs, bases = zoo

    def offline(spec):
        raise DownloadError("https://hub.example/x: no connection; fetch the study's remote inputs first")

    monkeypatch.setattr(zoo_sources, "extract_stem", offline)
    with pytest.raises(DownloadError, match="no connection"):
        analyse_shard(specs, bases, subtract_init=True, strict=False, progress=False)


def test_shard_membership_is_the_same_in_another_process():
    """Another interpreter (another hash seed) plans the same shards: a rerun finds every shard's file."""
    names = [spec.name for spec in named(50)]
    script = ("import sys, json; sys.path.insert(0, sys.argv[1]); from firstlayer_zoo.shards import shard_name; "
              "print(json.dumps([shard_name(name, 8) for name in json.loads(sys.stdin.read())]))")
    there = subprocess.run([sys.executable, "-c", script, str(Path(__file__).resolve().parents[1] / "scripts")],
                           input=json.dumps(names), capture_output=True, text=True, check=True, timeout=120,
                           env={**os.environ, "PYTHONHASHSEED": "7"})
    assert json.loads(there.stdout) == [shards.shard_name(name, 8) for name in names]


def test_a_shard_of_an_older_layout_or_other_measures_is_refused_in_one_line_saying_to_rerun(zoo, tmp_path):
    from firstlayer_zoo.atomic import read_npz, write_npz
    from firstlayer_zoo.shards import SHARD_LAYOUT, ShardLayoutError

    specs, bases = zoo
    good = [spec for spec in specs if spec.name.startswith("good")]
    save_analyses(tmp_path / "shard.npz", analyse_shard(good, bases, subtract_init=True, strict=False,
                                                         progress=False))
    header, arrays = read_npz(tmp_path / "shard.npz")
    # The first layout had no number, and fits, whitening and image-space numbers instead of measures.
    old = {"analyses": [{**entry, "fit": {}, "whitening": {}} for entry in header["analyses"]],
           "shapes": header["shapes"]}
    write_npz(tmp_path / "old.npz", old, **arrays)
    with pytest.raises(ShardLayoutError) as raised:
        load_analyses(tmp_path / "old.npz")
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'old.npz'}: a shard of layout 1")
    assert f"reads layout {SHARD_LAYOUT}" in message and "snakemake --forcerun analyse_checkpoints" in message
    write_npz(tmp_path / "fewer.npz", {**header, "measures": header["measures"][:-1]}, **arrays)
    with pytest.raises(ShardLayoutError, match=rf"other measures .*\({header['measures'][-1]} differ\): rerun"):
        load_analyses(tmp_path / "fewer.npz")
