"""The default study's shape at a test's size, run end to end, and every figure it wrote read back.

The run's figures are drawn again, in this process, by the functions its two plotting jobs call, on the files
the run wrote; each drawn figure must render to exactly the PNG the run left, and then its artists (lines,
points, images, texts) must show what its title promises, with the counts the tables give.
"""

import io
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.collections import PathCollection, QuadMesh
from safetensors.torch import load_file

from firstlayer_zoo import plots
from firstlayer_zoo.paths import checkpoint_file
from firstlayer_zoo.plan import Study
from plot_checks import overlapping_texts
from workflow_checks import read_table
from workflow_helpers import ROOT, snakemake

pytestmark = pytest.mark.slow

TINY_STUDY = ROOT / "tests" / "tiny_study.yaml"
STUDY_FIGURES = ("profiles", "fits", "fit_quality", "training_time", "whitening", "autocorrelation", "colour",
                 "paper_comparison")


def _study(workdir: Path) -> Study:
    from snakemake.utils import validate

    config = {**yaml.safe_load(TINY_STUDY.read_text()), "outdir": "results"}
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return Study(config, cache_path=workdir / "results" / ".plan" / "stem_geometry.json")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(workdir, study, tables, {path under the workdir: figure drawn again}, plot_bases' counts)."""
    workdir = tmp_path_factory.mktemp("study")
    snakemake(workdir, "--cores", "2", config=TINY_STUDY)
    study = _study(workdir)
    tables = {name: read_table(workdir, name) for name in
              ("checkpoints", "profiles", "fits", "autocorrelation", "paper_comparison", "consistency",
               "consistency_groups")}
    paths, settings = study.paths, study.plots
    drawn = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "save", lambda figure, path: drawn.__setitem__(str(path), figure))
        plots.plot_study(tables, {name: paths.plot(name) for name in STUDY_FIGURES}, settings.fit_examples)
        slugs = [basis.slug for basis in study.bases]
        counts = plots.plot_bases(
            tables["checkpoints"], tables["consistency"], tables["consistency_groups"],
            sorted(str(path) for path in (workdir / "results" / "analyses").rglob("*.npz")),
            {slug: (str(workdir / study.basis_files[basis]), basis.kernel_size)
             for slug, basis in zip(slugs, study.bases)},
            {slug: (paths.basis_plot("consistency", slug), paths.basis_plot("filters", slug)) for slug in slugs},
            settings.heatmap_checkpoints, settings.filter_checkpoints)
    yield workdir, study, tables, drawn, counts
    plots.plt.close("all")


def _ok_last(checkpoints: pd.DataFrame) -> pd.DataFrame:
    return plots.last_checkpoint_of_each_run(checkpoints)


def test_the_study_has_the_default_studys_shape(run):
    _, study, tables, _, _ = run
    checkpoints = tables["checkpoints"]
    assert (checkpoints["status"] == "ok").all() and len(checkpoints) == 3 * 2 * 2 * 2
    assert len(study.bases) == 2 and checkpoints.groupby("basis")["arch"].nunique().sort_values().tolist() == [1, 2]
    assert set(checkpoints["labels"]) == {"true", "random"} and set(checkpoints["seed"]) == {0, 1}


def test_every_figure_the_run_wrote_is_the_figure_drawn_again_here(run):
    workdir, _, _, drawn, _ = run
    written = sorted(str(path.relative_to(workdir)) for path in (workdir / "results" / "plots").rglob("*.png"))
    assert written == sorted(drawn) and len(written) == len(STUDY_FIGURES) + 2 * 2
    for path, figure in drawn.items():
        buffer = io.BytesIO()
        figure.savefig(buffer, **plots.SAVE_OPTIONS)
        buffer.seek(0)
        np.testing.assert_array_equal(matplotlib.image.imread(buffer, format="png"),
                                      matplotlib.image.imread(workdir / path), err_msg=path)


def _nothing_to_show(figure) -> bool:
    return len(figure.axes) == 1 and not figure.axes[0].axison and len(figure.axes[0].texts) == 1


def test_no_figure_says_there_is_nothing_to_show(run):
    _, _, tables, drawn, _ = run
    assert all(len(tables[name]) for name in ("checkpoints", "fits", "autocorrelation", "paper_comparison"))
    assert [path for path, figure in drawn.items() if _nothing_to_show(figure)] == []


def _rows_of_pictures(figure) -> dict[str, list]:
    """The filters figure's rows: the label over each row, the images of its pictures."""
    axes = figure.axes
    per_row = next(i for i, axis in enumerate(axes[1:], 1) if axis.get_title(loc="left"))
    rows = {}
    for start in range(0, len(axes), per_row):
        line = axes[start:start + per_row]
        rows[line[0].get_title(loc="left")] = [axis.images[0].get_array() for axis in line if axis.images]
    return rows


