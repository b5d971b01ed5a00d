"""The study's figures, drawn from its tables only."""

from __future__ import annotations

import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402
from matplotlib.transforms import offset_copy  # noqa: E402
from scipy.cluster.hierarchy import linkage  # noqa: E402
from scipy.spatial.distance import squareform  # noqa: E402

from .atomic import atomic_path  # noqa: E402
from .profiles import analytic_profile  # noqa: E402

GROUPS = ["arch", "labels", "seed"]
LEGEND_VALUES = 12  # values of each group named in the consistency legend; the rest are counted
# Beyond these, a study-wide figure would be unreadable and slow to draw (a whole timm zoo has 1,100 archs over
# 170 bases): archs past the most frequent are drawn as one "other archs" group, bases as one panel per
# dataset, kernel size and channel count.
MOST_ARCHS = 10
MOST_PANELS = 12
# Rows of the paper comparison (one per quantity and setting of ours: a whole zoo has one per arch, 1,300); past
# these, one row per quantity and paper setting.
MOST_COMPARISON_ROWS = 24
# Filter pictures' spacing along a row of the filters figure, in pictures: a gap of a fifth of one between two.
PICTURE_PITCH = 1.2


# How every figure is written (tests render a figure the same way to compare it with a run's file).
SAVE_OPTIONS = {"format": "png", "dpi": 110, "bbox_inches": "tight"}


def save(figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, **SAVE_OPTIONS)
    plt.close(figure)


def _ok(checkpoints: pd.DataFrame) -> pd.DataFrame:
    return checkpoints[checkpoints["status"] == "ok"]


def last_checkpoint_of_each_run(checkpoints: pd.DataFrame) -> pd.DataFrame:
    """Each run's last checkpoint; checkpoints without a run or step stand for themselves."""
    ok = _ok(checkpoints)
    has_run = ok["run"].notna() & ok["step"].notna()
    last = ok[has_run].sort_values("step").groupby(["zoo", "run"]).tail(1)
    return pd.concat([last, ok[~has_run]])


def draw_nothing_to_show(path: str | Path, message: str) -> None:
    """A figure that says why there is nothing to draw: every planned figure exists, even for a study without data."""
    figure, axis = plt.subplots(figsize=(5, 2))
    axis.axis("off")
    axis.text(0.5, 0.5, message, ha="center", va="center")
    save(figure, path)


def _known(values: pd.Series, unknown: str) -> pd.Series:
    """Metadata as labels, a value the source does not know spelled out instead of left blank."""
    return values.map(lambda value: unknown if pd.isna(value) else _group_label(value))


def _few_archs(archs: pd.Series) -> pd.Series:
    """Arch labels, the MOST_ARCHS most frequent kept and the rest lumped into one group that says how many."""
    counts = archs.value_counts()
    if len(counts) <= MOST_ARCHS:
        return archs
    kept = set(counts.index[:MOST_ARCHS - 1])
    return archs.where(archs.isin(kept), f"{len(counts) - len(kept)} other archs")


def _panels_of_bases(data: pd.DataFrame, checkpoints: pd.DataFrame) -> pd.Series:
    """Each row's panel: its basis, or past MOST_PANELS bases, its dataset, kernel size and channels (the
    preprocessings within counted in the label)."""
    if data["basis"].nunique() <= MOST_PANELS:
        return data["basis"].astype(str)
    shape = data[["checkpoint"]].merge(checkpoints[["checkpoint", "dataset", "kernel_size", "in_chans"]],
                                       on="checkpoint", how="left")
    label = (shape["dataset"].astype(str) + ": k=" + shape["kernel_size"].map(_group_label)
             + ", c=" + shape["in_chans"].map(_group_label))
    label.index = data.index
    bases = data.groupby(label)["basis"].transform("nunique")
    return label + " (" + bases.astype(str) + " preprocessings)"


def _in_number_order(label: str) -> list:
    """Sort key reading the numbers in a label as numbers: k=3 before k=12."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", label)]


def _kind(labels: pd.Series) -> pd.Series:
    return labels.map(lambda value: "trained, labels unknown" if pd.isna(value) else f"trained: {value} labels")


def _draw_profiles(axis, curves: pd.DataFrame, colour, label: str, one_line_each: bool) -> None:
    """Checkpoints' profiles (columns of `curves`): a median with a min-max band, or one thin line each."""
    if one_line_each or curves.shape[1] == 1:
        axis.plot(curves.index, curves.to_numpy(), color=colour, lw=0.8, alpha=0.8)
        axis.plot([], [], color=colour, label=label)
        return
    axis.fill_between(curves.index, curves.min(axis=1), curves.max(axis=1), color=colour, alpha=0.25, lw=0)
    axis.plot(curves.index, curves.median(axis=1), color=colour, label=label)


