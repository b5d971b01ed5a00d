"""Every hostile file at once in one study through the snakemake command line (a folder, an ONNX, a Keras and an
archive zoo over a folder dataset): status rows, strict mode, and incremental reruns read from Snakemake's own
plan."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import onnx
import pandas as pd
import pytest
import yaml
from PIL import Image

from firstlayer_zoo.shards import shard_count, shard_name
from hostile_corpus import (
    DATASET_CASES,
    DELETED_DURING_RUN,
    OK,
    ROUND_THREE,
    expected_status,
    onnx_conv_model,
    secret_traces,
    stem_weights,
    write_corpus,
    write_good,
    write_onnx_corpus,
)
from loopback import LoopbackServer
from workflow_helpers import ROOT, snakemake

pytestmark = pytest.mark.slow
# The combined study's zoos: (zoo name, source, root under the workdir); an archive's root is where its listing job
# unpacks it.
ZOOS = [("local", "folder", "zoo"), ("exported", "onnx", "onnx"), ("keras_models", "keras", "keras"),
        ("mz", "archive", "results/zoos/mz/listed")]


def folder_config(workdir, with_onnx=False, archive_url=None, **analysis):
    """A folder zoo (and with_onnx: the ONNX and Keras zoos; archive_url: the archive zoo) over a folder dataset of
    three photos, every image resized to 48 pixels."""
    prep = {"preprocessing": {"resize": 48}}
    zoos = {"local": {"source": "folder", "dataset": "photos", "root": str(workdir / "zoo"),
                      "stem_key": "stem.weight", "path_pattern": r"good(?P<seed>\d+)|step(?P<step>\d+)", **prep}}
    if with_onnx:
        zoos["exported"] = {"source": "onnx", "dataset": "photos", "root": str(workdir / "onnx"), **prep}
        zoos["keras_models"] = {"source": "keras", "dataset": "photos", "root": str(workdir / "keras"), **prep}
    if archive_url:
        data = (workdir / "zoo_archive.zip").read_bytes()
        zoos["mz"] = {"source": "archive", "dataset": "photos", "url": archive_url,
                      "sha256": hashlib.sha256(data).hexdigest(), "checkpoints": "*/checkpoint_*/checkpoints",
                      "step_pattern": r"checkpoint_(\d+)", "params_file": "params.json", "seed_key": "seed",
                      "first_conv": "stem", "kernel_size": 5, "in_chans": 3, **prep}
    images = workdir / "images"
    if not images.is_dir():
        from skimage import data as skimage_data

        images.mkdir()
        for name in ("astronaut", "coffee", "chelsea"):
            Image.fromarray(getattr(skimage_data, name)()).save(images / f"{name}.png")
        for write in DATASET_CASES:
            write(images)
    config = {
        "datasets": {"photos": {"source": "folder", "path": str(images)}},
        "zoos": zoos,
        "analysis": analysis,
        "plots": {"fit_examples": 2},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_deleting(workdir, config, doomed, when="rule patch_statistics:"):
    """Run the study with --keep-going, deleting `doomed` once Snakemake starts the job `when` names: after the
    study was planned, before any shard (each waits for its basis) has read it."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(config), "--cores", "2", "--keep-going"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = threading.Timer(900, process.kill)  # a hang guard, not a speed assertion
    deadline.start()
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if when in line and doomed.exists():
                doomed.unlink()
        process.wait()
    finally:
        deadline.cancel()
    console = "".join(output)
    assert process.returncode == 0, console[-8000:]
    assert not doomed.exists(), f"{when!r} never appeared"
    return console


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
    """Every hostile file of the corpus at once; one file deleted while the study runs, then a rerun without it.

    Returns the workdir, config, marker, each checkpoint's (status template, path) and the first run's tables.
    """
    workdir = tmp_path_factory.mktemp("mixed")
    marker = workdir / "MARKER"
    templates = {"local": write_corpus(workdir / "zoo", marker), "exported": write_onnx_corpus(workdir / "onnx")}
    for seed in range(3):
        write_good(workdir / "zoo", f"good{seed}.safetensors", seed=seed)
        templates["local"][f"good{seed}.safetensors"] = OK
    onnx.save(onnx_conv_model(stem_weights(20).numpy()), str(workdir / "onnx" / "net.onnx"))
    onnx.save(onnx_conv_model(stem_weights(21, (6, 1, 5, 5)).numpy(), group=3), str(workdir / "onnx" / "grouped.onnx"))
    templates["exported"].update({"net.onnx": OK, "grouped.onnx": "{path}: grouped stem (group=3): each filter sees 1 "
                                  "of the input channels; no c*k*k patch basis fits"})
    archive_build = workdir / "archive_build"
    for zoo, source, root in ZOOS:
        for write in ROUND_THREE[source]:
            templates.setdefault(zoo, {}).update(write(archive_build if source == "archive" else workdir / root))
    shutil.make_archive(str(workdir / "zoo_archive"), "zip", archive_build)
    expected = {f"{zoo}/{name}": (template.replace("{root}", root), workdir / root / name)
                for zoo, _, root in ZOOS for name, template in templates[zoo].items()}
    with LoopbackServer() as server:
        url = server.add("/zoo_archive.zip", (workdir / "zoo_archive.zip").read_bytes())
        # Small shards, so that the incremental test below can tell one shard from the others.
        config = folder_config(workdir, with_onnx=True, archive_url=url, shard_size=SHARD_SIZE)
        console = run_deleting(workdir, config, workdir / "zoo" / DELETED_DURING_RUN)
        tables = {name: pd.read_parquet(workdir / "results" / "tables" / f"{name}.parquet")
                  for name in ("checkpoints", "fits", "consistency")}
        # The next run plans without the deleted file: its shard reruns, nothing else (files tracked by params).
        plan = snakemake(workdir, "--dry-run", config=config)
        assert planned_jobs(plan.stdout + plan.stderr) == {"analyse_checkpoints": 1, **AGGREGATES}
        snakemake(workdir, "--cores", "2", config=config)
    return workdir, config, marker, expected, tables, console


