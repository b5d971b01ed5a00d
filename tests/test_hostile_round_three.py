"""Hostile inputs, round three: one file never stops a study, and the errors that were unclear.

Files from tests/hostile_corpus.py (ROUND_THREE), planned and read as the workflow does; the combined study of
all of them is in tests/test_local_workflow.py. Each test fails on the code before these fixes (2ba2819).
"""

import json
import math
import runpy
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import save_file
from snakemake.utils import validate

from firstlayer_zoo import plots
from firstlayer_zoo.analysis import ORDINARY_MAGNITUDE, analyse_stem, scale_free, skipped_analysis
from firstlayer_zoo.limits import Limits
from firstlayer_zoo.plan import Study
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.stems import Stem
from firstlayer_zoo.tables import checkpoints_table, write_table
from firstlayer_zoo.zoo_sources.base import GeometryCache
from firstlayer_zoo.zoo_sources import extract_stem
from firstlayer_zoo.zoo_sources.archive import ArchiveError, ArchiveSource, unpack
from hostile_corpus import (
    DELETED_DURING_RUN,
    OK,
    STEM_KEY,
    expected_status,
    identity_basis,
    stem_weights,
    write_archive_runs,
    write_declared_shapes,
    write_good,
    write_keras_declared_shapes,
    write_odd_metadata,
    write_odd_names_and_scales,
    write_onnx_declared_shapes,
)
from loopback import LoopbackServer
from synthetic_tables import synthetic_tables
from workflow_helpers import ROOT, snakemake

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
PHOTOS = {"source": "skimage", "images": ["astronaut", "coffee", "chelsea"]}


def validated(config: dict) -> dict:
    validate(config, str(SCHEMA))  # fills in the defaults, as at Snakemake start-up
    return config


def study_config(tmp_path, zoos: dict, **extra) -> dict:
    return validated({"outdir": str(tmp_path / "results"), "datasets": {"photos": PHOTOS}, "zoos": zoos, **extra})


def folder_zoo(root, **options) -> dict:
    return {"source": "folder", "dataset": "photos", "root": str(root), "stem_key": STEM_KEY,
            "preprocessing": {"resize": 48}, **options}


def good(folder: Path, name: str, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_good(folder, name, seed=seed)


def planned(study: Study) -> dict:
    return {spec.id: spec for spec in study.checkpoints.values()}


def status_of(spec) -> str:
    """The row a shard's job writes for a checkpoint (identity bases stand in for the patch statistics)."""
    basis = identity_basis(spec.kernel_size, spec.in_chans) if spec.basis is not None else None
    return analyse_stem(spec, extract_stem(spec), basis, subtract_init=True).status


# Limits and the outdir: refused at start-up, naming the key


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_limit_that_is_not_a_finite_number_is_refused_naming_the_key(tmp_path, value):
    good(tmp_path / "zoo", "good.safetensors", seed=0)
    config = study_config(tmp_path, {"local": folder_zoo(tmp_path / "zoo")}, limits={"download_gb": value})
    with pytest.raises(ValueError, match=rf"^limits.download_gb: {value} is not a finite positive number; give one "
                                         r"\(the default is 50\)$"):
        Study(config)


@pytest.mark.parametrize("where", ["/", "home", "above home", "zoo root", "above the zoo root", "image folder"])
def test_an_outdir_that_would_write_among_the_users_files_is_refused_before_anything_is_written(
        tmp_path, monkeypatch, where):
    home = tmp_path / "home" / "me"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    good(tmp_path / "data" / "zoo", "good.safetensors", seed=0)
    (tmp_path / "data" / "images").mkdir()
    outdir = {"/": "/", "home": str(home), "above home": str(home.parent), "zoo root": str(tmp_path / "data" / "zoo"),
              "above the zoo root": str(tmp_path / "data"), "image folder": str(tmp_path / "data" / "images")}[where]
    saved = []
    monkeypatch.setattr(GeometryCache, "save", lambda cache: saved.append(cache.path))
    config = validated({"outdir": outdir, "zoos": {"local": folder_zoo(tmp_path / "data" / "zoo")},
                        "datasets": {"photos": PHOTOS, "mine": {"source": "folder", "path": str(tmp_path / "data" /
                                                                                                  "images")}}})
    expected = {
        "/": "is the file system's root", "home": "is your home folder", "above home": "is a folder holding your home",
        "zoo root": f"is the folder of zoos.local \\({tmp_path / 'data' / 'zoo'}\\)",
        "above the zoo root": f"holds the folder of zoos.local \\({tmp_path / 'data' / 'zoo'}\\)",
        "image folder": f"is the folder of datasets.mine \\({tmp_path / 'data' / 'images'}\\)",
    }[where]
    with pytest.raises(ValueError, match=f"^outdir: {outdir} {expected}.*; give the results a folder of their own"):
        Study(config)
    assert saved == []


def test_an_outdir_refusal_reaches_the_console_and_a_dry_run_writes_nothing(tmp_path):
    good(tmp_path / "zoo", "good.safetensors", seed=0)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"outdir": "zoo", "datasets": {"photos": PHOTOS},
                                  "zoos": {"local": folder_zoo("zoo")}}))
    result = snakemake(tmp_path, "--dry-run", config=config, check=False)
    assert result.returncode != 0
    assert f"config: outdir: zoo is the folder of zoos.local ({tmp_path / 'zoo'})" in result.stdout + result.stderr
    assert sorted(path.name for path in (tmp_path / "zoo").iterdir()) == ["good.safetensors"]