def plot_profiles(checkpoints: pd.DataFrame, profiles: pd.DataFrame, path: str | Path) -> None:
    """Normalised energy by component of each run's last checkpoint, per arch and basis, against its init.

    Checkpoints of one known arch are summarised by a median and a min-max band; those whose arch is
    unknown need not be related, so each is drawn as its own line.
    """
    last = last_checkpoint_of_each_run(checkpoints)
    data = profiles.merge(last[["checkpoint", "basis", "arch", "labels"]], on="checkpoint")
    if data.empty:
        draw_nothing_to_show(path, "no analysed checkpoints")
        return
    data["panel"] = _known(data["arch"], "arch unknown") + "\n" + data["basis"].astype(str)
    zoo_scale = data["panel"].nunique() > MOST_PANELS
    if zoo_scale:  # every arch of a panel summarised together
        data["panel"] = _panels_of_bases(data, checkpoints)
    data["kind"] = _kind(data["labels"])
    kinds = sorted(data["kind"].unique())
    palette = dict(zip(kinds, sns.color_palette("tab10", len(kinds))))
    panels = sorted(data["panel"].unique(), key=_in_number_order)
    columns = min(3, len(panels))
    rows = int(np.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.3 * rows), squeeze=False)
    init_known = data["energy_init"].notna().any()
    summarised = data["arch"].notna().any()
    for axis, panel in zip(axes.flat, panels):
        members = data[data["panel"] == panel]
        one_line_each = members["arch"].isna().all() and not zoo_scale
        for kind, group in members.groupby("kind"):
            curves = group.pivot(index="component", columns="checkpoint", values="energy")
            _draw_profiles(axis, curves, palette[kind], kind, one_line_each)
        init = members.dropna(subset=["energy_init"])
        if not init.empty:
            curves = init.pivot(index="component", columns="checkpoint", values="energy_init")
            _draw_profiles(axis, curves, "0.55", "initialisation", one_line_each)
        axis.set_yscale("log")
        axis.set_title(panel + (" (one line per checkpoint)" if one_line_each else ""), fontsize=8)
        axis.set_xlabel("PCA component (descending variance)")
        axis.set_ylabel("normalised energy e/max(e)")
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    what = "vs their initialisation (grey, where known)" if init_known else "(initialisation unknown)"
    note = "\nline: median over an arch's checkpoints, band: their range" if summarised else ""
    if zoo_scale:
        note = f"\nline: median over the panel's checkpoints ({data['arch'].nunique()} archs in all), band: their range"
    figure.suptitle(f"Stem energy profiles of trained checkpoints {what}{note}", fontsize=10)
    figure.tight_layout()
    save(figure, path)


def _group_label(value) -> str:
    """Missing metadata (no seed for an exported model) reads n/a; a seed column with gaps is float: show 3, not 3.0."""
    if pd.isna(value):
        return "n/a"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def consistency_square(ids: list[str], pairs: pd.DataFrame) -> np.ndarray:
    """The symmetric r matrix over `ids` from the consistency table's unordered pairs; 1 on the diagonal."""
    index = pd.Index(ids)
    a = index.get_indexer(pairs["checkpoint_a"])
    b = index.get_indexer(pairs["checkpoint_b"])
    known = (a >= 0) & (b >= 0)
    matrix = np.full((len(ids), len(ids)), np.nan)
    np.fill_diagonal(matrix, 1.0)
    r = pairs["r"].to_numpy(dtype=np.float64)[known]
    matrix[a[known], b[known]] = r
    matrix[b[known], a[known]] = r
    return matrix


def consistency_linkage(matrix: np.ndarray) -> np.ndarray:
    """Average-linkage tree on the distance 1 - r: one O(n^2) pass, shared by rows and columns."""
    distance = 1.0 - np.nan_to_num(matrix, nan=0.0)
    np.fill_diagonal(distance, 0.0)
    return linkage(squareform(np.clip(distance, 0.0, 2.0), checks=False), method="average")


