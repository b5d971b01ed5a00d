"""The whole workflow on the tiny config, run through the snakemake command line."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from firstlayer_zoo.tables import SCHEMAS
from workflow_helpers import snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    snakemake(workdir, "--cores", "2")
    return workdir


def _table(workdir, name):
    path = workdir / "results" / "tables" / f"{name}.parquet"
    assert pq.read_schema(path).names == SCHEMAS[name].names
    assert pq.read_schema(path).equals(SCHEMAS[name], check_metadata=False)
    return pd.read_parquet(path)


def test_checkpoints_table_follows_the_contract(tiny_run):
    table = _table(tiny_run, "checkpoints")
    # 1 arch x 2 seeds x 2 label regimes x 2 kept steps.
    assert len(table) == 8
    assert table["checkpoint"].is_unique
    assert set(table["status"]) == {"ok"}
    assert set(table["labels"]) == {"true", "random"}
    assert set(table["step"]) == {4, 8}
    assert set(table["seed"]) == {0, 1}
    row = table.iloc[0]
    assert row["zoo"] == "tiny" and row["source"] == "train" and row["arch"] == "test_resnet"
    assert row["first_conv"] == "conv1.0"
    assert (row["kernel_size"], row["in_chans"], row["out_channels"], row["stride"]) == (3, 3, 16, 2)
    assert table["init_known"].all() and table["init_subtracted"].all()
    for uri in table["uri"]:
        assert (tiny_run / uri).is_file()


def test_profiles_table_follows_the_contract(tiny_run):
    profiles = _table(tiny_run, "profiles")
    assert profiles.groupby("checkpoint").size().eq(27).all()
    for _, group in profiles.groupby("checkpoint"):
        assert list(group["component"]) == list(range(1, 28))
        assert np.all(np.diff(group["eigenvalue"]) <= 0)
        assert group["energy"].max() == pytest.approx(1.0)
        assert group["energy_init"].max() == pytest.approx(1.0)


def test_fits_table_follows_the_contract(tiny_run):
    fits = _table(tiny_run, "fits")
    assert len(fits) == 8
    assert (fits["tau"] > 0).all()
    assert fits["fit_r"].between(-1, 1).all()
    assert fits["frac_whitened"].between(0, 1).all()
    assert (fits["input_spread"] > 0).all()


def test_consistency_table_pairs_each_basis_once(tiny_run):
    consistency = _table(tiny_run, "consistency")
    assert len(consistency) == 8 * 7 // 2
    assert consistency["basis"].nunique() == 1
    assert consistency["r"].between(-1, 1).all()
    assert (consistency["checkpoint_a"] != consistency["checkpoint_b"]).all()


def test_plots_and_logs_exist(tiny_run):
    plots = tiny_run / "results" / "plots"
    for name in ["profiles", "fits", "fit_quality", "training_time", "whitening"]:
        assert (plots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((plots / "consistency").glob("*.png"))) == 1
    assert (tiny_run / "results" / "logs" / "build_tables.log").read_text().count("rows") == 5


def test_rerun_has_nothing_to_do(tiny_run):
    result = snakemake(tiny_run, "--cores", "1", "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_html_report_holds_every_plot(tiny_run):
    snakemake(tiny_run, "--report", "report.html")
    html = (tiny_run / "report.html").read_text(errors="replace")
    for name in ["profiles.png", "fits.png", "training_time.png", "whitening.png"]:
        assert name in html


def test_train_run_keeps_init_and_metadata(tiny_run):
    from firstlayer_zoo.stems import read_safetensors_metadata

    run = tiny_run / "results" / "zoos" / "tiny" / "runs" / "test_resnet-s0-random"
    assert sorted(p.name for p in run.glob("*.safetensors")) == [
        "step000000.safetensors", "step000004.safetensors", "step000008.safetensors"]
    meta = read_safetensors_metadata(run / "step000008.safetensors")
    assert meta["labels"] == "random" and meta["seed"] == "0" and meta["step"] == "8"
    assert json.loads(meta["preprocessing"])["resize"] == 48


def test_consistency_summary_groups_every_pair_and_the_init(tiny_run):
    summary = _table(tiny_run, "consistency_summary")
    consistency = _table(tiny_run, "consistency")
    init = summary[summary["relation"] == "trained vs its own initialisation"]
    assert init["n_pairs"].sum() == 8
    pairs = summary[summary["relation"] != "trained vs its own initialisation"]
    assert pairs["n_pairs"].sum() == len(consistency)
    # One architecture: every pair shares it; seeds, labels and steps vary.
    assert pairs["relation"].str.startswith("same arch").all()
    assert "same arch, other labels, other seed, other step" in set(pairs["relation"])
    fits = _table(tiny_run, "fits")
    assert fits["r_init"].between(-1, 1).all()
    row = init.iloc[0]
    assert row["median_r"] == pytest.approx(fits["r_init"].median())
