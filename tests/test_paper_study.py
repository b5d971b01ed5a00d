"""The paper's experiments: configs/paper-*.yaml plan, run end to end on a served CIFAR-format archive of real
photo crops, and the paper_comparison table follows from the other tables."""

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from firstlayer_zoo.analysis import analyse_stem
from firstlayer_zoo.dataset_sources import dataset_source
from firstlayer_zoo.paper_comparison import paper_comparison, paper_datasets, read_paper_values
from firstlayer_zoo.plan import Study
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.stems import Stem
from firstlayer_zoo.tables import build_tables
from test_datasets import served  # noqa: F401  (a fixture)
from test_tables import spectrum_basis
from workflow_checks import read_table
from workflow_helpers import snakemake

ROOT = Path(__file__).resolve().parents[1]
PAPER_CIFAR10 = ROOT / "configs" / "paper-cifar10.yaml"
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket"]  # the tiny task's classes: which photo a crop is from


def expected_comparison(checkpoints: pd.DataFrame, consistency: pd.DataFrame, fits: pd.DataFrame
                        ) -> dict[str, tuple[float, float | None, int]]:
    """{quantity: (mean, std, n)} from the pairs table and the fits, for each run's last checkpoint: the slow way."""
    ok = checkpoints[checkpoints["status"] == "ok"].copy()
    last = ok[ok["step"] == ok.groupby("run")["step"].transform("max")].set_index("checkpoint")
    last["width"] = last["width"].fillna(1.0)
    fits = fits.set_index("checkpoint")
    pairs = consistency[consistency["checkpoint_a"].isin(last.index) & consistency["checkpoint_b"].isin(last.index)]
    a, b = last.loc[pairs["checkpoint_a"]].reset_index(), last.loc[pairs["checkpoint_b"]].reset_index()
    r = pairs["r"].to_numpy()
    vgg_a, vgg_b = (a["arch"] == "vgg11_bn_cifar").to_numpy(), (b["arch"] == "vgg11_bn_cifar").to_numpy()
    true_a, true_b = (a["labels"] == "true").to_numpy(), (b["labels"] == "true").to_numpy()
    same_width = (a["width"] == b["width"]).to_numpy()
    resnet_a, resnet_b = (a["arch"] == "resnet18_cifar").to_numpy(), (b["arch"] == "resnet18_cifar").to_numpy()
    vgg_true = last[(last["arch"] == "vgg11_bn_cifar") & (last["labels"] == "true")].index
    vgg_permuted = last[(last["arch"] == "vgg11_bn_cifar") & (last["labels"] == "permuted")].index
    found = {
        "other seed": r[vgg_a & vgg_b & true_a & true_b & same_width & (a["seed"] != b["seed"]).to_numpy()],
        "other width": r[vgg_a & vgg_b & true_a & true_b & ~same_width],
        "other architecture": r[true_a & true_b & ((vgg_a & resnet_b) | (resnet_a & vgg_b))],
        "true vs random labels": r[vgg_a & vgg_b & same_width & (true_a != true_b)
                                   & (a["labels"].isin(["true", "permuted"])
                                      & b["labels"].isin(["true", "permuted"])).to_numpy()],
        "trained vs its initialisation": fits.loc[vgg_true, "r_init"].to_numpy(),
        "random labels: trained vs its initialisation": fits.loc[vgg_permuted, "r_init"].to_numpy(),
        "fit r of the analytic profile": fits.loc[vgg_true, "fit_r"].to_numpy(),
    }
    return {quantity: (values.mean(), values.std(ddof=1) if len(values) > 1 else None, len(values))
            for quantity, values in found.items() if len(values)}


def check_comparison(table: pd.DataFrame, expected: dict, dataset: str) -> None:
    """Each row as expected, beside the paper's value for `dataset` in the paper's own setting."""
    assert sorted(table["quantity"]) == sorted(expected)
    paper = read_paper_values()
    for row in table.itertuples():
        mean, std, n = expected[row.quantity]
        assert (row.measured, row.n) == (pytest.approx(mean, abs=1e-9), n), row.quantity
        assert (pd.isna(row.measured_std) and std is None) or row.measured_std == pytest.approx(std, abs=1e-9)
        reported = paper[(paper["quantity"] == row.quantity) & (paper["dataset"] == dataset)]
        assert row.paper_value == reported["paper_value"].item()
        assert row.paper_setting.split("; ")[:2] == [reported["paper_setting"].item(), dataset]