def plot_consistency(checkpoints: pd.DataFrame, consistency: pd.DataFrame, groups: pd.DataFrame, basis: str,
                     path: str | Path, max_checkpoints: int = 300) -> None:
    """Clustered matrix of profile correlations within one basis: of checkpoints (groups marked) while the
    basis has at most `max_checkpoints` and every pair is tabulated, else of group means."""
    members = _ok(checkpoints)
    members = members[members["basis"] == basis].set_index("checkpoint")
    if len(members) < 2:
        draw_nothing_to_show(path, f"{basis}: fewer than two analysed checkpoints")
        return
    pairs = consistency[consistency["basis"] == basis]
    every_pair = pairs["rank"].isna().all() and len(pairs) == len(members) * (len(members) - 1) // 2
    if len(members) <= max_checkpoints and every_pair:
        _checkpoint_heatmap(members, pairs, basis, path)
    else:
        _group_heatmap(groups[groups["basis"] == basis], basis, len(members), path)


def _checkpoint_heatmap(members: pd.DataFrame, pairs: pd.DataFrame, basis: str, path: str | Path) -> None:
    ids = list(members.index)
    square = consistency_square(ids, pairs)
    matrix = pd.DataFrame(square, index=ids, columns=ids)
    tree = consistency_linkage(square)
    colours, handles = {}, []
    palettes = ["tab10", "Set2", "Pastel1"]
    for group, palette_name in zip(GROUPS, palettes):
        values = _known(members[group], "unknown")
        order = sorted(values.unique(), key=lambda v: (v == "unknown", not v.isdigit(), int(v) if v.isdigit() else 0, v))
        palette = dict(zip(order, sns.color_palette(palette_name, len(order))))
        colours[group] = values.map(palette)
        listed = list(palette.items())[:LEGEND_VALUES]
        handles += [Patch(color=colour, label=f"{group}: {value}") for value, colour in listed]
        if len(palette) > len(listed):
            handles.append(Patch(color="white", label=f"{group}: {len(palette) - len(listed)} more not listed"))
    side = min(max(0.18 * len(ids) + 4, 7), 16)
    # The colour bar sits in the top-left corner below the title; the strips get room for their names.
    grid = sns.clustermap(matrix, cmap="viridis", vmin=float(np.nanmin(square)), vmax=1,
                          row_linkage=tree, col_linkage=tree,
                          row_colors=pd.DataFrame(colours), figsize=(side, side), colors_ratio=0.035,
                          xticklabels=False, yticklabels=len(ids) <= 80,
                          cbar_pos=(0.02, 0.8, 0.03, 0.12), cbar_kws={"label": "Pearson r"})
    grid.ax_heatmap.tick_params(axis="y", labelsize=6)
    grid.ax_row_colors.tick_params(axis="x", labelsize=7, labelrotation=90)
    grid.figure.suptitle(f"Profile consistency in basis {basis} ({len(ids)} checkpoints)", y=1.0, va="bottom")
    # The legend goes below the strip names (the group names, vertical at 7 pt: under 40 pt long).
    below_strips = offset_copy(grid.ax_heatmap.transAxes, grid.figure, y=-45, units="points")
    grid.figure.legend(handles=handles, loc="upper left", ncol=4, fontsize=7, frameon=False,
                       bbox_to_anchor=(0, 0), bbox_transform=below_strips)
    save(grid.figure, path)


def group_square(groups: pd.DataFrame) -> pd.DataFrame:
    """The symmetric matrix of mean r between groups, from the group table's upper triangle."""
    names = sorted(set(groups["group_a"]) | set(groups["group_b"]))
    index = pd.Index(names)
    matrix = np.full((len(names), len(names)), np.nan)
    a, b = index.get_indexer(groups["group_a"]), index.get_indexer(groups["group_b"])
    matrix[a, b] = matrix[b, a] = groups["mean_r"].to_numpy(dtype=np.float64)
    return pd.DataFrame(matrix, index=names, columns=names)


