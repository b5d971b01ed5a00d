"""End to end: a study of a timm zoo served by a Hub imitation and a zoo archive, through the snakemake CLI."""

import hashlib
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from firstlayer_zoo.tables import SCHEMAS
from loopback import HubImitation, LoopbackServer
from test_archive_zoo import archive_options, make_zoo_archive
from workflow_helpers import snakemake, write_config

pytestmark = pytest.mark.slow
TAGS = ["test_byobnet.r160_in1k", "test_efficientnet.r160_in1k", "test_nfnet.r160_in1k"]


@pytest.fixture(scope="module")
def remote_run(tmp_path_factory):
    import timm
    from safetensors.torch import save

    workdir = tmp_path_factory.mktemp("remote")
    archive_path, _ = make_zoo_archive(workdir / "archive_build")
    archive = open(archive_path, "rb").read()
    with HubImitation() as hub, LoopbackServer() as files:
        for tag in TAGS:
            state = timm.create_model(tag, pretrained=False).state_dict()
            hub.add_file(f"timm/{tag}", "model.safetensors", save({k: v.contiguous() for k, v in state.items()}))
        url = files.add("/zoos/zoo_archive.zip", archive)
        options = archive_options(url, hashlib.sha256(archive).hexdigest())
        config = write_config(workdir / "config.yaml", {"zoos": {
            "hub": {"source": "timm", "dataset": "photos", "models": [*TAGS[:2], "test_nfnet*"]},
            "mz": {key: value for key, value in options.items() if key not in ("step_pattern", "labels_key")},
        }})
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(workdir / "hf_home")}
        snakemake(workdir, "--cores", "2", config=config, env=env)
        yield workdir, hub


def test_checkpoints_table_records_both_remote_zoos(remote_run):
    workdir, hub = remote_run
    path = workdir / "results" / "tables" / "checkpoints.parquet"
    assert pq.read_schema(path).equals(SCHEMAS["checkpoints"], check_metadata=False)
    table = pd.read_parquet(path).set_index("checkpoint")
    assert set(table.index) == {*(f"hub/{tag}" for tag in TAGS), "mz/00_seed=1-step000010", "mz/00_seed=1-step000020",
                                "mz/01_seed=2-step000010", "mz/01_seed=2-step000020"}
    assert set(table["status"]) == {"ok"}
    timm_rows = table[table["source"] == "timm"]
    assert (timm_rows["dataset_tag"] == "in1k").all()
    assert (timm_rows["bytes_fetched"] < timm_rows["file_size"]).all()
    for tag in TAGS:
        assert timm_rows.loc[f"hub/{tag}", "bytes_fetched"] == hub.sent[f"timm/{tag}/model.safetensors"]
    archive_rows = table[table["source"] == "archive"]
    assert archive_rows["init_known"].all() and archive_rows["init_subtracted"].all()
    assert sorted(zip(archive_rows["seed"], archive_rows["step"])) == [(1, 10), (1, 20), (2, 10), (2, 20)]
    assert json.loads(archive_rows.loc["mz/01_seed=2-step000020", "hyperparameters"])["optim.lr"] == 0.02


def test_profiles_of_every_checkpoint_are_in_the_tables(remote_run):
    workdir, _ = remote_run
    profiles = pd.read_parquet(workdir / "results" / "tables" / "profiles.parquet")
    assert profiles["checkpoint"].nunique() == 7
    assert profiles.groupby("checkpoint").size().eq(27).all()
    consistency = pd.read_parquet(workdir / "results" / "tables" / "consistency.parquet")
    # Three bases: byobnet and efficientnet share timm's eval transform, nfnet's (mean 0.5) has
    # one checkpoint and so no pair, the archive's four checkpoints make six pairs.
    assert consistency.groupby("basis").size().sort_values().tolist() == [1, 6]


def test_a_second_run_has_nothing_to_do(remote_run):
    workdir, _ = remote_run
    config = workdir / "config.yaml"
    result = snakemake(workdir, "--dry-run", config=config, env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert "Nothing to be done" in result.stdout + result.stderr
