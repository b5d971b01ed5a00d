"""Consistency at any zoo size: exact relation and group means without pairs, sampled quantiles,
nearest neighbours, and the heatmap's matrix and clustering. Every expectation is read pair by pair
from np.corrcoef, independently of the code under test."""

import numpy as np
import pandas as pd
import pytest
from scipy.cluster.hierarchy import fcluster

from firstlayer_zoo.consistency import nearest_neighbours, standardised
from firstlayer_zoo.settings import ConsistencySettings
from firstlayer_zoo.plots import consistency_linkage, consistency_square, group_square, plot_consistency
from firstlayer_zoo.tables import SCHEMAS, TRAINED_VS_INIT, consistency_tables

GROUPS = ["arch", "labels", "seed", "step"]


def pair_table(ids, matrix, rng):
    """The consistency table's layout: each unordered pair once, in any order and orientation."""
    a, b = np.triu_indices(len(ids), k=1)
    swap = rng.random(a.size) < 0.5
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    order = rng.permutation(a.size)
    return pd.DataFrame({"basis": "photos", "checkpoint_a": np.asarray(ids)[a[order]],
                         "checkpoint_b": np.asarray(ids)[b[order]], "r": matrix[a, b][order], "rank": None})


def two_families(rng, size=30, components=27):
    """Profiles from two distinct shapes plus noise: the clustering must find the families."""
    shapes = [np.exp(-np.arange(components) / 3.0), np.exp(-np.arange(components) / 12.0)[::-1]]
    labels = np.repeat([0, 1], size)
    profiles = np.stack([shapes[label] + rng.normal(0, 0.02, components) for label in labels])
    return profiles, labels


def random_zoo(rng, count, bases=("photos", "cifar")):
    """Checkpoints with random metadata (gaps included) over two bases, and their profiles."""
    ids = np.array([f"zoo/c{i:04d}" for i in range(count)], dtype=object)
    basis = rng.choice(bases, count)
    checkpoints = pd.DataFrame({
        "checkpoint": ids, "basis": basis, "status": "ok",
        "arch": rng.choice(["test_resnet", "resnet18", None], count, p=[0.45, 0.45, 0.1]),
        "labels": rng.choice(["true", "random", None], count),
        "seed": pd.array(rng.choice([0, 1, 2, None], count), dtype="Int64"),
        "step": pd.array(rng.choice([4, 8, None], count), dtype="Int64"),
    })
    profiles = {}
    for name in bases:
        members = basis == name
        decay = np.exp(-np.arange(27) / rng.uniform(2, 10, members.sum())[:, None])
        profiles[name] = (ids[members], decay * rng.lognormal(0, 0.3, (members.sum(), 27)))
    fits = pd.DataFrame({"checkpoint": ids, "r_init": rng.uniform(-1, 1, count)})
    return checkpoints, profiles, fits


def state(x, y, group) -> str:
    if pd.isna(x) or pd.isna(y):
        return f"{group} unknown"
    return ("same " if x == y else "other ") + group


def expected_relations(checkpoints, profiles, fits):
    """{(basis, relation): [r, ...]} by reading every pair one at a time."""
    row = checkpoints.set_index("checkpoint")
    expected = {}
    for basis, (ids, energies) in profiles.items():
        matrix = np.corrcoef(energies)
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                shared = [state(row.at[ids[i], g], row.at[ids[j], g], g) for g in GROUPS]
                expected.setdefault((basis, ", ".join(shared)), []).append(matrix[i, j])
        expected[(basis, TRAINED_VS_INIT)] = list(fits.set_index("checkpoint").loc[ids, "r_init"])
    return expected