def _group_heatmap(groups: pd.DataFrame, basis: str, n_checkpoints: int, path: str | Path) -> None:
    square = group_square(groups)
    # A group of one checkpoint has no pair within it: its diagonal is unknown, drawn as 1.
    values = square.to_numpy(copy=True)
    np.fill_diagonal(values, np.where(np.isnan(np.diag(values)), 1.0, np.diag(values)))
    square = pd.DataFrame(values, index=square.index, columns=square.columns)
    side = min(0.25 * len(square) + 5, 18)
    labelled = len(square) <= 60
    tree = consistency_linkage(values) if len(square) > 1 else None
    grid = sns.clustermap(square, cmap="viridis", vmin=float(np.nanmin(values)), vmax=1,
                          row_linkage=tree, col_linkage=tree, row_cluster=tree is not None,
                          col_cluster=tree is not None, figsize=(side, side),
                          xticklabels=False, yticklabels=labelled, cbar_kws={"label": "mean Pearson r"})
    grid.ax_heatmap.tick_params(axis="y", labelsize=6)
    grid.figure.suptitle(f"Profile consistency in basis {basis}: mean r between {len(square)} groups "
                         f"of its {n_checkpoints} checkpoints (seeds pooled)", y=1.01)
    save(grid.figure, path)


def plot_fit_examples(checkpoints: pd.DataFrame, profiles: pd.DataFrame, fits: pd.DataFrame,
                      count: int, path: str | Path) -> None:
    """A few checkpoints' profiles with the fitted analytic profile, r in the title.

    One example per (arch, labels); a checkpoint whose arch or labels are unknown is a group of its own.
    """
    last = last_checkpoint_of_each_run(checkpoints)
    groups = pd.DataFrame({column: last[column].astype(object).where(last[column].notna(), last["checkpoint"])
                           for column in ("arch", "labels")})
    last = last[~groups.duplicated().to_numpy()].head(count)
    chosen = fits[fits["checkpoint"].isin(last["checkpoint"])]
    if chosen.empty:
        draw_nothing_to_show(path, "no fitted checkpoints")
        return
    columns = min(3, len(chosen))
    rows = int(np.ceil(len(chosen) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis, fit in zip(axes.flat, chosen.itertuples(index=False)):
        profile = profiles[profiles["checkpoint"] == fit.checkpoint].sort_values("component")
        analytic = analytic_profile(profile["eigenvalue"].to_numpy(), fit.tau)
        axis.plot(profile["component"], profile["energy"], "o", ms=3, label="measured")
        axis.plot(profile["component"], analytic / analytic.max(), "-", label=f"analytic, tau*s1={fit.tau_s1:.3g}")
        axis.set_yscale("log")
        axis.set_title(f"{fit.checkpoint}\nr = {fit.fit_r:.3f}", fontsize=8)
        axis.set_xlabel("component")
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(chosen):]:
        axis.axis("off")
    figure.tight_layout()
    save(figure, path)


def plot_fit_quality(checkpoints: pd.DataFrame, fits: pd.DataFrame, path: str | Path) -> None:
    data = fits.merge(checkpoints[["checkpoint", "arch"]], on="checkpoint")
    if data.empty:
        draw_nothing_to_show(path, "no fitted checkpoints")
        return
    data["arch"] = _few_archs(_known(data["arch"], "arch unknown"))
    figure, axis = plt.subplots(figsize=(6, 3.5))
    # Fixed edges over at least 0.01 of r: fits that (nearly) all agree would leave no room for 20 bins.
    low, high = data["fit_r"].min(), data["fit_r"].max()
    middle, half = (low + high) / 2, max((high - low) / 2, 0.005)
    sns.histplot(data=data, x="fit_r", hue="arch", multiple="stack",
                 bins=np.linspace(middle - half, middle + half, 21), ax=axis)
    axis.set_xlabel("Pearson r of the analytic fit")
    axis.set_title(f"Analytic fit over {len(data)} checkpoints (median r = {data['fit_r'].median():.3f})")
    save(figure, path)


def plot_training_time(checkpoints: pd.DataFrame, fits: pd.DataFrame, path: str | Path) -> None:
    """Fitted tau*s1 against training step: PCA-like early, towards whitening late."""
    data = fits.merge(checkpoints[["checkpoint", "arch", "labels", "seed", "step"]], on="checkpoint")
    data = data.dropna(subset=["step"])
    if data.empty:
        draw_nothing_to_show(path, "no checkpoints with a training step")
        return
    data["arch"] = _few_archs(_known(data["arch"], "arch unknown"))
    data["labels"] = _known(data["labels"], "unknown")
    figure, axis = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=data, x="step", y="tau_s1", hue="arch", style="labels", marker="o",
                 estimator="median", errorbar=("pi", 100), ax=axis)
    axis.set(xscale="log", yscale="log", xlabel="training step", ylabel="fitted tau * s1")
    _step_ticks(axis, sorted(data["step"].unique()))
    if len(axis.get_legend_handles_labels()[0]) > 12:
        sns.move_legend(axis, "upper left", bbox_to_anchor=(1.02, 1), fontsize=7, frameon=False)
    left_out = len(fits) - len(data)
    axis.set_title("Analytic training time along training\nline: median, band: range over seeds"
                   + (f"; {left_out} checkpoint(s) without a known step left out" if left_out else ""), fontsize=9)
    save(figure, path)


