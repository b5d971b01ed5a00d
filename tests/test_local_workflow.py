"""A folder zoo of good and hostile files through the snakemake command line: status rows, strict mode,
and incremental reruns read from Snakemake's own plan."""

import re
import shutil

import numpy as np
import onnx
import pandas as pd
import pytest
import yaml

from firstlayer_zoo.shards import shard_count, shard_name
from hostile_corpus import (
    expected_status,
    onnx_conv_model,
    secret_traces,
    stem_weights,
    write_corpus,
    write_good,
    write_onnx_corpus,
)
from workflow_helpers import snakemake

pytestmark = pytest.mark.slow


def folder_config(workdir, with_onnx=False, **analysis):
    zoos = {"local": {"source": "folder", "dataset": "photos", "root": str(workdir / "zoo"),
                      "stem_key": "stem.weight", "path_pattern": r"good(?P<seed>\d+)",
                      "preprocessing": {"resize": 48}}}
    if with_onnx:
        zoos["exported"] = {"source": "onnx", "dataset": "photos", "root": str(workdir / "onnx"),
                            "preprocessing": {"resize": 48}}
    config = {
        "datasets": {"photos": {"source": "skimage", "images": ["astronaut", "coffee", "chelsea"]}},
        "zoos": zoos,
        "analysis": analysis,
        "plots": {"fit_examples": 2},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def planned_jobs(output: str) -> dict[str, int]:
    """The dry run's job counts by rule, from its 'Job stats' table."""
    table = output.split("Job stats:")[1].split("total")[0]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def planned_shards(output: str) -> list[str]:
    blocks = re.findall(r"rule analyse_checkpoints:\n(.*?)(?:\n\n|\n\[|\Z)", output, re.DOTALL)
    return sorted(re.search(r"shard=([^,\s]+)", block).group(1) for block in blocks)


AGGREGATES = {"build_tables": 1, "plot_study": 1, "plot_bases": 1, "all": 1}


SHARD_SIZE = 4


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mixed")
    marker = workdir / "MARKER"
    expected = write_corpus(workdir / "zoo", marker)
    for seed in range(3):
        write_good(workdir / "zoo", f"good{seed}.safetensors", seed=seed)
    onnx_expected = write_onnx_corpus(workdir / "onnx")
    onnx.save(onnx_conv_model(stem_weights(20).numpy()), str(workdir / "onnx" / "net.onnx"))
    onnx.save(onnx_conv_model(stem_weights(21, (6, 1, 5, 5)).numpy(), group=3), str(workdir / "onnx" / "grouped.onnx"))
    # Small shards, so that the incremental test below can tell one shard from the others.
    config = folder_config(workdir, with_onnx=True, shard_size=SHARD_SIZE)
    snakemake(workdir, "--cores", "2", config=config)
    return workdir, config, marker, {**{f"local/{name}": (template, workdir / "zoo" / name)
                                        for name, template in expected.items()},
                                     **{f"exported/{name}": (template, workdir / "onnx" / name)
                                        for name, template in onnx_expected.items()}}


def test_mixed_folder_completes_with_a_status_row_per_file(mixed_run):
    workdir, _, marker, expected = mixed_run
    assert not marker.exists(), "a pickle ran code during the study"
    table = pd.read_parquet(workdir / "results" / "tables" / "checkpoints.parquet").set_index("checkpoint")
    for checkpoint, (template, path) in expected.items():
        assert table.loc[checkpoint, "status"] == expected_status(template, path), checkpoint
    good = table.loc[[f"local/good{seed}.safetensors" for seed in range(3)]]
    assert set(good["status"]) == {"ok"} and list(good["seed"]) == [0, 1, 2]
    onnx_row = table.loc["exported/net.onnx"]
    assert (onnx_row["status"], onnx_row["stride"], onnx_row["first_conv"]) == ("ok", 2, "stem")
    assert table.loc["exported/grouped.onnx", "status"] == (
        f"skipped: {workdir / 'onnx' / 'grouped.onnx'}: grouped stem (group=3): each filter sees 1 of the input "
        "channels; no c*k*k patch basis fits")
    assert len(table) == len(expected) + 3 + 2
    fits = pd.read_parquet(workdir / "results" / "tables" / "fits.parquet")
    assert sorted(fits["checkpoint"]) == ["exported/net.onnx"] + [f"local/good{s}.safetensors" for s in range(3)]
    # All four ok stems share one basis (5x5, RGB, same preprocessing): 4 * 3 / 2 pairs.
    assert len(pd.read_parquet(workdir / "results" / "tables" / "consistency.parquet")) == 6


def test_nothing_from_outside_the_zoo_appears_in_any_output(mixed_run):
    workdir, _, _, _ = mixed_run
    outputs = [path for path in (workdir / "results").rglob("*") if path.is_file()]
    assert any(".plan" in path.parts for path in outputs) and any("logs" in path.parts for path in outputs)
    for path in outputs:
        text = readable_text(path)
        for trace in secret_traces():
            assert trace not in text, (path, trace)


def readable_text(path) -> str:
    """A file's text as a reader would see it: tables and npz headers decoded (their bytes may be compressed
    or UTF-32), anything else as raw bytes."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_json()
    text = path.read_bytes().decode("latin-1")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            text += "".join(str(data[name]) for name in data.files if data[name].dtype.kind == "U")
    return text


def test_adding_removing_or_replacing_a_file_plans_only_its_shard_and_the_aggregates(mixed_run):
    workdir, config, _, _ = mixed_run
    before = snakemake(workdir, "--dry-run", config=config)
    assert "Nothing to be done" in before.stdout + before.stderr
    table = pd.read_parquet(workdir / "results" / "tables" / "checkpoints.parquet")
    n_files = int((table["zoo"] == "local").sum())
    count = shard_count(n_files, SHARD_SIZE)
    assert count == shard_count(n_files + 1, SHARD_SIZE) == shard_count(n_files - 1, SHARD_SIZE) > 2
    done = {path.name for path in (workdir / "results" / "analyses" / "local").glob("*.npz")}
    assert len(done) > 2  # several shards, so "only its shard" below means something

    write_good(workdir / "zoo", "good3.safetensors", seed=3)
    plan = snakemake(workdir, "--dry-run", config=config)
    output = plan.stdout + plan.stderr
    assert planned_jobs(output) == {"analyse_checkpoints": 1, **AGGREGATES}
    assert planned_shards(output) == [shard_name("good3.safetensors", count)]

    (workdir / "zoo" / "good3.safetensors").unlink()
    (workdir / "zoo" / "good2.safetensors").unlink()
    plan = snakemake(workdir, "--dry-run", config=config)
    output = plan.stdout + plan.stderr
    assert planned_jobs(output) == {"analyse_checkpoints": 1, **AGGREGATES}
    assert planned_shards(output) == [shard_name("good2.safetensors", count)]

    write_good(workdir / "zoo", "good1.safetensors", seed=11)  # replaced by a newer file
    plan = snakemake(workdir, "--dry-run", config=config)
    output = plan.stdout + plan.stderr
    assert planned_shards(output) == sorted({shard_name(name, count) for name in ["good1.safetensors",
                                                                                  "good2.safetensors"]})
    snakemake(workdir, "--cores", "2", config=config)
    table = pd.read_parquet(workdir / "results" / "tables" / "checkpoints.parquet")
    assert "local/good2.safetensors" not in set(table["checkpoint"])
    assert (table["status"] == "ok").sum() == 3


def test_strict_mode_fails_naming_the_file(tmp_path):
    (tmp_path / "zoo").mkdir()
    write_good(tmp_path / "zoo", "good0.safetensors", seed=0)
    marker = tmp_path / "MARKER"
    write_corpus(tmp_path / "corpus", marker)
    shutil.copy(tmp_path / "corpus" / "lfs.safetensors", tmp_path / "zoo" / "weights.safetensors")
    result = snakemake(tmp_path, "--cores", "1", config=folder_config(tmp_path, strict=True), check=False)
    assert result.returncode != 0
    bad = tmp_path / "zoo" / "weights.safetensors"
    assert str(bad) in result.stderr  # among the failed job's inputs
    (log,) = (tmp_path / "results" / "logs" / "analyse_checkpoints" / "local").glob("*.log")
    assert (f"analysis.strict: checkpoint local/weights.safetensors ({bad}) cannot be analysed: skipped: {bad}: "
            "Git LFS pointer file, not the checkpoint itself; run `git lfs pull` in its repository") in log.read_text()
    assert not list((tmp_path / "results" / "analyses").rglob("*.npz"))
