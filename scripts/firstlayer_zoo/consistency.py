"""Consistency of energy profiles within a basis, at any zoo size.

The Pearson r of two profiles is the dot product of their standardised forms
z = (e - mean(e)) / ||e - mean(e)||. So the sum of r over all pairs within a
group of checkpoints is (||sum of z||^2 - n) / 2, and between two groups the
dot product of their sums: means over any set of pairs defined by shared
metadata are exact without forming a single pair. Relations ("same arch,
other seed, ...") are exact sets of metadata agreements; their sums come from
group sums by inclusion-exclusion over the groups a pair agrees on.
A pair is "same", "other" or "unknown" (either value missing) for each of
arch, labels, seed, step and base model (a Hub fine-tune's declared base).
Quantiles (median, min, max) need pairs: all of them while the basis has at
most `max_pairs`, otherwise a seeded sample drawn uniformly from each relation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .settings import ConsistencySettings

# Metadata whose agreement names a relation; a missing value makes the pair's state "unknown".
RELATION_GROUPS = ("arch", "labels", "seed", "step", "base_model")
# How a relation names a group, where not by its column's name.
GROUP_WORDS = {"base_model": "base model"}
# Checkpoints averaged together in the group matrix: seeds are what a group pools.
MATRIX_GROUPS = ("arch", "labels", "step")


def standardised(profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(z, valid): unit-norm centred rows; a constant profile has no Pearson r with anything (not valid)."""
    centred = profiles - profiles.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    valid = norms > 0
    z = np.zeros_like(centred)
    z[valid] = centred[valid] / norms[valid, None]
    return z, valid


def metadata_codes(checkpoints: pd.DataFrame, groups: tuple[str, ...]) -> np.ndarray:
    """(n, len(groups)) integer codes of each group's value; -1 where it is missing."""
    if not groups:
        return np.zeros((len(checkpoints), 0), dtype=np.int64)
    return np.stack([pd.factorize(checkpoints[group])[0] for group in groups], axis=1).astype(np.int64)


# A pair's state for one group: both values known and different, known and equal, or either missing.
OTHER, SAME, UNKNOWN = 0, 1, 2


