"""Consistency at zoo scale (millions of pairs): the summary table, and the heatmap's matrix and clustering."""

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster

from firstlayer_zoo.plots import consistency_linkage, consistency_square, plot_consistency
from firstlayer_zoo.profiles import consistency_matrix
from firstlayer_zoo.tables import SCHEMAS, TRAINED_VS_INIT, consistency_summary_table


def pair_table(ids, matrix, rng):
    """The consistency table's layout: each unordered pair once, in any order and orientation."""
    a, b = np.triu_indices(len(ids), k=1)
    swap = rng.random(a.size) < 0.5
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    order = rng.permutation(a.size)
    return pd.DataFrame({"basis": "photos", "checkpoint_a": np.asarray(ids)[a[order]],
                         "checkpoint_b": np.asarray(ids)[b[order]], "r": matrix[a, b][order]})


def two_families(rng, size=30, components=27):
    """Profiles from two distinct shapes plus noise: the clustering must find the families."""
    shapes = [np.exp(-np.arange(components) / 3.0), np.exp(-np.arange(components) / 12.0)[::-1]]
    labels = np.repeat([0, 1], size)
    profiles = np.stack([shapes[label] + rng.normal(0, 0.02, components) for label in labels])
    return profiles, labels


def test_square_matrix_is_rebuilt_from_the_pair_table():
    rng = np.random.default_rng(0)
    profiles, _ = two_families(rng, size=12)
    ids = [f"zoo/c{i}" for i in range(len(profiles))]
    expected = consistency_matrix(profiles)
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
    clusters = fcluster(consistency_linkage(consistency_matrix(profiles)), t=2, criterion="maxclust")
    assert len(set(zip(clusters, labels))) == 2


def test_consistency_plot_draws_a_large_basis(tmp_path):
    rng = np.random.default_rng(2)
    profiles, labels = two_families(rng, size=60)
    ids = [f"zoo/c{i}" for i in range(len(profiles))]
    checkpoints = pd.DataFrame({"checkpoint": ids, "status": "ok", "basis": "photos", "arch": "test_resnet",
                                "labels": np.where(labels, "random", "true"), "seed": np.arange(len(ids)) % 5})
    path = tmp_path / "consistency.png"
    plot_consistency(checkpoints, pair_table(ids, consistency_matrix(profiles), rng), "photos", path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def relation_word(x, y, group) -> str:
    """How a pair relates in one group: a value either checkpoint lacks makes it unknown, never "same"."""
    if pd.isna(x) or pd.isna(y):
        return f"{group} unknown"
    return ("same " if x == y else "other ") + group


def test_summary_relations_match_a_pair_by_pair_reading():
    rng = np.random.default_rng(3)
    count = 40
    ids = [f"zoo/c{i}" for i in range(count)]
    checkpoints = pd.DataFrame({
        "checkpoint": ids, "basis": "photos",
        "arch": rng.choice(["test_resnet", "resnet18"], count),
        "labels": rng.choice(["true", "random", None], count),
        "seed": pd.array(rng.choice([0, 1, 2, None], count), dtype="Int64"),
        "step": pd.array(rng.choice([4, 8, None], count), dtype="Int64"),
    })
    pairs = pair_table(ids, consistency_matrix(rng.random((count, 27))), rng)
    fits = pd.DataFrame({"checkpoint": ids, "r_init": rng.uniform(-1, 1, count)})
    summary = consistency_summary_table(checkpoints, pairs, fits)
    assert list(summary.columns) == SCHEMAS["consistency_summary"].names
    summary = summary.set_index("relation")

    row = checkpoints.set_index("checkpoint")
    expected = {}
    for a, b, r in pairs[["checkpoint_a", "checkpoint_b", "r"]].itertuples(index=False):
        shared = [relation_word(row.at[a, g], row.at[b, g], g) for g in ["arch", "labels", "seed", "step"]]
        expected.setdefault(", ".join(shared), []).append(r)
    expected[TRAINED_VS_INIT] = list(fits["r_init"])
    assert set(summary.index) == set(expected)
    for relation, values in expected.items():
        assert summary.at[relation, "n_pairs"] == len(values)
        assert summary.at[relation, "median_r"] == np.median(values)