# A declared stem shape never plans a basis the data cannot give


def test_a_declared_stem_that_cannot_fit_the_images_is_its_own_row_and_plans_no_basis(tmp_path):
    roots = {name: tmp_path / name for name in ("zoo", "onnx", "keras")}
    for root in roots.values():
        root.mkdir()
    expected = {**{f"local/{name}": (template, roots["zoo"] / name)
                   for name, template in write_declared_shapes(roots["zoo"]).items()},
                **{f"exported/{name}": (template, roots["onnx"] / name)
                   for name, template in write_onnx_declared_shapes(roots["onnx"]).items()},
                **{f"keras_models/{name}": (template, roots["keras"] / name)
                   for name, template in write_keras_declared_shapes(roots["keras"]).items()}}
    good(roots["zoo"], "good.safetensors", seed=0)
    prep = {"preprocessing": {"resize": 48}}
    study = Study(study_config(tmp_path, {
        "local": folder_zoo(roots["zoo"]),
        "exported": {"source": "onnx", "dataset": "photos", "root": str(roots["onnx"]), **prep},
        "keras_models": {"source": "keras", "dataset": "photos", "root": str(roots["keras"]), **prep},
    }))
    # Only the good stems' 5x5 basis is planned: the 3000x3000 and 64x64 claims cost no patch statistics.
    prep_key = study.checkpoints["local/good.safetensors"].preprocessing.key
    assert [basis.slug for basis in study.bases] == [f"photos-{prep_key}-k5c3"]
    specs = planned(study)
    for checkpoint, (template, path) in expected.items():
        assert status_of(specs[checkpoint]) == expected_status(template, path), checkpoint


def test_a_stem_past_limits_basis_dimensions_plans_no_basis_where_the_image_size_is_unknown(tmp_path):
    (tmp_path / "images").mkdir()
    save_file({STEM_KEY: stem_weights(0, (4, 3, 40, 40))}, str(tmp_path / "zoo.safetensors"))
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo.safetensors").rename(tmp_path / "zoo" / "wide.safetensors")
    zoos = {"local": {**folder_zoo(tmp_path / "zoo", dataset="mine"), "preprocessing": {}}}
    datasets = {"mine": {"source": "folder", "path": str(tmp_path / "images")}}
    config = validated({"outdir": str(tmp_path / "results"), "datasets": datasets, "zoos": zoos})
    (spec,) = Study(config).checkpoints.values()
    assert status_of(spec) == (
        f"skipped: {tmp_path / 'zoo' / 'wide.safetensors'}: its stem's patches would have 3x40x40 = 4,800 dimensions, "
        "over the limit of 4,096 (limits.basis_dimensions); raise limits.basis_dimensions in the config if you trust "
        "it; check the file, or remove it from the zoo")
    raised = Study(validated({**config, "limits": {"basis_dimensions": 5000}}))
    assert [basis.kernel_size for basis in raised.bases] == [40]