def _synthetic_zoo(members: list[tuple[str, float | None, int, str]]) -> dict:
    """Tables of a study whose checkpoints are (arch, width, seed, labels), with random stems in one basis."""
    s = np.logspace(0, -3, 27)
    basis = spectrum_basis(s)
    rng = np.random.default_rng(1)
    analyses = []
    for arch, width, seed, labels in members:
        run = f"{arch}-w{width}-s{seed}-{labels}"
        for step in (1, 2):
            spec = CheckpointSpec(zoo="z", name=f"{run}-{step}", source="train", arch=arch, locator=f"{run}-{step}",
                                  first_conv="conv1", kernel_size=3, in_chans=3, dataset="c10",
                                  preprocessing=Preprocessing(), step=step, seed=seed, labels=labels, run=run,
                                  extra={"width": width})
            init = rng.normal(size=(8, 3, 3, 3))
            stem = Stem(weight=init + rng.normal(size=init.shape) * s.reshape(3, 3, 3) ** -0.5, init=init, stride=1,
                        first_conv="conv1")
            analyses.append(analyse_stem(spec, stem, basis, subtract_init=True))
    return build_tables(analyses)


def _comparison(tables: dict, datasets: dict) -> pd.DataFrame:
    paper = read_paper_values()
    return paper_comparison(tables["checkpoints"], tables["profiles"], tables["fits"], paper,
                            paper_datasets(datasets, paper))


def test_paper_comparison_follows_from_the_pairs_and_fits_of_each_runs_last_checkpoint():
    tables = _synthetic_zoo([("vgg11_bn_cifar", None, 0, "true"), ("vgg11_bn_cifar", None, 1, "true"),
                             ("vgg11_bn_cifar", 0.5, 0, "true"), ("vgg11_bn_cifar", 0.5, 1, "true"),
                             ("resnet18_cifar", None, 0, "true"), ("vgg11_bn_cifar", None, 0, "permuted"),
                             ("vgg11_bn_cifar", None, 2, "permuted"), ("test_resnet", None, 0, "true")])
    table = _comparison(tables, {"c10": {"source": "cifar10"}})
    check_comparison(table, expected_comparison(tables["checkpoints"], tables["consistency"], tables["fits"]),
                     "cifar10")
    assert len(table) == 7 and table["setting"].str.contains("permuted labels").sum() == 2
    # The paper's own architectures are there: they are measured, not stand-ins (test_resnet has no row).
    assert not table["setting"].str.contains("test_resnet|none of the paper's datasets").any()


def test_paper_comparison_leaves_out_what_the_study_lacks():
    tables = _synthetic_zoo([("vgg11_bn_cifar", None, 0, "true"), ("vgg11_bn_cifar", None, 1, "true")])
    table = _comparison(tables, {"c10": {"source": "cifar100"}})
    assert sorted(table["quantity"]) == ["other seed", "trained vs its initialisation"]
    # The paper reports no fit for CIFAR-100: that row is absent, not zero.
    assert not table["quantity"].str.contains("fit r").any()