def test_relation_means_are_exact_and_quantiles_exact_while_every_pair_is_kept():
    rng = np.random.default_rng(3)
    checkpoints, profiles, fits = random_zoo(rng, 90)
    tables = consistency_tables(profiles, checkpoints, fits, ConsistencySettings())
    for name, frame in tables.items():
        if name in SCHEMAS:
            assert list(frame.columns) == SCHEMAS[name].names
    summary = tables["consistency_summary"].set_index(["basis", "relation"])
    expected = expected_relations(checkpoints, profiles, fits)
    assert set(summary.index) == set(expected)
    for key, values in expected.items():
        assert summary.at[key, "n_pairs"] == summary.at[key, "n_sampled"] == len(values), key
        assert summary.at[key, "mean_r"] == pytest.approx(np.mean(values), abs=1e-12), key
        assert summary.at[key, "median_r"] == pytest.approx(np.median(values), abs=1e-12), key
        assert summary.at[key, "min_r"] == pytest.approx(min(values), abs=1e-12), key
        assert summary.at[key, "max_r"] == pytest.approx(max(values), abs=1e-12), key
    pairs = tables["consistency"]
    assert len(pairs) == sum(len(ids) * (len(ids) - 1) // 2 for ids, _ in profiles.values())
    assert pairs["rank"].isna().all()


def test_above_max_pairs_means_stay_exact_and_quantiles_come_from_a_seeded_sample():
    rng = np.random.default_rng(4)
    checkpoints, profiles, fits = random_zoo(rng, 160, bases=("photos",))
    settings = ConsistencySettings(max_pairs=100, sample_pairs=3000, neighbours=3, seed=7)
    tables = consistency_tables(profiles, checkpoints, fits, settings)
    neighbours = tables["consistency"]
    assert len(neighbours) == 160 * 3 and list(neighbours["rank"][:3]) == [1, 2, 3]
    summary = tables["consistency_summary"].set_index(["basis", "relation"])
    expected = expected_relations(checkpoints, profiles, fits)
    assert set(summary.index) == set(expected)
    for key, values in expected.items():
        values = np.array(values)
        row = summary.loc[key]
        assert row["n_pairs"] == values.size and row["mean_r"] == pytest.approx(values.mean(), abs=1e-12), key
        if key[1] == TRAINED_VS_INIT:
            continue
        assert row["n_sampled"] == min(values.size, 3000), key
        # A sampled median is a value of the relation's own distribution: its rank lies near the middle,
        # within three standard errors of a median of n_sampled uniform draws.
        rank = (values < row["median_r"]).mean()
        assert abs(rank - 0.5) <= 1.5 / np.sqrt(row["n_sampled"]) + 1 / values.size, key
        assert values.min() - 1e-12 <= row["min_r"] <= row["max_r"] <= values.max() + 1e-12, key
    again = consistency_tables(profiles, checkpoints, fits, settings)["consistency_summary"]
    pd.testing.assert_frame_equal(again, tables["consistency_summary"])  # seeded: the same sample every run


def test_nearest_neighbours_are_the_highest_r_of_each_row():
    rng = np.random.default_rng(5)
    energies = rng.lognormal(0, 1, (130, 27))
    z, _ = standardised(energies)
    rows, neighbours, r = nearest_neighbours(z, 4, block=32)
    matrix = np.corrcoef(energies)
    np.fill_diagonal(matrix, -np.inf)
    for i in range(130):
        mine = neighbours[rows == i]
        np.testing.assert_array_equal(mine, np.argsort(-matrix[i])[:4])
        np.testing.assert_allclose(r[rows == i], matrix[i, mine], atol=1e-12)


def test_each_checkpoints_mean_r_with_its_basis_and_its_group_is_exact():
    rng = np.random.default_rng(8)
    checkpoints, profiles, fits = random_zoo(rng, 60, bases=("photos",))
    means = consistency_tables(profiles, checkpoints, fits, ConsistencySettings(max_pairs=0))["checkpoint_means"]
    ids, energies = profiles["photos"]
    matrix = np.corrcoef(energies)
    names = group_names(checkpoints, ids)
    means = means.set_index("checkpoint").loc[ids]
    for i in range(len(ids)):
        others = np.arange(len(ids)) != i
        assert means["mean_r"].iloc[i] == pytest.approx(matrix[i, others].mean(), abs=1e-12)
        group = others & (names == names[i])
        if group.any():
            assert means["mean_r_group"].iloc[i] == pytest.approx(matrix[i, group].mean(), abs=1e-12)
        else:
            assert np.isnan(means["mean_r_group"].iloc[i])


def group_names(checkpoints, ids):
    meta = checkpoints.set_index("checkpoint").loc[ids, ["arch", "labels", "step"]]
    meta = meta.astype(object).where(meta.notna(), "n/a")
    return meta.apply(lambda row: f"arch={row['arch']}, labels={row['labels']}, step={row['step']}", axis=1).to_numpy()


def test_group_matrix_means_match_a_pair_by_pair_reading():
    rng = np.random.default_rng(6)
    checkpoints, profiles, fits = random_zoo(rng, 70, bases=("photos",))
    groups = consistency_tables(profiles, checkpoints, fits, ConsistencySettings())["consistency_groups"]
    ids, energies = profiles["photos"]
    matrix = np.corrcoef(energies)
    names = group_names(checkpoints, ids)
    for row in groups.itertuples():
        in_a, in_b = names == row.group_a, names == row.group_b
        block = matrix[np.ix_(in_a, in_b)]
        values = block[np.triu_indices(in_a.sum(), k=1)] if row.group_a == row.group_b else block.ravel()
        assert row.n_pairs == values.size
        assert row.mean_r == pytest.approx(values.mean(), abs=1e-12)
    assert groups["n_pairs"].sum() == len(ids) * (len(ids) - 1) // 2


def test_square_matrix_is_rebuilt_from_the_pair_table():
    rng = np.random.default_rng(0)
    profiles, _ = two_families(rng, size=12)
    ids = [f"zoo/c{i}" for i in range(len(profiles))]
    expected = np.corrcoef(profiles)
    square = consistency_square(ids, pair_table(ids, expected, rng))
    np.testing.assert_allclose(square, expected, atol=1e-12)


def test_pairs_outside_the_members_are_ignored_and_missing_pairs_stay_unknown():
    pairs = pd.DataFrame({"basis": "b", "checkpoint_a": ["x", "x", "y"], "checkpoint_b": ["y", "other", "other"],
                          "r": [0.5, 0.9, 0.8]})
    square = consistency_square(["x", "y", "z"], pairs)
    assert square[0, 1] == square[1, 0] == 0.5
    assert np.isnan(square[0, 2]) and np.isnan(square[2, 1])
    assert list(np.diag(square)) == [1.0, 1.0, 1.0]


def test_linkage_on_one_minus_r_separates_two_families():
    rng = np.random.default_rng(1)
    profiles, labels = two_families(rng)
    clusters = fcluster(consistency_linkage(np.corrcoef(profiles)), t=2, criterion="maxclust")
    assert len(set(zip(clusters, labels))) == 2 and len(set(clusters)) == 2


def test_group_square_is_symmetric_from_the_upper_triangle():
    groups = pd.DataFrame({"basis": "b", "group_a": ["g1", "g1", "g2"], "group_b": ["g1", "g2", "g2"],
                           "n_pairs": [3, 6, 1], "mean_r": [0.9, 0.2, 0.8]})
    square = group_square(groups)
    assert square.loc["g1", "g2"] == square.loc["g2", "g1"] == 0.2
    assert square.loc["g1", "g1"] == 0.9 and square.loc["g2", "g2"] == 0.8


@pytest.mark.parametrize("max_checkpoints", [300, 50])
def test_consistency_plot_draws_checkpoints_or_groups(tmp_path, max_checkpoints):
    rng = np.random.default_rng(2)
    profiles, labels = two_families(rng, size=60)
    ids = np.array([f"zoo/c{i}" for i in range(len(profiles))], dtype=object)
    checkpoints = pd.DataFrame({"checkpoint": ids, "status": "ok", "basis": "photos", "arch": "test_resnet",
                                "labels": np.where(labels, "random", "true"), "seed": np.arange(len(ids)) % 5,
                                "step": pd.array([None] * len(ids), dtype="Int64")})
    tables = consistency_tables({"photos": (ids, profiles)}, checkpoints,
                                pd.DataFrame({"checkpoint": ids, "r_init": np.nan}), ConsistencySettings())
    path = tmp_path / "consistency.png"
    plot_consistency(checkpoints, tables["consistency"], tables["consistency_groups"], "photos", path,
                     max_checkpoints)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