def test_an_archive_whose_configured_kernel_cannot_fit_the_images_is_refused_at_start_up(tmp_path):
    archive = {"source": "archive", "dataset": "photos", "url": "http://127.0.0.1:9/zoo.zip",
               "checkpoints": "*/checkpoint_*/checkpoints", "first_conv": "stem", "kernel_size": 64, "in_chans": 3,
               "preprocessing": {"resize": 48}}
    with pytest.raises(ValueError, match=r"^zoos.mz: its stem's 64x64 kernel is larger than the images .*48 pixels.*; "
                                         "fix kernel_size and in_chans, or the zoo's preprocessing$"):
        Study(study_config(tmp_path, {"mz": archive}))


# Metadata: one file's never stops the study; integers the tables cannot hold


def test_one_files_sidecar_or_name_is_its_own_row_and_the_tables_hold_every_row(tmp_path):
    root = tmp_path / "zoo"
    root.mkdir()
    expected = write_odd_metadata(root)
    good(root, "good.safetensors", seed=0)
    study = Study(study_config(tmp_path, {"local": folder_zoo(root, path_pattern=r"step(?P<step>\d+)")}))
    specs = planned(study)
    analyses = []
    for name, template in expected.items():
        spec = specs[f"local/{name}"]
        assert status_of(spec) == expected_status(template, root / name), name
        analyses.append(skipped_analysis(spec, status_of(spec)))
    assert specs["local/with_arch.safetensors"].arch == "resnet_like"
    assert specs["local/good.safetensors"].basis is not None
    write_table(checkpoints_table(analyses), "checkpoints", tmp_path / "checkpoints.parquet")  # no int64 overflow


def test_the_configs_own_metadata_beyond_64_bits_is_refused_naming_the_key(tmp_path):
    good(tmp_path / "zoo", "good.safetensors", seed=0)
    config = study_config(tmp_path, {"local": folder_zoo(tmp_path / "zoo", metadata={"seed": 10**30})})
    with pytest.raises(ValueError, match=r"^zoos.local.metadata.seed is not an integer within 64 bits; fix it in the "
                                         r"config$"):
        Study(config)


def test_two_files_that_become_one_checkpoint_are_both_named_with_the_fix(tmp_path):
    good(tmp_path / "zoo" / "a", "b.safetensors", seed=0)
    good(tmp_path / "zoo", "a--b.safetensors", seed=1)
    with pytest.raises(ValueError, match=rf"^zoos.local: {tmp_path / 'zoo' / 'a' / 'b.safetensors'} and "
                                         rf"{tmp_path / 'zoo' / 'a--b.safetensors'} both become checkpoint "
                                         r"a--b.safetensors \(a / in the path under the root is written --\); rename "
                                         "one of them$"):
        Study(study_config(tmp_path, {"local": folder_zoo(tmp_path / "zoo")}))


def test_archive_params_and_steps_beyond_64_bits_are_their_checkpoints_rows(tmp_path):
    root = tmp_path / "archive"
    expected = write_archive_runs(root)
    source = ArchiveSource("mz", {"source": "archive", "dataset": "photos", "url": "http://127.0.0.1:9/zoo.zip",
                                  "checkpoints": "*/checkpoint_*/checkpoints", "step_pattern": r"checkpoint_(\d+)",
                                  "params_file": "params.json", "seed_key": "seed", "first_conv": "stem",
                                  "kernel_size": 5, "in_chans": 3, "preprocessing": {"resize": 48}},
                           str(tmp_path / "results"), cache=None)
    specs = {spec.name: spec for spec in (source.listed_spec(entry)
                                          for entry in source.index_entries(root))}
    assert sorted(specs) == sorted(expected)
    for name, template in expected.items():
        status = extract_stem(specs[name]).status
        assert status == expected_status(template.replace("{root}", str(root)), Path(specs[name].locator)), name
    assert specs["00_good-step000010"].seed == 1
    analyses = [skipped_analysis(spec, "skipped: test") for spec in specs.values()]
    write_table(checkpoints_table(analyses), "checkpoints", tmp_path / "checkpoints.parquet")