def test_the_filters_figure_draws_its_chosen_checkpoints_trained_and_initial(run):
    workdir, study, tables, drawn, counts = run
    checkpoints = tables["checkpoints"].set_index("checkpoint")
    wanted = study.plots.filter_checkpoints
    for basis in study.bases:
        figure = drawn[study.paths.basis_plot("filters", basis.slug)]
        members = checkpoints[checkpoints["basis"] == basis.slug]
        runs = members["run"].nunique()
        expected = min(wanted, runs)
        assert counts[basis.slug] == (len(members), expected)
        assert f"({expected} checkpoints;" in figure.texts[0].get_text()
        rows = _rows_of_pictures(figure)
        labels = list(rows)
        assert labels[0] == "basis: top components" and len(rows[labels[0]]) == 16
        chosen = [label.removesuffix(": trained") for label in labels[1::2]]
        assert labels[1:] == [f"{name}: {kind}" for name in chosen for kind in ("trained", "initial")]
        assert len(chosen) == expected == len(set(chosen))
        # Each run's last checkpoint, every architecture of the basis among them.
        assert set(members.loc[chosen, "arch"]) == set(members["arch"])
        last_step = members.groupby("run")["step"].max()
        assert (members.loc[chosen, "step"].to_numpy() == last_step[members.loc[chosen, "run"]].to_numpy()).all()
        for name in chosen:
            row = checkpoints.loc[name]
            key = f"{row['first_conv']}.weight"
            trained = load_file(workdir / row["uri"])[key].numpy()
            initial = load_file(workdir / checkpoint_file(str(Path(row["uri"]).parent), "step", 0))[key].numpy()
            for kind, weights in (("trained", trained), ("initial", initial)):
                pictures = rows[f"{name}: {kind}"]
                assert len(pictures) == min(16, len(weights))
                for picture, filters in zip(pictures, weights):
                    np.testing.assert_allclose(picture, plots.filter_picture(filters.astype(np.float64)),
                                               rtol=1e-6, atol=1e-7)
            assert not np.array_equal(trained, initial)


def test_each_heatmap_draws_every_pair_of_its_basis_checkpoints(run):
    _, study, tables, drawn, _ = run
    checkpoints, profiles = tables["checkpoints"], tables["profiles"]
    for basis in study.bases:
        figure = drawn[study.paths.basis_plot("consistency", basis.slug)]
        members = checkpoints.loc[checkpoints["basis"] == basis.slug, "checkpoint"]
        (axis,) = [axis for axis in figure.axes if any(isinstance(c, QuadMesh) for c in axis.collections)
                   and axis.get_yticklabels() and axis.get_yticklabels()[0].get_text() in set(members)]
        order = [label.get_text() for label in axis.get_yticklabels()]
        assert sorted(order) == sorted(members)
        assert f"({len(members)} checkpoints)" in figure._suptitle.get_text()
        (mesh,) = [c for c in axis.collections if isinstance(c, QuadMesh)]
        energies = (profiles[profiles["checkpoint"].isin(order)]
                    .pivot(index="checkpoint", columns="component", values="energy").loc[order])
        np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(len(order), len(order)),
                                   np.corrcoef(energies.to_numpy()), atol=1e-12)


def test_the_profiles_figure_draws_each_arch_and_label_regime_against_the_init(run):
    _, study, tables, drawn, _ = run
    last = _ok_last(tables["checkpoints"])
    data = tables["profiles"].merge(last[["checkpoint", "arch", "labels", "basis"]], on="checkpoint")
    figure = drawn[study.paths.plot("profiles")]
    panels = {axis.get_title(): axis for axis in figure.axes if axis.axison}
    assert set(panels) == {f"{arch}\n{basis}" for arch, basis in zip(data["arch"], data["basis"])}
    for title, axis in panels.items():
        arch = title.split("\n")[0]
        members = data[data["arch"] == arch]
        lines = {line.get_label(): line for line in axis.lines}
        assert set(lines) == {"trained: true labels", "trained: random labels", "initialisation"}
        for labels in ("true", "random"):
            expected = (members[members["labels"] == labels]
                        .pivot(index="component", columns="checkpoint", values="energy").median(axis=1))
            np.testing.assert_allclose(lines[f"trained: {labels} labels"].get_ydata(), expected.to_numpy())
        init = members.pivot(index="component", columns="checkpoint", values="energy_init").median(axis=1)
        np.testing.assert_allclose(lines["initialisation"].get_ydata(), init.to_numpy())