def relation_name(code: int, groups: tuple[str, ...]) -> str:
    names = [GROUP_WORDS.get(group, group) for group in groups]
    words = [(f"other {name}", f"same {name}", f"{name} unknown") for name in names]
    return ", ".join(choices[code // 3**position % 3] for position, choices in enumerate(words))


def pair_relations(codes: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """Each pair's relation: one base-3 digit (OTHER, SAME, UNKNOWN) per group."""
    relation = np.zeros(len(rows_a), dtype=np.int64)
    for position in range(codes.shape[1]):
        a, b = codes[rows_a, position], codes[rows_b, position]
        relation += np.where((a < 0) | (b < 0), UNKNOWN, (a == b).astype(np.int64)) * 3**position
    return relation


def _digits(code: int, n_groups: int) -> list[int]:
    return [code // 3**position % 3 for position in range(n_groups)]


def _group_sums(z: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sums of z, sizes, group index of each row) over the distinct rows of `keys`."""
    _, inverse, sizes = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    sums = np.zeros((len(sizes), z.shape[1]))
    np.add.at(sums, inverse, z)
    return sums, sizes, inverse


def exact_relation_sums(z: np.ndarray, codes: np.ndarray) -> dict[int, tuple[int, float]]:
    """{relation code: (number of pairs, sum of r)} over every unordered pair of rows, exactly.

    Per group, "other" = known - same and "unknown" = 1 - known, so a relation's
    indicator expands into signed terms "same on X and known on Y", each a sum
    over the groups of equal X values among the rows known on X and Y.
    """
    n_groups = codes.shape[1]
    known = codes >= 0
    agreeing: dict[tuple[frozenset, frozenset], tuple[int, float]] = {}

    def agree(same: frozenset, known_on: frozenset) -> tuple[int, float]:
        if (same, known_on) not in agreeing:
            columns = sorted(same | known_on)
            members = known[:, columns].all(axis=1) if columns else np.ones(len(z), dtype=bool)
            keys = codes[members][:, sorted(same)] if same else np.zeros((int(members.sum()), 1))
            if not members.any():
                agreeing[same, known_on] = (0, 0.0)
            else:
                sums, sizes, _ = _group_sums(z[members], keys)
                agreeing[same, known_on] = (int((sizes * (sizes - 1) // 2).sum()),
                                            float((np.einsum("ij,ij->i", sums, sums) - sizes).sum() / 2))
        return agreeing[same, known_on]

    exact = {}
    for code in range(3**n_groups):
        digits = _digits(code, n_groups)
        same = frozenset(g for g, d in enumerate(digits) if d == SAME)
        other = [g for g, d in enumerate(digits) if d == OTHER]
        unknown = [g for g, d in enumerate(digits) if d == UNKNOWN]
        count, total = 0, 0.0
        for other_same in range(1 << len(other)):  # each "other" factor: known (+) or same (-)
            for unknown_known in range(1 << len(unknown)):  # each "unknown" factor: 1 (+) or known (-)
                chosen_same = same | {g for i, g in enumerate(other) if other_same >> i & 1}
                known_on = frozenset({g for i, g in enumerate(other) if not other_same >> i & 1}
                                     | {g for i, g in enumerate(unknown) if unknown_known >> i & 1})
                sign = -1 if (bin(other_same).count("1") + bin(unknown_known).count("1")) % 2 else 1
                pairs, sum_r = agree(frozenset(chosen_same), known_on)
                count += sign * pairs
                total += sign * sum_r
        if count > 0:
            exact[code] = (count, total)
    return exact


def sample_relation_pairs(codes: np.ndarray, code: int, n_pairs: int, size: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to `size` pairs drawn uniformly (with replacement) from those whose relation is exactly `code`.

    A candidate is a uniform pair among those that share the relation's "same"
    groups and know its "other" groups; candidates in another relation are
    rejected, which leaves the draw uniform over the relation.
    """
    digits = _digits(code, codes.shape[1])
    same = [g for g, d in enumerate(digits) if d == SAME]
    needed = [g for g, d in enumerate(digits) if d in (SAME, OTHER)]
    members = np.flatnonzero(np.all(codes[:, needed] >= 0, axis=1)) if needed else np.arange(len(codes))
    keys = codes[members][:, same] if same else np.zeros((len(members), 1))
    _, inverse, sizes = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    order = np.argsort(inverse.ravel(), kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    candidates = sizes * (sizes - 1) // 2
    if candidates.sum() == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    weights = candidates / candidates.sum()
    acceptance = n_pairs / candidates.sum()
    kept_a, kept_b, kept, tries = [], [], 0, 0
    batch = int(min(4 * size / max(acceptance, 1e-3), 2_000_000))
    while kept < size and tries < 20:
        tries += 1
        group = rng.choice(len(sizes), size=batch, p=weights)
        first = rng.integers(0, sizes[group])
        second = rng.integers(0, sizes[group] - 1)
        second += second >= first
        rows_a = members[order[starts[group] + first]]
        rows_b = members[order[starts[group] + second]]
        exact = pair_relations(codes, rows_a, rows_b) == code
        kept_a.append(rows_a[exact])
        kept_b.append(rows_b[exact])
        kept += int(exact.sum())
    return np.concatenate(kept_a)[:size], np.concatenate(kept_b)[:size]


def relation_summary(z: np.ndarray, codes: np.ndarray, groups: tuple[str, ...], settings: ConsistencySettings,
                     all_pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> list[dict]:
    """Rows of (relation, n_pairs, mean_r, median_r, min_r, max_r, n_sampled) for one basis.

    `all_pairs` (rows_a, rows_b, r) when every pair was enumerated; otherwise the quantiles come from samples.
    """
    rng = np.random.default_rng(settings.seed)
    rows = []
    if all_pairs is not None:
        relations = pair_relations(codes, all_pairs[0], all_pairs[1])
    for code, (count, total) in sorted(exact_relation_sums(z, codes).items()):
        if all_pairs is not None:
            r = all_pairs[2][relations == code]
        else:
            rows_a, rows_b = sample_relation_pairs(codes, code, count, min(count, settings.sample_pairs), rng)
            r = np.einsum("ij,ij->i", z[rows_a], z[rows_b])
        rows.append({"relation": relation_name(code, groups), "n_pairs": count, "mean_r": total / count,
                     "median_r": float(np.median(r)) if r.size else None,
                     "min_r": float(r.min()) if r.size else None, "max_r": float(r.max()) if r.size else None,
                     "n_sampled": int(r.size)})
    return rows


def all_pairs(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows_a, rows_b, r) of every unordered pair."""
    upper_a, upper_b = np.triu_indices(len(z), k=1)
    r = np.clip(z @ z.T, -1.0, 1.0)[upper_a, upper_b]
    return upper_a, upper_b, r


def nearest_neighbours(z: np.ndarray, k: int, block: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, neighbour rows, r): each row's k highest-r other rows, best first, in blocks of bounded memory."""
    n = len(z)
    k = min(k, n - 1)
    if k <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    single = z.astype(np.float32)
    rows, neighbours = [], []
    for start in range(0, n, block):
        scores = single[start:start + block] @ single.T
        local = np.arange(scores.shape[0])
        scores[local, start + local] = -np.inf
        best = np.argpartition(scores, -k, axis=1)[:, -k:]
        order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1)
        rows.append(np.repeat(start + local, k))
        neighbours.append(np.take_along_axis(best, order, axis=1).ravel())
    rows, neighbours = np.concatenate(rows), np.concatenate(neighbours)
    # Ranked in float32 for speed; the r kept is recomputed in float64.
    return rows, neighbours, np.einsum("ij,ij->i", z[rows], z[neighbours])


def group_labels(checkpoints: pd.DataFrame, settings: ConsistencySettings) -> np.ndarray:
    """Each checkpoint's group, e.g. "arch=resnet18, labels=true, step=400" (seeds pooled).

    Past `max_groups` groups the step, then the labels are pooled too, so the matrix stays readable.
    """
    groups = [group for group in MATRIX_GROUPS if checkpoints[group].notna().any()]
    while True:
        if not groups:
            return np.full(len(checkpoints), "all", dtype=object)
        parts = [group + "=" + checkpoints[group].astype(object).where(checkpoints[group].notna(), "n/a").astype(str)
                 for group in groups]
        labels = parts[0]
        for part in parts[1:]:
            labels = labels + ", " + part
        if labels.nunique() <= settings.max_groups:
            return labels.to_numpy(dtype=object)
        groups = groups[:-1]


def label_sums(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(group names, each row's group, group sizes, group sums of z) of the rows grouped by label."""
    names, inverse = np.unique(labels.astype(str), return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(names))
    sums = np.zeros((len(names), z.shape[1]))
    np.add.at(sums, inverse, z)
    return names, inverse, sizes, sums


def group_matrix(grouped: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> pd.DataFrame:
    """Mean r between and within groups of checkpoints (`label_sums`), exactly, from group sums of z."""
    names, _, sizes, sums = grouped
    dots = sums @ sums.T
    pair_counts = np.outer(sizes, sizes).astype(np.float64)
    np.fill_diagonal(pair_counts, sizes * (sizes - 1) / 2)
    sum_r = dots.copy()
    np.fill_diagonal(sum_r, (np.diag(dots) - sizes) / 2)
    a, b = np.triu_indices(len(names))
    counts = pair_counts[a, b]
    keep = counts > 0
    return pd.DataFrame({"group_a": names[a][keep], "group_b": names[b][keep],
                         "n_pairs": counts[keep].astype(np.int64), "mean_r": sum_r[a, b][keep] / counts[keep]})


def checkpoint_means(z: np.ndarray, grouped: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Each checkpoint's mean r with every other checkpoint of its basis, and with the others of its group."""
    _, inverse, sizes, sums = grouped
    n = len(z)
    mean_all = (z @ z.sum(axis=0) - 1.0) / (n - 1) if n > 1 else np.full(n, np.nan)
    own = sizes[inverse]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_group = np.where(own > 1, (np.einsum("ij,ij->i", z, sums[inverse]) - 1.0) / (own - 1), np.nan)
    return mean_all, mean_group