def _step_ticks(axis, steps: list) -> None:
    """Label the training steps that occur, leaving out any whose label would touch its left neighbour's."""
    axis.xaxis.set_major_locator(FixedLocator(steps))
    axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.xaxis.set_minor_locator(NullLocator())
    renderer = axis.figure.canvas.get_renderer()
    axis.figure.canvas.draw()
    kept, right = [], -np.inf
    gap = 4  # pixels between labels
    for step, label in zip(steps, axis.get_xticklabels()):
        box = label.get_window_extent(renderer)
        if box.x0 >= right + gap:
            kept.append(step)
            right = box.x1
    axis.xaxis.set_major_locator(FixedLocator(kept))


def plot_whitening(checkpoints: pd.DataFrame, fits: pd.DataFrame, path: str | Path) -> None:
    data = fits.merge(checkpoints[["checkpoint", "arch", "labels"]], on="checkpoint")
    if data.empty:
        draw_nothing_to_show(path, "no fitted checkpoints")
        return
    data["arch"] = _few_archs(_known(data["arch"], "arch unknown"))
    data["labels"] = _known(data["labels"], "unknown")
    figure, axis = plt.subplots(figsize=(5, 4.5))
    sns.scatterplot(data=data, x="input_spread", y="output_spread", hue="arch", style="labels", ax=axis)
    top = float(np.nanmax(data[["input_spread", "output_spread"]].to_numpy())) * 1.05
    axis.plot([0, top], [0, top], "k--", lw=1, label="no change")
    axis.set(xlim=(0, top), ylim=(0, top),
             xlabel="input spread log10(s1/sp)", ylabel="output spread log10(max/min e^2 s)")
    axis.set_title("Whitening: output spread below input spread")
    axis.legend(fontsize=7)
    save(figure, path)


# The paper's reference levels for the autocorrelation of output maps at 10 px (Chowers & Weiss, ICML 2023).
PAPER_AUTOCORRELATION_LEVELS = [
    (0.5, "paper, raw images: above 0.5 at 10 px"),
    (0.2, "paper, learned stems: about 0.2"),
    (0.0, "perfect whitening: 0"),
]