def test_the_fit_figures_show_the_fits_table(run):
    _, study, tables, drawn, _ = run
    fits, checkpoints = tables["fits"].set_index("checkpoint"), tables["checkpoints"]
    # Examples: one per (arch, labels), each titled with its checkpoint and its fit's r.
    examples = [axis for axis in drawn[study.paths.plot("fits")].axes if axis.axison]
    groups = _ok_last(checkpoints).groupby(["arch", "labels"]).ngroups
    assert len(examples) == min(study.plots.fit_examples, groups) == 6
    for axis in examples:
        name, r = axis.get_title().split("\nr = ")
        assert float(r) == pytest.approx(fits.at[name, "fit_r"], abs=5e-4)
    shown = {tuple(checkpoints.set_index("checkpoint").loc[axis.get_title().split("\n")[0], ["arch", "labels"]])
             for axis in examples}
    assert len(shown) == 6
    # Quality: every checkpoint counted once, the median as the title says.
    (axis,) = drawn[study.paths.plot("fit_quality")].axes
    assert sum(patch.get_height() for patch in axis.patches) == len(fits) == len(checkpoints)
    assert f"median r = {fits['fit_r'].median():.3f}" in axis.get_title()
    # Along training: one line per (arch, labels), the median tau*s1 over seeds at each step.
    (axis,) = drawn[study.paths.plot("training_time")].axes
    data = fits.reset_index().merge(checkpoints, on="checkpoint")
    expected = sorted(tuple(group.groupby("step")["tau_s1"].median().round(9))
                      for _, group in data.groupby(["arch", "labels"]))
    lines = [line for line in axis.lines if len(line.get_xdata())]
    assert all(list(line.get_xdata()) == [4, 8] for line in lines)
    assert sorted(tuple(np.round(line.get_ydata(), 9)) for line in lines) == expected
    # Whitening: one point per checkpoint at its two spreads.
    (axis,) = drawn[study.paths.plot("whitening")].axes
    points = np.concatenate([c.get_offsets() for c in axis.collections if isinstance(c, PathCollection)])
    np.testing.assert_allclose(sorted(map(tuple, points)),
                               sorted(map(tuple, fits[["input_spread", "output_spread"]].to_numpy())))


def test_the_image_space_figures_show_each_basis_last_checkpoints(run):
    _, study, tables, drawn, _ = run
    last = _ok_last(tables["checkpoints"])
    curves = tables["autocorrelation"].merge(last[["checkpoint", "basis", "arch"]], on="checkpoint")
    panels = {axis.get_title(): axis for axis in drawn[study.paths.plot("autocorrelation")].axes if axis.axison}
    assert set(panels) == {basis.slug for basis in study.bases}
    for slug, axis in panels.items():
        members = curves[curves["basis"] == slug]
        lines = {line.get_label(): line for line in axis.lines}
        np.testing.assert_allclose(lines["data (identity filters)"].get_ydata(),
                                   members.groupby("offset")["data"].median())
        for arch, rows in members.groupby("arch"):
            np.testing.assert_allclose(lines[f"trained {arch} (median, range)"].get_ydata(),
                                       rows.groupby("offset")["trained"].median())
    panels = {axis.get_title(): axis for axis in drawn[study.paths.plot("colour")].axes if axis.axison}
    assert set(panels) == {basis.slug for basis in study.bases}
    for slug, axis in panels.items():
        points = sum(len(c.get_offsets()) for c in axis.collections if isinstance(c, PathCollection))
        assert points == 2 * (last["basis"] == slug).sum()  # trained and initial, each run's last checkpoint


def test_the_paper_comparison_has_the_studys_rows_beside_the_papers_and_draws_each(run):
    _, study, tables, drawn, _ = run
    table, checkpoints = tables["paper_comparison"], tables["checkpoints"]
    # Every architecture stands in for the paper's VGG-11 (one row per quantity it has the ingredients of),
    # the two that share a basis for its VGG-11 vs ResNet-18; the photos beside the paper's CIFAR-10.
    per_arch = {"other seed", "trained vs its initialisation", "fit r of the analytic profile",
                "random labels: trained vs its initialisation", "true vs random labels"}
    archs = sorted(checkpoints["arch"].unique())
    rows = sorted(zip(table["quantity"], table["setting"].str.split(", ").str[0]))
    assert rows == sorted([(quantity, arch) for quantity in per_arch for arch in archs]
                          + [("other architecture", "test_byobnet vs test_resnet")])
    assert table["paper_setting"].str.split("; ").str[1].eq("cifar10").all()
    assert table["setting"].str.contains("; photos, none of the paper's datasets; basis ").all()
    assert (table["n"] > 0).all() and table["measured"].between(-1, 1).all()
    figure = drawn[study.paths.plot("paper_comparison")]
    (axis,) = figure.axes
    labels = [label.get_text() for label in axis.get_yticklabels()]  # row 0 at the top
    assert len(labels) == len(table)
    for label, row in zip(labels, table.itertuples()):
        assert label.startswith(f"{row.quantity}\npaper: {row.paper_setting.rsplit('; ', 1)[0]}\nhere: ")
        assert label.endswith(f"; n = {row.n}") and row.setting.split(";")[0] in label
    paper, ours = axis.containers
    rows = np.arange(len(table))[::-1]
    for container, values in ((paper, table["paper_value"]), (ours, table["measured"])):
        np.testing.assert_allclose(np.asarray(container.lines[0].get_xdata(), dtype=float), values)
    np.testing.assert_allclose(np.asarray(paper.lines[0].get_ydata(), dtype=float), rows + 0.15)
    assert overlapping_texts(figure) == []
