"""The `hf` zoo source against the Hub imitation: listed by its job into a pinned index, planned (shards and
patch bases) from it in the same process, stems read with their base model as the init, reruns that ask the Hub
nothing, refreshes that change only the shards of new or changed repositories, and the whole workflow end to end.
"""

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from firstlayer_zoo.limits import Limits
from firstlayer_zoo.plan import Study
from firstlayer_zoo.shards import shard_count, shard_name
from firstlayer_zoo.zoo_sources import extract_stem, fetch_checkpoint
from firstlayer_zoo.zoo_sources.huggingface import checkpoint_name
from hf_families import BASES, FINE_TUNES, fine_tuned, load_fixtures, serve, small_hub, tiny_state
from loopback import HubImitation
from workflow_helpers import ROOT, snakemake

VIT = "google/vit-base-patch16-224-in21k"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with HubImitation() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        yield server


def hub_config(tmp_path, **options) -> dict:
    zoo = {"source": "hf", "dataset": "photos", "search": {"pipeline_tag": "image-classification"},
           "init": "base_model", **options}
    return {"outdir": str(tmp_path / "results"), "datasets": {"photos": {"source": "skimage"}},
            "zoos": {"hub": zoo}, "analysis": {"shard_size": 2}}


def list_zoo(config: dict, tmp_path: Path) -> str:
    """Rule list_zoo's script, run here as Snakemake runs it; its log."""
    log = tmp_path / "list_zoo.log"
    runpy.run_path(str(ROOT / "scripts" / "list_zoo.py"), init_globals={"snakemake": SimpleNamespace(
        log=[str(log)], wildcards=SimpleNamespace(zoo="hub"),
        params=SimpleNamespace(options=config["zoos"]["hub"], outdir=config["outdir"], limits=Limits().to_dict()))})
    return log.read_text()


def specs_by_name(study: Study) -> dict:
    return {spec.name: spec for specs in study.shards("hub").values() for spec in specs}


def test_the_listing_job_pins_an_index_and_the_study_plans_shards_and_bases_from_it_at_once(hub, tmp_path):
    small_hub(hub)
    config = hub_config(tmp_path)
    study = Study(config, cache_path=tmp_path / "g.json")
    assert study.bases == [] and not study.listed("hub")  # nothing is known of a Hub zoo before its job
    log = list_zoo(config, tmp_path)
    assert "9 repositories (8 ok, 0 excluded), 10 resolved now" in log  # and the one base model not found
    index = json.loads((tmp_path / "results" / "zoos" / "hub" / "hub_index.json").read_text())
    assert index["order"][:2] == list(BASES) and set(index["bases"]) == {"nobody/missing"}
    specs = specs_by_name(study)
    assert sorted(specs) == sorted(checkpoint_name(repo) for repo in index["order"])
    # The same Study, asked again (as Snakemake asks after the job), plans every basis the listing needs.
    assert {basis.kernel_size for basis in study.bases} == {16, 7, 3}
    for shard, members in study.shards("hub").items():
        assert set(study.shard_bases("hub", shard)) == {spec.basis.slug for spec in members if spec.basis}
        assert study.shard_input_files("hub", shard) == []  # pinned entries: the specs stand for the listing

    tuned = specs[checkpoint_name("ana/vit-cats")]
    base_commit = hub.repos[VIT]["commit"]
    assert tuned.label == f"hf://ana/vit-cats@{hub.repos['ana/vit-cats']['commit']}"
    assert tuned.init_locator == f"hf://{VIT}@{base_commit}"
    assert tuned.extra["base_model"] == VIT and tuned.extra["init_note"] == f"base model {VIT}@{base_commit}"
    assert (tuned.arch, tuned.kernel_size, tuned.stride, tuned.extra["layout"]) == ("vit", 16, 16, "vit")
    lost = specs[checkpoint_name("eve/vit-lost")]
    assert lost.init_locator is None and lost.extra["init_note"].startswith(
        "none: its base model cannot be read (skipped: nobody/missing: the Hub refuses repository")
    assert specs[checkpoint_name(VIT)].extra["init_note"] == "none: its card names no base_model"
    assert specs[checkpoint_name("apple/mobilevit-small")].channel_order == "bgr"
    custom = specs[checkpoint_name("fay/custom-vit")]
    assert custom.basis is None and custom.refused.startswith("fay/custom-vit: model type 'my_vit' is not in "
                                                              "hf_stems.csv; set stem_key")