# Archives: a name both a file and a folder; refusals reach the console as one line


@pytest.mark.parametrize("folder_entry", [True, False])
def test_an_archive_holding_a_name_as_file_and_folder_is_refused_before_anything_is_written(tmp_path,
                                                                                            folder_entry):
    path = tmp_path / "zoo.zip"
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("run_c", b"a file")
        if folder_entry:
            bundle.writestr(zipfile.ZipInfo("run_c/"), b"")
        bundle.writestr("run_c/params.json", b"{}")
    with pytest.raises(ArchiveError, match=r"^https://x/zoo.zip: the archive holds 'run_c' both as a file and as a "
                                           "folder of other members, which cannot both be unpacked; repack it"):
        unpack(path, tmp_path / "out", "https://x/zoo.zip", Limits())
    assert not (tmp_path / "out").exists()


class RuleStub:
    """What a rule script reads of the `snakemake` object Snakemake gives it."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def test_a_refused_archive_is_one_line_on_the_console_and_its_trace_in_the_log(tmp_path, capsys):
    archive = tmp_path / "zoo.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("run_c", b"a file")
        bundle.writestr("run_c/checkpoint_000000/checkpoints", b"")
    log = tmp_path / "unpack.log"
    with LoopbackServer() as server:
        url = server.add("/zoo.zip", archive.read_bytes())
        options = {"source": "archive", "dataset": "photos", "url": url, "checkpoints": "*/checkpoint_*/checkpoints",
                   "first_conv": "stem", "kernel_size": 3, "in_chans": 3, "preprocessing": {}}
        stub = RuleStub(log=[str(log)], wildcards=RuleStub(zoo="mz"), params=RuleStub(
            options=options, outdir=str(tmp_path / "results"), limits=Limits().to_dict()))
        with pytest.raises(SystemExit) as exited:
            runpy.run_path(str(ROOT / "scripts" / "list_zoo.py"), init_globals={"snakemake": stub})
    assert str(exited.value) == (f"ArchiveError: {url}: the archive holds 'run_c' both as a file and as a folder of "
                                 "other members, which cannot both be unpacked; repack it with each name used once")
    console = capsys.readouterr()
    assert "Traceback" not in console.out + console.err
    assert "Traceback" in log.read_text()


# Plots: arch known for some checkpoints only


def test_plots_draw_a_study_where_only_some_checkpoints_know_their_arch(drawn):
    tables = synthetic_tables(4, known=False)
    checkpoints, fits = tables["checkpoints"], tables["fits"]
    checkpoints.loc[0, "arch"] = "resnet_like"
    fits["colour_energy"], fits["colour_energy_init"], fits["colour_variance_data"] = 0.5, np.nan, 0.15
    autocorrelation = pd.DataFrame({"checkpoint": np.repeat(checkpoints["checkpoint"], 2), "offset": [2, 5] * 4,
                                    "data": 0.6, "init": np.nan, "trained": 0.5})
    plots.plot_autocorrelation(checkpoints, autocorrelation, "autocorrelation")
    plots.plot_colour(checkpoints, fits, "colour")
    labels = [text.get_text() for axis in drawn["autocorrelation"].axes for text in axis.get_legend().get_texts()]
    assert "trained arch unknown (median, range)" in labels and "trained resnet_like (median, range)" in labels


def test_filter_pictures_choose_among_checkpoints_with_and_without_an_arch(tmp_path):
    root = tmp_path / "zoo"
    good(root, "a.safetensors", seed=0)
    good(root, "b.safetensors", seed=1)
    (root / "b.json").write_text(json.dumps({"arch": "resnet_like"}))
    study = Study(study_config(tmp_path, {"local": folder_zoo(root)}))
    analyses = [analyse_stem(spec, extract_stem(spec), identity_basis(5, 3), True)
                for spec in study.checkpoints.values()]
    chosen = plots.choose_for_pictures(analyses, 2)
    assert [analysis.checkpoint.name for analysis in chosen] == ["b.safetensors", "a.safetensors"]


# Stems of finite but tiny or huge weights; names Snakemake would read as wildcards; files deleted after planning


@pytest.mark.parametrize("exponent", [-700, -200, 200, 700])
def test_a_stem_of_tiny_or_huge_finite_weights_gives_the_profile_of_its_filters(exponent):
    weight, init = stem_weights(0).double().numpy(), stem_weights(1).double().numpy()
    spec = CheckpointSpec(zoo="z", name="m", source="folder", arch=None, locator="m", first_conv="stem",
                          kernel_size=5, in_chans=3, dataset="photos", preprocessing=Preprocessing())
    rng = np.random.default_rng(0)
    eigenvalues = np.sort(rng.lognormal(0, 2, 75))[::-1]
    basis = identity_basis(5, 3)
    basis.eigenvalues, basis.covariance = eigenvalues, np.diag(eigenvalues)
    ordinary = analyse_stem(spec, Stem(weight, init, 2, "stem"), basis, subtract_init=True)
    scaled = analyse_stem(spec, Stem(np.ldexp(weight, exponent), np.ldexp(init, exponent), 2, "stem"), basis,
                          subtract_init=True)
    assert scaled.status == "ok"
    # A power of two is exact: the same profile, fit and image-space measures, bit for bit.
    np.testing.assert_array_equal(scaled.energy, ordinary.energy)
    np.testing.assert_array_equal(scaled.energy_init, ordinary.energy_init)
    assert scaled.measures == ordinary.measures


def test_an_ordinary_stem_is_profiled_exactly_as_before():
    weight = stem_weights(0).double().numpy() * 0.01
    stem = Stem(weight, None, 2, "stem")
    assert scale_free(stem) is stem
    assert ORDINARY_MAGNITUDE[0] < 1e-20 and ORDINARY_MAGNITUDE[1] > 1e20


def test_names_with_braces_plan_as_ordinary_checkpoints(tmp_path):
    root = tmp_path / "zoo"
    root.mkdir()
    expected = write_odd_names_and_scales(root)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"datasets": {"photos": PHOTOS}, "zoos": {"local": folder_zoo("zoo")}}))
    result = snakemake(tmp_path, "--dry-run", config=config)
    assert "analyse_checkpoints" in result.stdout
    specs = planned(Study(study_config(tmp_path, {"local": folder_zoo(root)})))
    for name in ("{wild}--in_braces.safetensors", "{zoo}.safetensors"):
        assert expected[name] == OK and status_of(specs[f"local/{name}"]) == OK


def test_a_file_deleted_after_planning_is_its_row_not_a_missing_input(tmp_path):
    root = tmp_path / "zoo"
    expected = write_odd_names_and_scales(root)
    study = Study(study_config(tmp_path, {"local": folder_zoo(root)}))
    spec = study.checkpoints[f"local/{DELETED_DURING_RUN}"]
    # Snakemake is given no checkpoint path to wait for: the job runs, and the reader says what happened.
    assert all(study.shard_input_files("local", shard) == [] for shard in study.shards("local"))
    assert spec.extra["stat"]["file"][0] == Path(spec.locator).stat().st_size
    Path(spec.locator).unlink()
    assert status_of(spec) == expected_status(expected[spec.name], Path(spec.locator))


def test_a_replaced_file_changes_its_shards_params(tmp_path):
    root = tmp_path / "zoo"
    good(root, "a.safetensors", seed=0)
    config = study_config(tmp_path, {"local": folder_zoo(root)})
    before = Study(config).checkpoints["local/a.safetensors"].to_dict()
    time.sleep(0.05)  # past the file system's timestamp granularity, as a later copy would be
    good(root, "a.safetensors", seed=1)
    after = Study(config).checkpoints["local/a.safetensors"].to_dict()
    assert before != after and before["extra"]["stat"] != after["extra"]["stat"]