def test_any_study_stands_its_own_architectures_and_dataset_beside_the_papers_cifar10_numbers():
    """The default study's shape: no VGG-11, not the paper's data; every row names both settings."""
    members = [(arch, None, seed, labels) for arch in ("test_resnet", "test_byobnet") for seed in (0, 1)
               for labels in ("true", "random")]
    tables = _synthetic_zoo(members)
    table = _comparison(tables, {"c10": {"source": "svhn"}})
    rows = {(row.quantity, row.setting.split(", ")[0]): row for row in table.itertuples()}
    per_arch = ["other seed", "trained vs its initialisation", "fit r of the analytic profile",
                "random labels: trained vs its initialisation", "true vs random labels"]
    assert sorted(rows) == sorted([(quantity, arch) for quantity in per_arch for arch in ("test_byobnet",
                                                                                          "test_resnet")]
                                  + [("other architecture", "test_byobnet vs test_resnet")])
    assert all(row.paper_setting.split("; ")[1] == "cifar10" for row in table.itertuples())
    assert table["paper_setting"].str.startswith("VGG-11").all()
    assert table["setting"].str.contains("; c10, none of the paper's datasets; basis ").all()
    # The values, read from the pairs table and the fits the slow way.
    checkpoints = tables["checkpoints"].set_index("checkpoint")
    last = checkpoints[checkpoints["step"] == 2]
    pairs = tables["consistency"]
    pairs = pairs[pairs["checkpoint_a"].isin(last.index) & pairs["checkpoint_b"].isin(last.index)]
    a, b = last.loc[pairs["checkpoint_a"]].reset_index(), last.loc[pairs["checkpoint_b"]].reset_index()
    r = pairs["r"].to_numpy()
    fits = tables["fits"].set_index("checkpoint")
    for arch in ("test_resnet", "test_byobnet"):
        ours = ((a["arch"] == arch) & (b["arch"] == arch)).to_numpy()
        true = ((a["labels"] == "true") & (b["labels"] == "true")).to_numpy()
        assert rows["other seed", arch].measured == pytest.approx(r[ours & true].mean(), abs=1e-12)
        assert rows["true vs random labels", arch].n == 4
        mixed = (a["labels"] != b["labels"]).to_numpy()
        assert rows["true vs random labels", arch].measured == pytest.approx(r[ours & mixed].mean(), abs=1e-12)
        true_checkpoints = last[(last["arch"] == arch) & (last["labels"] == "true")].index
        assert rows["fit r of the analytic profile", arch].measured == pytest.approx(
            fits.loc[true_checkpoints, "fit_r"].mean(), abs=1e-12)
    cross = ((a["arch"] != b["arch"]) & (a["labels"] == "true") & (b["labels"] == "true")).to_numpy()
    row = rows["other architecture", "test_byobnet vs test_resnet"]
    assert (row.measured, row.n) == (pytest.approx(r[cross].mean(), abs=1e-12), 4)


def _validated(path: Path, outdir: Path) -> dict:
    """A config as the workflow reads it at start-up: validated, defaults filled in; outputs under `outdir`."""
    from snakemake.utils import validate

    config = {**yaml.safe_load(path.read_text()), "outdir": str(outdir)}
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def test_paper_configs_plan_the_designs_of_the_papers_tables(tmp_path):
    study = Study(_validated(PAPER_CIFAR10, tmp_path), cache_path=tmp_path / "geometry.json")
    runs = study.runs
    assert len(runs) == 3 * 3 * 2
    assert {name for _, name in runs} >= {"vgg11_bn_cifar-w1-s0-true", "vgg11_bn_cifar-w0.5-s2-permuted",
                                          "resnet18_cifar-w1-s1-permuted"}
    specs = list(study.checkpoints.values())
    assert {(spec.first_conv, spec.kernel_size) for spec in specs} == {("features.0", 3), ("conv1", 3)}
    assert all(spec.init_locator.endswith("epoch000000.safetensors") for spec in specs)
    assert sorted({spec.step for spec in specs}) == [1, 3, 10, 30]
    imagenet = _validated(ROOT / "configs" / "paper-imagenet.yaml", tmp_path)
    models = Study(imagenet, cache_path=tmp_path / "geometry.json").checkpoints.values()
    # torchvision's pretrained ImageNet models with the paper's 3x7x7 and 3x3x3 stems.
    assert sorted((spec.arch, spec.kernel_size) for spec in models) == [
        ("resnet18", 7), ("resnet34", 7), ("resnet50", 7), ("vgg11", 3), ("vgg16", 3)]
    assert paper_datasets(imagenet["datasets"], read_paper_values()) == {"imagenet": "imagenet"}


