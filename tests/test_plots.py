"""What the plots draw, read back from the figures: the numbers of the tables, not only a PNG."""

import numpy as np
import pandas as pd
from matplotlib.collections import PathCollection, QuadMesh

from firstlayer_zoo import plots
from firstlayer_zoo.settings import ConsistencySettings
from firstlayer_zoo.tables import consistency_tables
from plot_checks import overlapping_texts
from synthetic_tables import synthetic_tables


def two_family_study(per_family=15, components=27):
    """Profiles of two distinct shapes plus noise, with their checkpoints and consistency tables."""
    rng = np.random.default_rng(5)
    shapes = [np.exp(-np.arange(components) / 3.0), np.exp(-np.arange(components) / 12.0)[::-1]]
    # Families interleaved in the ids, so that no order but a clustering one puts each in one block.
    family = rng.permutation(np.repeat([0, 1], per_family))
    profiles = np.stack([shapes[f] + rng.normal(0, 0.02, components) for f in family])
    ids = np.array([f"zoo/c{i:02d}" for i in range(len(family))], dtype=object)
    checkpoints = pd.DataFrame({"checkpoint": ids, "status": "ok", "basis": "photos", "arch": "test_resnet",
                                "labels": "true", "seed": np.arange(len(ids)),
                                "step": pd.array([None] * len(ids), dtype="Int64")})
    tables = consistency_tables({"photos": (ids, profiles)}, checkpoints,
                                pd.DataFrame({"checkpoint": ids, "r_init": np.nan}), ConsistencySettings())
    return checkpoints, tables, profiles, family


def test_consistency_heatmap_draws_every_pairs_r_with_each_family_in_one_block(drawn):
    checkpoints, tables, profiles, family = two_family_study()
    plots.plot_consistency(checkpoints, tables["consistency"], tables["consistency_groups"], "photos", "heatmap")
    figure = drawn["heatmap"]
    (axis,) = [axis for axis in figure.axes if any(isinstance(c, QuadMesh) for c in axis.collections)
               and len(axis.get_yticklabels()) == len(profiles)]
    order = [int(label.get_text().removeprefix("zoo/c")) for label in axis.get_yticklabels()]
    (mesh,) = [c for c in axis.collections if isinstance(c, QuadMesh)]
    shown = np.asarray(mesh.get_array()).reshape(len(order), len(order))
    expected = np.corrcoef(profiles)
    np.testing.assert_allclose(shown, expected[np.ix_(order, order)], atol=1e-12)
    # Clustered: the families come as two contiguous runs along the diagonal.
    runs = np.count_nonzero(np.diff(family[order])) + 1
    assert runs == 2, family[order]


def test_fit_quality_counts_every_checkpoint_and_states_the_median(drawn):
    tables = synthetic_tables(40)
    plots.plot_fit_quality(tables["checkpoints"], tables["fits"], "fit_quality")
    (axis,) = drawn["fit_quality"].axes
    assert sum(patch.get_height() for patch in axis.patches) == 40
    assert f"median r = {np.median(tables['fits']['fit_r']):.3f}" in axis.get_title()


def test_fit_quality_draws_fits_that_all_agree(drawn):
    """Fits equal up to rounding (a zoo of copies) leave no range for the bins; every checkpoint is still counted."""
    tables = synthetic_tables(12)
    tables["fits"]["fit_r"] = 0.95 + np.arange(12) * 1e-12
    plots.plot_fit_quality(tables["checkpoints"], tables["fits"], "fit_quality")
    (axis,) = drawn["fit_quality"].axes
    assert sum(patch.get_height() for patch in axis.patches) == 12


def test_whitening_plot_places_each_checkpoint_at_its_two_spreads(drawn):
    tables = synthetic_tables(12)
    plots.plot_whitening(tables["checkpoints"], tables["fits"], "whitening")
    (axis,) = drawn["whitening"].axes
    points = np.concatenate([c.get_offsets() for c in axis.collections if isinstance(c, PathCollection)])
    expected = tables["fits"][["input_spread", "output_spread"]].to_numpy()
    np.testing.assert_allclose(np.array(sorted(map(tuple, points))), np.array(sorted(map(tuple, expected))))


