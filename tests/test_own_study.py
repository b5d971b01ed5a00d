"""A researcher's own study: only their config, honest metadata, loud outcomes, readable plots."""

import os
import re
import stat

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from snakemake.utils import validate

from firstlayer_zoo import plots
from firstlayer_zoo.analysis import analyse_stem
from firstlayer_zoo.atomic import write_text
from firstlayer_zoo.plan import Study
from firstlayer_zoo.tables import build_tables
from firstlayer_zoo.zoo_sources import extract_stem
from plot_checks import overlapping_texts
from synthetic_tables import synthetic_tables
from workflow_helpers import ROOT, snakemake

PHOTOS = {"photos": {"source": "skimage", "images": ["astronaut", "coffee"]}}


def folder_zoo(root, count=7, stem_key="conv1.weight", channels_reversed=False, seed=0):
    """`count` unrelated third-party state dicts: a 3x5x5 stem each, no metadata at all."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        weight = rng.normal(size=(8, 3, 5, 5)).astype(np.float32)
        weight[:, :, 2, 2] += 3 * rng.normal(size=(8, 3))  # some structure, so that profiles differ
        if channels_reversed:
            weight = weight[:, ::-1].copy()
        save_file({stem_key: torch.from_numpy(weight), "fc.weight": torch.zeros(2, 8)},
                  str(root / f"model{index}.safetensors"))
    return root


def study_config(tmp_path, zoos, datasets=PHOTOS):
    config = {"outdir": str(tmp_path / "results"), "datasets": datasets, "zoos": zoos,
              "analysis": {"subtract_init": True}}
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))  # defaults, as at start-up
    return config


def folder_options(root, **more):
    return {"source": "folder", "dataset": "photos", "root": str(root), "stem_key": "conv1.weight",
            "preprocessing": {"resize": 48}, **more}


def analyses_of(study, basis):
    return [analyse_stem(spec, extract_stem(spec), basis, subtract_init=True)
            for spec in study.checkpoints.values()]


@pytest.fixture(scope="module")
def photo_basis():
    from firstlayer_zoo.dataset_sources import dataset_source
    from firstlayer_zoo.patchstats import dataset_basis
    from firstlayer_zoo.preprocessing import Preprocessing

    images = dataset_source("photos", PHOTOS["photos"]).images(None)
    return dataset_basis(images, Preprocessing(resize=48), 5, device="cpu", progress=False)


# --- unknown metadata stays unknown -------------------------------------------------------------

def test_unknown_arch_is_null_and_never_makes_a_pair_the_same(tmp_path, photo_basis):
    root = folder_zoo(tmp_path / "zoo")
    study = Study(study_config(tmp_path, {"mine": folder_options(root)}))
    tables = build_tables(analyses_of(study, photo_basis))
    checkpoints = tables["checkpoints"]
    assert (checkpoints["status"] == "ok").all() and len(checkpoints) == 7
    for column in ("arch", "seed", "labels", "step", "run"):
        assert checkpoints[column].isna().all(), column
    relations = set(tables["consistency_summary"]["relation"])
    assert relations and not any("same" in relation for relation in relations), relations


def test_partly_known_metadata_is_unknown_for_pairs_it_cannot_compare(tmp_path, photo_basis):
    root = folder_zoo(tmp_path / "zoo", count=3)
    (root / "model0.json").write_text('{"arch": "resnet18", "seed": 1}')
    (root / "model1.json").write_text('{"arch": "resnet18", "seed": 1}')
    study = Study(study_config(tmp_path, {"mine": folder_options(root)}))
    summary = build_tables(analyses_of(study, photo_basis))["consistency_summary"].set_index("relation")
    assert summary.at["same arch, same seed", "n_pairs"] == 1  # model0 with model1
    assert summary.at["arch unknown, seed unknown", "n_pairs"] == 2  # model2 with either


def test_plots_say_what_they_show_when_arch_labels_init_are_unknown(drawn):
    tables = synthetic_tables(7, known=False)
    plots.plot_profiles(tables["checkpoints"], tables["profiles"], "profiles")
    figure = drawn["profiles"]
    assert "initialisation unknown" in figure._suptitle.get_text()
    assert "vs their initialisation" not in figure._suptitle.get_text()
    texts = " ".join(text.get_text() for text in figure.findobj(lambda a: hasattr(a, "get_text")))
    assert "n/a" not in texts and "labels unknown" in texts
    (panel,) = [axis for axis in figure.axes if axis.lines]
    assert "arch unknown" in panel.get_title()
    # Seven unrelated models: seven curves, not one band that merges them.
    assert sum(len(line.get_xdata()) > 0 for line in panel.lines) == 7

    plots.plot_fit_examples(tables["checkpoints"], tables["profiles"], tables["fits"], 6, "fits")
    titled = [axis.get_title() for axis in drawn["fits"].axes if axis.get_title()]
    assert len(titled) == 6, titled

    plots.plot_training_time(tables["checkpoints"], tables["fits"], "training_time")
    (axis,) = drawn["training_time"].axes
    assert "training step" in " ".join(text.get_text() for text in axis.texts)


# --- plots readable at any size -----------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 7, 2000])
@pytest.mark.parametrize("known", [True, False])
def test_no_two_texts_of_a_plot_overlap(drawn, count, known):
    if count == 2000 and not known:
        pytest.skip("the unknown-metadata layout is the same code path; one 2,000-checkpoint zoo is enough")
    tables = synthetic_tables(count, known=known)
    plots.plot_profiles(tables["checkpoints"], tables["profiles"], "profiles")
    plots.plot_training_time(tables["checkpoints"], tables["fits"], "training_time")
    plots.plot_consistency(tables["checkpoints"], tables["consistency"], tables["consistency_groups"],
                           "photos-r128c0-k3c3", "consistency")
    plots.plot_fit_examples(tables["checkpoints"], tables["profiles"], tables["fits"], 6, "fits")
    plots.plot_fit_quality(tables["checkpoints"], tables["fits"], "fit_quality")
    plots.plot_whitening(tables["checkpoints"], tables["fits"], "whitening")
    assert len(drawn) == 6
    for name, figure in drawn.items():
        assert overlapping_texts(figure) == [], name
    if known and count > 1:
        labels = [t.get_text() for t in drawn["training_time"].axes[0].get_xticklabels() if t.get_text()]
        assert len(labels) >= 3, labels  # thinned, not emptied


# --- loud outcomes --------------------------------------------------------------------------------

@pytest.mark.parametrize("source,patterns", [("onnx", None), ("folder", ["runs/*.ckpt"])])
def test_patterns_that_match_nothing_are_refused_at_start_up(tmp_path, source, patterns):
    root = folder_zoo(tmp_path / "zoo", count=2)  # .safetensors only: no .onnx, no runs/*.ckpt
    options = {"source": source, "dataset": "photos", "root": str(root)}
    if source == "folder":
        options.update(stem_key="conv1.weight", patterns=patterns)
    with pytest.raises(ValueError) as refused:
        Study(study_config(tmp_path, {"mine": options}))
    message = str(refused.value)
    assert "zoos.mine" in message and str(root) in message
    assert (str(patterns) if patterns else "**/*.onnx") in message


def test_summary_per_zoo_counts_ok_and_groups_skips_by_reason(tmp_path, photo_basis):
    from firstlayer_zoo.summary import require_analysable, study_summary

    good = folder_zoo(tmp_path / "good", count=3)
    wrong_key = folder_zoo(tmp_path / "wrong_key", count=4, seed=1)
    study = Study(study_config(tmp_path, {"good": folder_options(good),
                                          "wrong": folder_options(wrong_key, stem_key="encoder.conv0.weight")}))
    checkpoints = build_tables(analyses_of(study, photo_basis))["checkpoints"]
    summary = study_summary(checkpoints, "results/tables/checkpoints.parquet", "results/logs")
    lines = summary.splitlines()
    assert "7 checkpoint(s) in 2 zoo(s), 3 analysed, 4 skipped" in lines[0]
    assert "  zoo good (folder): 3 checkpoint(s), 3 ok, 0 skipped" in lines
    assert "  zoo wrong (folder): 4 checkpoint(s), 0 ok, 4 skipped" in lines
    (reason,) = [line for line in lines if line.startswith("    4 skipped: ")]  # one reason, not four
    assert "encoder.conv0.weight" in reason and str(wrong_key) not in reason
    assert "status column of results/tables/checkpoints.parquet" in summary
    require_analysable(checkpoints, summary)


def test_a_study_with_nothing_analysable_fails_saying_why(tmp_path, photo_basis):
    from firstlayer_zoo.summary import NothingAnalysed, require_analysable, study_summary

    wrong_key = folder_zoo(tmp_path / "zoo", count=2)
    study = Study(study_config(tmp_path, {"mine": folder_options(wrong_key, stem_key="stem.weight")}))
    checkpoints = build_tables(analyses_of(study, photo_basis))["checkpoints"]
    summary = study_summary(checkpoints, "checkpoints.parquet", "logs")
    with pytest.raises(NothingAnalysed, match="no checkpoint of the study could be analysed") as failed:
        require_analysable(checkpoints, summary)
    assert "2 skipped: no tensor" in str(failed.value) and "stem.weight" in str(failed.value)


def test_misspelt_photo_is_refused_at_start_up_listing_the_valid_names(tmp_path):
    root = folder_zoo(tmp_path / "zoo", count=1)
    datasets = {"photos": {"source": "skimage", "images": ["astronaut", "astronuat"]}}
    with pytest.raises(ValueError) as refused:
        Study(study_config(tmp_path, {"mine": folder_options(root)}, datasets=datasets))
    message = str(refused.value)
    assert "datasets.photos.images" in message and "'astronuat'" in message
    assert all(name in message for name in ("astronaut", "chelsea", "coffee", "rocket", "camera"))


def test_every_listed_photo_loads_offline():
    from firstlayer_zoo.dataset_sources import dataset_source
    from firstlayer_zoo.photos import SKIMAGE_IMAGES

    images = list(dataset_source("all", {"source": "skimage", "images": list(SKIMAGE_IMAGES)}).images(None))
    assert all(image.dtype == np.uint8 and image.ndim in (2, 3) for image in images)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_get_the_permissions_of_an_ordinary_write(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_text(tmp_path / "atomic.txt", "x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o666 & ~umask


# --- colour order ---------------------------------------------------------------------------------

def test_a_bgr_trained_stem_gives_the_profile_of_its_rgb_twin(tmp_path, photo_basis):
    rgb = folder_zoo(tmp_path / "rgb", count=2)
    bgr = folder_zoo(tmp_path / "bgr", count=2, channels_reversed=True)  # the same filters, fed BGR
    study = Study(study_config(tmp_path, {"rgb": folder_options(rgb),
                                          "bgr": folder_options(bgr, channel_order="bgr")}))
    assert len({spec.basis for spec in study.checkpoints.values()}) == 1  # BGR and RGB models share a basis
    profiles = {spec.id: analyse_stem(spec, extract_stem(spec), photo_basis, True).energy
                for spec in study.checkpoints.values()}
    for name in ("model0.safetensors", "model1.safetensors"):
        np.testing.assert_allclose(profiles[f"bgr/{name}"], profiles[f"rgb/{name}"], rtol=1e-12)
    # Read as RGB, the reversed stem is another filter bank: the option is what makes the twins agree.
    plain = Study(study_config(tmp_path, {"bgr": folder_options(bgr)}))
    spec = plain.checkpoints["bgr/model0.safetensors"]
    assert not np.allclose(analyse_stem(spec, extract_stem(spec), photo_basis, True).energy,
                           profiles["rgb/model0.safetensors"])


def test_bgr_on_a_stem_without_three_colour_channels_is_a_skipped_row_naming_the_file(tmp_path):
    root = tmp_path / "grey"
    root.mkdir()
    save_file({"conv1.weight": torch.ones(4, 1, 5, 5)}, str(root / "grey.safetensors"))
    study = Study(study_config(tmp_path, {"grey": folder_options(root, channel_order="bgr")}))
    (spec,) = study.checkpoints.values()
    assert extract_stem(spec).status == (f"skipped: {root / 'grey.safetensors'}: channel_order bgr needs a stem "
                                         "over 3 colour channels, this one takes 1; set channel_order: rgb for "
                                         "this zoo")


# --- the study is the user's config ---------------------------------------------------------------

def planned_rules(output: str) -> dict[str, int]:
    """A dry run's job counts by rule, from its 'Job stats' table."""
    table = output.split("Job stats:")[1].split("total")[0]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def test_configfile_runs_exactly_that_study_and_config_overrides_still_apply(tmp_path):
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())  # the demo, 18 training runs
    folder_zoo(tmp_path / "zoo", count=2)
    mine = study_config(tmp_path, {"mine": folder_options(tmp_path / "zoo")})
    mine["outdir"] = "mine_results"
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(mine))

    result = snakemake(tmp_path, "--dry-run", config=tmp_path / "mine.yaml")
    jobs = planned_rules(result.stdout)
    assert "train_run" not in jobs and jobs["analyse_checkpoints"] == 1, jobs  # 2 checkpoints, 1 shard
    assert "demo" not in result.stdout and "mine_results/" in result.stdout

    result = snakemake(tmp_path, "--dry-run", "--config", "outdir=elsewhere", config=tmp_path / "mine.yaml")
    assert "elsewhere/tables/checkpoints.parquet" in result.stdout and "mine_results/" not in result.stdout

    # Without --configfile the study is config.yaml, and --config still overrides it.
    result = snakemake(tmp_path, "--dry-run", "--config", "outdir=demo_elsewhere", configfile=False)
    assert planned_rules(result.stdout)["train_run"] == 18
    assert "demo_elsewhere/tables/checkpoints.parquet" in result.stdout


# --- the project's own science page ---------------------------------------------------------------

def test_science_page_is_the_projects_own_and_states_the_codes_definitions():
    import subprocess

    from firstlayer_zoo.profiles import RELATIVE_EIGENVALUE_FLOOR

    outside = ["../" + "shared", "/work/" + "shared"]  # spelt in parts, so this file does not match itself
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.split():
        path = ROOT / name
        if path.is_file() and path.suffix not in (".csv", ".png"):
            text = path.read_text(errors="ignore")
            assert not any(reference in text for reference in outside), name
    science = (ROOT / "docs" / "science.md").read_text()
    assert "(docs/science.md)" in (ROOT / "README.md").read_text()
    assert "docs/science.md" in (ROOT / "scripts" / "firstlayer_zoo" / "profiles.py").read_text()
    for definition in ("e_i = sqrt( (1/K) * sum_k A[k, i]^2 )", "f_i(tau) = (1 - exp(-tau * s_i)) / sqrt(s_i)",
                       "log10(s_1 / s_p)", "log10( max_i(e_i^2 s_i) / min_i(e_i^2 s_i) )", "tau s_i > 1",
                       f"{RELATIVE_EIGENVALUE_FLOOR:g} s_1"):
        assert definition in science, definition