def test_stems_are_read_with_their_base_model_as_init_and_bgr_models_in_rgb_order(hub, tmp_path):
    weights = small_hub(hub)
    config = hub_config(tmp_path)
    study = Study(config, cache_path=tmp_path / "g.json")
    list_zoo(config, tmp_path)
    specs = specs_by_name(study)
    key = load_fixtures()["vit"]["stem"]["key"]
    stem = extract_stem(specs[checkpoint_name("ana/vit-cats")])
    np.testing.assert_array_equal(stem.weight, weights["ana/vit-cats"][key].astype(np.float64))
    np.testing.assert_array_equal(stem.init, weights[VIT][key].astype(np.float64))
    assert stem.meta["fetch"] == "range" and stem.meta["bytes_fetched"] == weights[VIT][key].nbytes
    key = load_fixtures()["mobilevit"]["stem"]["key"]
    stem = extract_stem(specs[checkpoint_name("apple/mobilevit-small")])
    np.testing.assert_array_equal(stem.weight, weights["apple/mobilevit-small"][key][:, ::-1].astype(np.float64))
    assert extract_stem(specs[checkpoint_name("fay/custom-vit")]).status.startswith("skipped: fay/custom-vit: model")
    # Without init: base_model the same listing gives no init.
    plain = Study(hub_config(tmp_path, init="none"), cache_path=tmp_path / "g.json")
    spec = specs_by_name(plain)[checkpoint_name("ana/vit-cats")]
    assert spec.init_locator is None and spec.extra["init_note"] is None and extract_stem(spec).init is None


def test_a_rerun_asks_the_hub_nothing_and_a_refresh_changes_only_new_or_changed_repositories(hub, tmp_path):
    small_hub(hub)
    config = hub_config(tmp_path)
    list_zoo(config, tmp_path)
    first = Study(config, cache_path=tmp_path / "g.json")
    before = {shard: [spec.to_dict() for spec in specs] for shard, specs in first.shards("hub").items()}
    fixtures = load_fixtures()
    serve(hub, fixtures["vit"], "ana/vit-cats", state=fine_tuned(tiny_state(fixtures["vit"], 100), 999),
          card_data={"base_model": VIT}, downloads=9_000)  # a new commit
    serve(hub, fixtures["resnet"], "gus/resnet-cars", seed=7, card_data={"base_model": "microsoft/resnet-50"},
          downloads=1)  # a new repository
    hub.repos["bo/vit-dogs"]["info"]["downloads"] += 5  # the Hub's counters move every day

    asked = len(hub.requests)
    log = list_zoo(config, tmp_path)  # the listing job run again (its config changed), without refresh
    # Only what the Hub refused before (the missing base model) is asked again: a token or a name may fix it.
    assert [path for _, path, _ in hub.requests[asked:]] == ["/api/models/nobody/missing"]
    assert "1 resolved now" in log
    pinned = Study(config, cache_path=tmp_path / "g.json")
    assert {shard: [spec.to_dict() for spec in specs] for shard, specs in pinned.shards("hub").items()} == before

    refreshed_config = hub_config(tmp_path, refresh=True)
    log = list_zoo(refreshed_config, tmp_path)
    assert "10 repositories" in log and "3 resolved now" in log  # the new, the changed, the missing base
    refreshed = Study(refreshed_config, cache_path=tmp_path / "g.json")
    after = {shard: [spec.to_dict() for spec in specs] for shard, specs in refreshed.shards("hub").items()}
    count = shard_count(10, 2)
    assert len(after) == len(before) and count == shard_count(9, 2)
    changed = {shard for shard in after if after[shard] != before.get(shard)}
    assert changed == {shard_name(checkpoint_name(repo), count) for repo in ("ana/vit-cats", "gus/resnet-cars")}


