"""The whole workflow on the tiny config, run through the snakemake command line."""

import json

import pytest

import workflow_checks
from workflow_helpers import snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    snakemake(workdir, "--cores", "2")
    return workdir


def test_checkpoints_table_follows_the_contract(tiny_run):
    workflow_checks.check_checkpoints_table_follows_the_contract(tiny_run)


def test_profiles_table_follows_the_contract(tiny_run):
    workflow_checks.check_profiles_table_follows_the_contract(tiny_run)


def test_fits_table_follows_the_contract(tiny_run):
    workflow_checks.check_fits_table_follows_the_contract(tiny_run)


def test_consistency_table_pairs_each_basis_once(tiny_run):
    workflow_checks.check_consistency_table_pairs_each_basis_once(tiny_run)


def test_plots_and_logs_exist(tiny_run):
    workflow_checks.check_plots_and_logs_exist(tiny_run)


def test_consistency_values_follow_from_the_profiles(tiny_run):
    workflow_checks.check_consistency_values_follow_from_the_profiles(tiny_run)


def test_consistency_summary_groups_every_pair_and_the_init(tiny_run):
    workflow_checks.check_consistency_summary_groups_every_pair_and_the_init(tiny_run)


def test_rerun_has_nothing_to_do(tiny_run):
    result = snakemake(tiny_run, "--cores", "1", "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_html_report_holds_every_plot(tiny_run):
    snakemake(tiny_run, "--report", "report.html")
    html = (tiny_run / "report.html").read_text(errors="replace")
    for name in ["profiles.png", "fits.png", "training_time.png", "whitening.png", "autocorrelation.png",
                 "colour.png"]:
        assert name in html


def test_train_run_keeps_init_and_metadata(tiny_run):
    from safetensors import safe_open

    run = tiny_run / "results" / "zoos" / "tiny" / "runs" / "test_resnet-s0-random"
    assert sorted(p.name for p in run.glob("*.safetensors")) == [
        "step000000.safetensors", "step000004.safetensors", "step000008.safetensors"]
    with safe_open(str(run / "step000008.safetensors"), framework="numpy") as handle:
        meta = handle.metadata()
    assert meta["labels"] == "random" and meta["seed"] == "0" and meta["step"] == "8"
    assert json.loads(meta["preprocessing"])["resize"] == 48