def test_mixed_folder_completes_with_a_status_row_per_file(mixed_run):
    workdir, _, marker, expected, tables, console = mixed_run
    assert not marker.exists(), "a pickle ran code during the study"
    table = tables["checkpoints"].set_index("checkpoint")
    assert sorted(table.index) == sorted(expected)
    for checkpoint, (template, path) in expected.items():
        assert table.loc[checkpoint, "status"] == expected_status(template, path), checkpoint
    good = table.loc[[f"local/good{seed}.safetensors" for seed in range(3)]]
    assert list(good["seed"]) == [0, 1, 2]
    onnx_row = table.loc["exported/net.onnx"]
    assert (onnx_row["stride"], onnx_row["first_conv"]) == (2, "stem")
    analysed = sorted(checkpoint for checkpoint, (template, _) in expected.items() if template == OK)
    assert sorted(tables["fits"]["checkpoint"]) == analysed
    # Every ok stem shares one basis (5x5, RGB, the same preprocessing): n (n - 1) / 2 pairs.
    assert len(tables["consistency"]) == len(analysed) * (len(analysed) - 1) // 2
    assert "Traceback" not in console  # no job failed, none printed more than its line


def test_nothing_from_outside_the_zoo_appears_in_any_output(mixed_run):
    workdir, *_ = mixed_run
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
    workdir, config, *_ = mixed_run
    before = snakemake(workdir, "--dry-run", config=config)
    assert "Nothing to be done" in before.stdout + before.stderr
    table = pd.read_parquet(workdir / "results" / "tables" / "checkpoints.parquet")
    analysed = int((table["status"] == "ok").sum())
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
    assert (table["status"] == "ok").sum() == analysed - 1


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