def test_fetch_remote_fills_the_cache_that_offline_reads_use(hub, tmp_path, monkeypatch):
    weights = small_hub(hub)
    config = hub_config(tmp_path)
    study = Study(config, cache_path=tmp_path / "g.json")
    list_zoo(config, tmp_path)
    spec = specs_by_name(study)[checkpoint_name("dee/resnet-flowers")]
    record = fetch_checkpoint(spec)
    assert record["bytes"] > 0 and record["base"]["bytes"] > 0
    assert fetch_checkpoint(specs_by_name(study)[checkpoint_name("fay/custom-vit")])["fetched"] is None
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    asked = len(hub.requests)
    stem = extract_stem(spec)
    assert len(hub.requests) == asked and stem.meta["fetch"] == "cache"
    key = load_fixtures()["resnet"]["stem"]["key"]
    np.testing.assert_array_equal(stem.init, weights["microsoft/resnet-50"][key].astype(np.float64))


def test_the_schema_takes_the_sources_options_and_refuses_what_the_hub_would_not(tmp_path):
    import jsonschema

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())

    def check(zoo):
        jsonschema.validate({"datasets": {"photos": {"source": "skimage"}}, "zoos": {"hub": {
            "source": "hf", "dataset": "photos", **zoo}}}, schema)

    check({"models": ["google/vit-base-patch16-224", "facebook/convnext-tiny-224@main",
                      {"repo": "me/odd", "revision": "v1", "stem_key": "stem.weight",
                       "preprocessing": {"resize": 224}}],
           "search": {"author": "google", "library": "transformers", "pipeline_tag": "image-classification",
                      "tags": ["vit"], "sort": "likes", "limit": 10},
           "exclude": ["*-384"], "refresh": True, "init": "base_model", "stem_key": {"me/odd": "stem.weight"},
           "preprocessing": {"resize": 256, "crop": 224}})
    for bad in ({}, {"models": ["no-owner"]}, {"search": {"sort": "stars"}}, {"search": {"limit": 0}},
                {"models": ["a/b"], "init": "scratch"}, {"models": ["a/b"], "revision": "main"}):
        with pytest.raises(jsonschema.ValidationError):
            check(bad)


def test_a_fine_tune_pair_shares_a_base_model_relation(tmp_path):
    """consistency.py's relations gain "same base model" wherever a zoo knows base models."""
    from firstlayer_zoo.consistency import relation_name
    from firstlayer_zoo.settings import ConsistencySettings
    from firstlayer_zoo.tables import consistency_tables

    checkpoints = pd.DataFrame({"checkpoint": list("abcd"), "arch": ["vit"] * 4, "labels": None, "seed": None,
                                "step": None, "base_model": [VIT, VIT, "other/base", None]})
    rng = np.random.default_rng(0)
    energies = rng.random((4, 12))
    tables = consistency_tables({"basis": (np.array(list("abcd")), energies)}, checkpoints,
                                pd.DataFrame({"checkpoint": [], "r_init": []}), ConsistencySettings())
    relations = set(tables["consistency_summary"]["relation"])
    assert relations == {"same arch, same base model", "same arch, other base model",
                         "same arch, base model unknown"}
    assert relation_name(3**4, ("arch", "labels", "seed", "step", "base_model")) == (
        "other arch, other labels, other seed, other step, same base model")


# The workflow end to end ----------------------------------------------------------------------------------------

def stamps(folder: Path) -> dict[str, int]:
    """Every file under a folder by its path there, with its modification time: what a run rewrote."""
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