def test_training_time_draws_the_median_over_seeds_as_its_title_says(drawn):
    """Three seeds, one far off: the line is their median (the title's word), not their mean."""
    ids = [f"z/s{seed}-{step}" for seed in range(3) for step in (10, 20)]
    checkpoints = pd.DataFrame({"checkpoint": ids, "arch": "a", "labels": "true",
                                "seed": [seed for seed in range(3) for _ in (10, 20)], "step": [10, 20] * 3})
    fits = pd.DataFrame({"checkpoint": ids, "tau_s1": [1.0, 2.0, 1.5, 2.5, 40.0, 80.0]})
    plots.plot_training_time(checkpoints, fits, "training_time")
    (axis,) = drawn["training_time"].axes
    assert "line: median" in axis.get_title()
    (line,) = [line for line in axis.lines if len(line.get_xdata())]
    np.testing.assert_allclose(line.get_ydata(), [1.5, 2.5])


def test_a_whole_zoo_is_drawn_in_few_panels_and_few_arch_groups(drawn):
    """30 archs over 15 preprocessings of one kernel size: one panel for the kernel size, the archs past the most
    frequent counted in one group, every checkpoint still drawn."""
    tables = synthetic_tables(30)
    checkpoints = tables["checkpoints"]
    checkpoints["arch"] = [f"arch_{index:02d}" for index in range(30)]
    checkpoints["run"], checkpoints["step"] = None, None
    checkpoints["basis"] = [f"photos-r{100 + index % 15}c96-k3c3" for index in range(30)]
    checkpoints["dataset"], checkpoints["kernel_size"], checkpoints["in_chans"] = "photos", 3, 3
    plots.plot_profiles(checkpoints, tables["profiles"], "profiles")
    titles = [axis.get_title() for axis in drawn["profiles"].axes if axis.get_title()]
    assert titles == ["photos: k=3, c=3 (15 preprocessings)"]
    plots.plot_fit_quality(checkpoints, tables["fits"], "fit_quality")
    (axis,) = drawn["fit_quality"].axes
    labels = [text.get_text() for text in axis.get_legend().get_texts()]
    assert len(labels) == plots.MOST_ARCHS and f"{30 - plots.MOST_ARCHS + 1} other archs" in labels
    assert sum(patch.get_height() for patch in axis.patches) == 30


def test_a_whole_zoos_paper_comparison_has_one_row_per_quantity_with_every_setting_a_dot(drawn):
    """A zoo's table has a row per arch and quantity; the figure one per quantity and paper setting."""
    rng = np.random.default_rng(3)
    quantities = {"fit r of the analytic profile": 0.94, "other seed": 0.9}
    table = pd.DataFrame([
        {"quantity": quantity, "paper_setting": "VGG-11, true labels, W - W0; cifar10; Chowers & Weiss (2023)",
         "setting": f"arch_{index:02d}, labels unknown, W; photos", "paper_value": value, "paper_std": 0.01,
         "measured": rng.uniform(-1, 1), "measured_std": np.nan, "n": 1}
        for quantity, value in quantities.items() for index in range(plots.MOST_COMPARISON_ROWS)])
    plots.plot_paper_comparison(table, "paper_comparison")
    figure = drawn["paper_comparison"]
    (axis,) = figure.axes
    labels = [label.get_text() for label in axis.get_yticklabels()]  # row 0 at the top
    assert [label.split("\n")[0] for label in labels] == list(quantities)
    assert all(label.endswith(f"here: {plots.MOST_COMPARISON_ROWS} settings (each a row of the table)")
               for label in labels)
    (paper,) = axis.containers
    np.testing.assert_allclose(np.asarray(paper.lines[0].get_xdata(), dtype=float), list(quantities.values()))
    *dots, medians = [collection for collection in axis.collections if isinstance(collection, PathCollection)]
    for row, (dot, (_, group)) in enumerate(zip(dots, table.groupby("quantity", sort=False))):
        np.testing.assert_allclose(dot.get_offsets()[:, 0], group["measured"])
        np.testing.assert_allclose(dot.get_offsets()[:, 1], len(quantities) - 1 - row - 0.15)
    np.testing.assert_allclose(medians.get_offsets()[:, 0], table.groupby("quantity", sort=False)["measured"].median())
    assert figure.get_size_inches()[1] < 3 and overlapping_texts(figure) == []