def _photo_crops(count: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """32x32 crops of scikit-image's photos at random places, (N, 3072) in CIFAR's layout, and the photo of each."""
    prep = Preprocessing(resize=64)
    photos = [prep.apply(image) for image in dataset_source("p", {"source": "skimage", "images": PHOTOS}).images(None)]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(photos), count)
    crops = np.empty((count, 3, 32, 32), dtype=np.uint8)
    for index, label in enumerate(labels):
        _, height, width = photos[label].shape
        top, left = rng.integers(0, height - 31), rng.integers(0, width - 31)
        crops[index] = photos[label][:, top:top + 32, left:left + 32]
    return crops.reshape(count, -1), labels.tolist()


def _tiny_cifar10(folder: Path) -> Path:
    images, labels = _photo_crops(200, 0)
    test_images, test_labels = _photo_crops(60, 1)
    members = {f"data_batch_{i + 1}": {"data": images[40 * i:40 * (i + 1)], "labels": labels[40 * i:40 * (i + 1)]}
               for i in range(5)}
    members["test_batch"] = {"data": test_images, "labels": test_labels}
    members["batches.meta"] = {"label_names": PHOTOS + [f"unused{i}" for i in range(6)]}
    path = folder / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, entry in members.items():
            data = pickle.dumps(entry)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.slow
def test_paper_cifar10_config_end_to_end_on_a_served_archive_of_photo_crops(served, tmp_path):  # noqa: F811
    folder, base_url = served
    archive = _tiny_cifar10(folder)
    download = {"url": f"{base_url}/{archive.name}", "md5": hashlib.md5(archive.read_bytes()).hexdigest()}
    config = yaml.safe_load(PAPER_CIFAR10.read_text())
    config["outdir"] = "results"
    for dataset in config["datasets"].values():
        dataset.update(download)
    zoo = config["zoos"]["cifar10"]
    widths = {1: 0.125, 0.5: 0.0625}  # the config's widths, scaled down alike
    zoo["archs"] = [{**arch, "width": widths[arch["width"]]} for arch in zoo["archs"]]
    zoo.update({"seeds": [0, 1], "epochs": [1, 2]})
    zoo["training"].update({"batch_size": 20, "momentum": 0.9})
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(config))
    snakemake(tmp_path, "--cores", "2", config=tmp_path / "paper.yaml", timeout=1800)

    checkpoints = read_table(tmp_path, "checkpoints")
    assert len(checkpoints) == 3 * 2 * 2 * 2 and (checkpoints["status"] == "ok").all()
    assert sorted(checkpoints["width"].unique()) == [0.0625, 0.125]
    assert checkpoints[["train_loss", "train_accuracy", "test_accuracy"]].notna().all().all()
    last_true = checkpoints[(checkpoints["step"] == 2) & (checkpoints["labels"] == "true")]
    assert (last_true["test_accuracy"] > 1 / len(PHOTOS)).all(), last_true[["run", "test_accuracy"]]
    assert last_true["test_accuracy"].mean() > 0.5
    run = tmp_path / "results/zoos/cifar10/runs/vgg11_bn_cifar-w0.125-s0-true"
    assert sorted(path.name for path in run.glob("*.safetensors")) == [f"epoch00000{e}.safetensors" for e in (0, 1, 2)]

    table = read_table(tmp_path, "paper_comparison")
    check_comparison(table, expected_comparison(checkpoints, read_table(tmp_path, "consistency"),
                                                read_table(tmp_path, "fits")), "cifar10")
    assert len(table) == 7
    assert (tmp_path / "results/plots/paper_comparison.png").stat().st_size > 0


@pytest.mark.parametrize("change,message", [
    (lambda zoo: zoo.update(test_dataset="cifar10_val"), "zoos.cifar10.test_dataset: 'cifar10_val' is not a dataset"),
    (lambda zoo: zoo["archs"].append({"arch": "resnet18_cifar", "width": 1}),
     "two entries train the same run resnet18_cifar-w1-s0-true"),
    (lambda zoo: zoo["archs"].append({"arch": "test_resnet", "width": 2}), "width applies to .* not to the timm"),
])
def test_an_unknown_test_set_a_run_listed_twice_or_a_width_for_timm_is_refused_naming_it(tmp_path, change, message):
    config = _validated(PAPER_CIFAR10, tmp_path)
    change(config["zoos"]["cifar10"])
    with pytest.raises(ValueError, match=message):
        Study(config, cache_path=tmp_path / "geometry.json")