@pytest.mark.slow
def test_a_first_run_plans_the_listed_bases_and_completes_and_a_refresh_reruns_only_the_new_shards(tmp_path):
    workdir = tmp_path / "study"
    workdir.mkdir()
    config = hub_config(workdir, refresh=True)
    config["outdir"] = "results"
    config["datasets"]["photos"]["images"] = ["astronaut", "coffee", "chelsea"]
    (workdir / "hub.yaml").write_text(yaml.safe_dump(config))
    with HubImitation() as server:
        env = {"HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf_home")}
        small_hub(server)
        first = snakemake(workdir, "--cores", "2", config=workdir / "hub.yaml", env=env)
        checkpoints = pd.read_parquet(workdir / "results" / "tables" / "checkpoints.parquet").set_index("checkpoint")
        fits = pd.read_parquet(workdir / "results" / "tables" / "fits.parquet").set_index("checkpoint")
        summary = pd.read_parquet(workdir / "results" / "tables" / "consistency_summary.parquet")
        # One run: every basis the listing needed was planned, computed and used; nothing says "run again".
        assert (checkpoints["status"] == "ok").sum() == 8, checkpoints["status"].to_dict()
        assert checkpoints.loc["hub/fay--custom-vit", "status"].startswith("skipped: fay/custom-vit: model type")
        for basis in checkpoints["basis"].dropna().unique():
            for kind in ("consistency", "filters"):
                assert (workdir / "results" / "plots" / kind / f"{basis}.png").is_file()
        tunes = [f"hub/{checkpoint_name(repo)}" for repo in FINE_TUNES]
        assert checkpoints.loc[tunes, "init_known"].all() and checkpoints.loc[tunes, "init_subtracted"].all()
        assert list(checkpoints.loc[tunes, "base_model"]) == list(FINE_TUNES.values())
        assert fits.loc[tunes, "r_init"].notna().all()
        assert not checkpoints.loc["hub/eve--vit-lost", "init_known"]
        assert checkpoints.loc["hub/eve--vit-lost", "init_note"].startswith("none: its base model cannot be read")
        assert {"trained vs its own initialisation"} <= set(summary["relation"])
        assert summary["relation"].str.contains("same base model").any()
        assert "hub (hf): 9 checkpoint(s), 8 ok, 1 skipped" in first.stdout + first.stderr

        # Three more repositories: the refresh lists them; only their shards and the aggregates run.
        fixtures = load_fixtures()
        for index, repo in enumerate(["hal/vit-cars", "ivy/vit-food", "jo/resnet-leaves"]):
            family = "resnet" if "resnet" in repo else "vit"
            serve(server, fixtures[family], repo, seed=400 + index,
                  card_data={"base_model": VIT if family == "vit" else "microsoft/resnet-50"}, downloads=1)
        before = stamps(workdir / "results")
        snakemake(workdir, "--cores", "2", config=workdir / "hub.yaml", env=env)
    after = stamps(workdir / "results")
    rewritten = {path for path in after if before.get(path) != after[path]}
    count = shard_count(12, 2)
    assert count == shard_count(9, 2)
    expected = {shard_name(checkpoint_name(repo), count) for repo in ["hal/vit-cars", "ivy/vit-food",
                                                                       "jo/resnet-leaves"]}
    assert {path for path in rewritten if path.startswith("analyses/")} == {
        f"analyses/hub/{shard}.npz" for shard in expected}
    assert not {path for path in rewritten if path.startswith("bases/")}  # no new preprocessing or kernel size
    assert {"zoos/hub/listing.json", "tables/checkpoints.parquet", "plots/profiles.png"} <= rewritten
    assert {Path(path).parts[1].removesuffix(".log") for path in rewritten if path.startswith("logs/")} == {
        "list_zoo", "analyse_checkpoints", "build_tables", "plot_study", "plot_bases"}
    assert len(pd.read_parquet(workdir / "results" / "tables" / "checkpoints.parquet")) == 12