def _basis_panels(count: int, width: float = 4.2, height: float = 3.2):
    columns = min(3, count)
    rows = int(np.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for axis in list(axes.flat)[count:]:
        axis.axis("off")
    return figure, list(axes.flat)


def plot_autocorrelation(checkpoints: pd.DataFrame, autocorrelation: pd.DataFrame, path: str | Path) -> None:
    """Output-map autocorrelation against offset, per basis: the data, initialisations and trained stems."""
    last = last_checkpoint_of_each_run(checkpoints)
    data = autocorrelation.merge(last[["checkpoint", "basis", "arch"]], on="checkpoint")
    if data.empty:
        draw_nothing_to_show(path, "no autocorrelation measured (analysis.autocorrelation_offsets is empty?)")
        return
    data["arch"] = _few_archs(_known(data["arch"], "arch unknown"))
    data["basis"] = _panels_of_bases(data, checkpoints)
    bases = sorted(data["basis"].unique(), key=_in_number_order)
    figure, axes = _basis_panels(len(bases))
    palette = dict(zip(sorted(data["arch"].unique()), sns.color_palette("tab10", data["arch"].nunique())))
    for axis, basis in zip(axes, bases):
        members = data[data["basis"] == basis]
        by_offset = members.groupby("offset")
        axis.plot(by_offset["data"].median(), "k-o", ms=3, label="data (identity filters)")
        if members["init"].notna().any():
            init = by_offset["init"]
            axis.plot(init.median(), "-o", color="0.55", ms=3, label="initialisations (median, range)")
            axis.fill_between(init.min().index, init.min(), init.max(), color="0.55", alpha=0.2, lw=0)
        for arch, rows in members.groupby("arch"):
            trained = rows.groupby("offset")["trained"]
            axis.plot(trained.median(), "-o", ms=3, color=palette[arch], label=f"trained {arch} (median, range)")
            axis.fill_between(trained.min().index, trained.min(), trained.max(), color=palette[arch],
                              alpha=0.2, lw=0)
        for level, label in PAPER_AUTOCORRELATION_LEVELS:
            axis.axhline(level, color="k", ls=":", lw=0.8)
            axis.annotate(label, (0.01, level), xycoords=("axes fraction", "data"), fontsize=6,
                          va="bottom", color="0.3")
        axis.set(xlabel="offset (input pixels)", ylabel="autocorrelation of output maps", ylim=(-0.1, 1.02))
        axis.set_title(basis, fontsize=8)
        axis.legend(fontsize=6, loc="upper right")
    figure.suptitle("Whitening in image space: output-map autocorrelation by offset", y=1.0)
    figure.tight_layout()
    save(figure, path)


@contextmanager
def _seeded_global_rng(seed: int):
    """numpy's global RNG seeded for a block, and given back its state after it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def plot_colour(checkpoints: pd.DataFrame, fits: pd.DataFrame, path: str | Path) -> None:
    """Fraction of each stem's energy on colour-opponent channels, trained vs initialisation vs the data's variance."""
    data = fits.merge(last_checkpoint_of_each_run(checkpoints)[["checkpoint", "basis", "arch"]], on="checkpoint")
    data = data.dropna(subset=["colour_energy"])
    if data.empty:
        draw_nothing_to_show(path, "no 3-channel stems analysed")
        return
    data["arch"] = _few_archs(_known(data["arch"], "arch unknown"))
    data["basis"] = _panels_of_bases(data, checkpoints)
    long = pd.concat([
        data.assign(kind="trained", fraction=data["colour_energy"]),
        data.dropna(subset=["colour_energy_init"]).assign(kind="initialisation",
                                                          fraction=lambda d: d["colour_energy_init"]),
    ], ignore_index=True)
    bases = sorted(long["basis"].unique(), key=_in_number_order)
    figure, axes = _basis_panels(len(bases), width=4.6)
    for axis, basis in zip(axes, bases):
        members = long[long["basis"] == basis]
        with _seeded_global_rng(0):  # seaborn jitters with numpy's global RNG: the same tables, the same figure
            sns.stripplot(data=members, x="arch", y="fraction", hue="kind", dodge=True, size=4, ax=axis,
                          palette={"trained": "C0", "initialisation": "0.55"})
        # A panel of several preprocessings: the median of their data's variances.
        variance = data.loc[data["basis"] == basis, "colour_variance_data"].median()
        axis.axhline(variance, color="k", ls="--", lw=1, label=f"data's patch variance: {variance:.3f}")
        axis.axhline(2 / 3, color="k", ls=":", lw=0.8, label="random isotropic filters: 2/3")
        axis.set(ylim=(0, 1), xlabel="", ylabel="energy fraction on opponent channels")
        axis.set_title(basis, fontsize=8)
        axis.tick_params(axis="x", labelrotation=30, labelsize=7)
        axis.legend(fontsize=6)
    figure.suptitle("Colour: share of the stem's energy on red-green and blue-yellow contrasts", y=1.0)
    figure.tight_layout()
    save(figure, path)


def filter_picture(filters: np.ndarray) -> np.ndarray:
    """(c, k, k) -> (k, k, 3) in [0, 1]: zero is mid-grey, each filter scaled by its own largest magnitude."""
    peak = float(np.max(np.abs(filters)))
    picture = 0.5 + 0.5 * filters / peak if peak > 0 else np.full(filters.shape, 0.5)
    picture = np.moveaxis(picture, 0, -1)
    return np.repeat(picture, 3, axis=-1) if picture.shape[-1] == 1 else picture[..., :3]


def choose_for_pictures(analyses: list, count: int) -> list:
    """A bounded, repeatable selection: each run's last step, one per architecture first, then the rest by id."""
    last: dict = {}
    for analysis in analyses:
        if not analysis.ok or not analysis.has_filters:
            continue
        spec = analysis.checkpoint
        in_run = spec.run is not None and spec.step is not None
        key = (spec.zoo, spec.run) if in_run else (spec.zoo, spec.name)
        if key not in last or (spec.step or 0) > (last[key].checkpoint.step or 0):
            last[key] = analysis
    first, rest, seen = [], [], set()
    by_arch = sorted(last.values(), key=lambda a: (a.checkpoint.arch is None, a.checkpoint.arch or "",
                                                   a.checkpoint.zoo, a.checkpoint.name))
    for analysis in by_arch:
        (rest if analysis.checkpoint.arch in seen else first).append(analysis)
        seen.add(analysis.checkpoint.arch)
    return (first + rest)[:count]


def plot_filters(analyses: list, eigenvectors: np.ndarray, kernel_size: int, in_chans: int, basis: str,
                 count: int, path: str | Path, per_row: int = 16) -> None:
    """The basis' top components, then for a few checkpoints their first filters, trained and initial, as pictures."""
    chosen = choose_for_pictures(analyses, count)
    rows = [("basis: top components", [eigenvectors[:, i].reshape(in_chans, kernel_size, kernel_size)
                                       for i in range(min(per_row, eigenvectors.shape[1]))])]
    for analysis in chosen:
        name = analysis.checkpoint.id
        rows.append((f"{name}: trained", list(analysis.filters_kept[:per_row])))
        if analysis.init_filters_kept is not None:
            rows.append((f"{name}: initial", list(analysis.init_filters_kept[:per_row])))
    # One axis a row, its pictures side by side as images of their own: an axis per picture costs 20 ms to
    # make, minutes over a zoo's bases.
    figure, axes = plt.subplots(len(rows), 1, figsize=(per_row * 0.55, len(rows) * 0.75), squeeze=False)
    for (label, pictures), (axis,) in zip(rows, axes):
        axis.axis("off")
        for place, filters in enumerate(pictures):
            axis.imshow(filter_picture(np.asarray(filters, dtype=np.float64)), interpolation="nearest",
                        extent=(place * PICTURE_PITCH, place * PICTURE_PITCH + 1, 1, 0))
        axis.set(xlim=(0, per_row * PICTURE_PITCH), ylim=(1, 0))
        axis.set_title(label, fontsize=6, loc="left", x=0.0)
    figure.suptitle(f"{basis}: filters as pictures ({len(chosen)} checkpoints; grey is zero)", fontsize=8)
    save(figure, path)


def plot_paper_comparison(table: pd.DataFrame, path: str | Path) -> None:
    """Each of the paper's numbers (black, +- its std where it gives one) beside ours (blue, +- std over n), each
    row naming both settings: the paper's checkpoints and dataset, and the study's own; past MOST_COMPARISON_ROWS
    rows, one row per quantity and paper setting, with each of the study's settings a dot and their median."""
    if table.empty:
        draw_nothing_to_show(path, "none of the paper's quantities in this study\n(seeds of one architecture, true "
                                   "and random labels,\ntwo architectures, a known initialisation, fits)")
        return
    # Past MOST_COMPARISON_ROWS, one row per quantity and paper setting, each of ours a dot.
    groups = ([group for _, group in table.groupby(["quantity", "paper_setting"], sort=False)]
              if len(table) > MOST_COMPARISON_ROWS else None)
    paper = table if groups is None else pd.DataFrame([group.iloc[0] for group in groups])
    figure, axis = plt.subplots(figsize=(8, 0.6 * len(paper) + 1.2))
    rows = np.arange(len(paper))[::-1]
    axis.errorbar(paper["paper_value"], rows + 0.15, xerr=paper["paper_std"].fillna(0), fmt="o", color="black",
                  capsize=3, label="paper, in its setting")
    if groups is None:
        axis.errorbar(table["measured"], rows - 0.15, xerr=table["measured_std"].fillna(0), fmt="s",
                      color="tab:blue", capsize=3, label="this study, in its own")
        heres = [f"{ours.rsplit('; ', 1)[0]}; n = {n}" for ours, n in zip(table["setting"], table["n"])]
    else:
        for row, group in zip(rows, groups):
            axis.scatter(group["measured"], np.full(len(group), row - 0.15), s=6, color="tab:blue", alpha=0.3,
                         linewidths=0)
        axis.scatter([group["measured"].median() for group in groups], rows - 0.15, marker="s", color="tab:blue",
                     label="this study: the median of its settings (dots: each)")
        heres = [f"{len(group)} settings (each a row of the table)" for group in groups]
    labels = [f"{quantity}\npaper: {setting.rsplit('; ', 1)[0]}\nhere: {here}"
              for quantity, setting, here in zip(paper["quantity"], paper["paper_setting"], heres)]
    axis.set_yticks(rows, labels, fontsize=6)
    axis.set_ylim(-0.6, len(rows) - 0.4)
    axis.axvline(0, color="grey", linewidth=0.5)
    axis.set(xlim=(-1.05, 1.05), xlabel="Pearson r")
    axis.legend(loc="best", fontsize=7)
    axis.set_title("The paper's numbers beside this study's (each row: the paper's setting, then this study's)",
                   fontsize=9)
    save(figure, path)


def plot_bases(checkpoints: pd.DataFrame, consistency: pd.DataFrame, groups: pd.DataFrame, analyses: list,
               bases: dict[str, tuple[str, int]], outputs: dict[str, tuple[str, str]], heatmap_checkpoints: int,
               filter_checkpoints: int, workers: int = 1) -> dict[str, tuple[int, int]]:
    """Per basis (slug: its file and kernel size), the consistency heatmap and the filters as pictures, to
    outputs[slug] = (heatmap, filters); `analyses` are the shard files. Returns {slug: (checkpoints, drawn as filters)}.

    Filters are chosen from every analysis read without its filter arrays; only the chosen few's shards are
    read again, with them. Up to `workers` processes draw the bases side by side (a whole timm zoo has 170
    bases, about a second each).
    """
    from .analysis import FILTER_ARRAYS
    from .shards import load_analyses

    by_basis: dict[str, dict] = {slug: {} for slug in bases}
    for path in analyses:
        for analysis in load_analyses(path, skip=FILTER_ARRAYS):
            basis = analysis.checkpoint.basis
            if basis is not None and basis.slug in by_basis:
                by_basis[basis.slug][analysis.checkpoint.id] = (path, analysis)
    tasks = [(checkpoints[checkpoints["basis"] == slug], consistency[consistency["basis"] == slug],
              groups[groups["basis"] == slug], slug, *bases[slug], outputs[slug], by_basis[slug],
              heatmap_checkpoints, filter_checkpoints) for slug in bases]
    workers = min(workers, len(tasks))
    if workers < 2:
        return dict(_plot_basis(*task) for task in tasks)
    # Spawned, not forked: the parent's pyarrow and BLAS threads do not survive a fork.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return dict(pool.map(_plot_basis, *zip(*tasks)))


def _plot_basis(checkpoints: pd.DataFrame, consistency: pd.DataFrame, groups: pd.DataFrame, slug: str,
                basis_path: str, kernel_size: int, paths: tuple[str, str], members: dict, heatmap_checkpoints: int,
                filter_checkpoints: int) -> tuple[str, tuple[int, int]]:
    from .basis import PatchBasis
    from .shards import load_analyses

    heatmap, pictures = paths
    plot_consistency(checkpoints, consistency, groups, slug, heatmap, heatmap_checkpoints)
    chosen = {analysis.checkpoint.id for analysis in choose_for_pictures(
        [analysis for _, analysis in members.values()], filter_checkpoints)}
    with_filters = [analysis for path in sorted({members[name][0] for name in chosen})
                    for analysis in load_analyses(path) if analysis.checkpoint.id in chosen]
    basis = PatchBasis.load(basis_path, kernel_size)
    plot_filters(with_filters, basis.eigenvectors, basis.kernel_size, basis.in_chans, slug, filter_checkpoints,
                 pictures)
    return slug, (len(members), len(with_filters))


def plot_study(tables: dict[str, pd.DataFrame], outputs: dict[str, str], fit_examples: int) -> None:
    """The study-wide figures from its tables, each to outputs[name] (the names of rule plot_study's outputs)."""
    checkpoints, fits = tables["checkpoints"], tables["fits"]
    plot_profiles(checkpoints, tables["profiles"], outputs["profiles"])
    plot_fit_examples(checkpoints, tables["profiles"], fits, fit_examples, outputs["fits"])
    plot_fit_quality(checkpoints, fits, outputs["fit_quality"])
    plot_training_time(checkpoints, fits, outputs["training_time"])
    plot_whitening(checkpoints, fits, outputs["whitening"])
    plot_autocorrelation(checkpoints, tables["autocorrelation"], outputs["autocorrelation"])
    plot_colour(checkpoints, fits, outputs["colour"])
    plot_paper_comparison(tables["paper_comparison"], outputs["paper_comparison"])
