"""Consistency of energy profiles within a basis, at any zoo size.

The Pearson r of two profiles is the dot product of their standardised forms
z = (e - mean(e)) / ||e - mean(e)||. So the sum of r over all pairs within a
group of checkpoints is (||sum of z||^2 - n) / 2, and between two groups the
dot product of their sums: means over any set of pairs defined by shared
metadata are exact without forming a single pair. Relations ("same arch,
other seed, ...") are exact sets of metadata agreements; their sums come from
group sums by inclusion-exclusion over the groups a pair agrees on.
Quantiles (median, min, max) need pairs: all of them while the basis has at
most `max_pairs`, otherwise a seeded sample drawn uniformly from each relation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# Metadata whose agreement names a relation; a missing value never agrees with anything.
RELATION_GROUPS = ("arch", "labels", "seed", "step")
# Checkpoints averaged together in the group matrix: seeds are what a group pools.
MATRIX_GROUPS = ("arch", "labels", "step")


@dataclass(frozen=True)
class ConsistencyLimits:
    max_pairs: int = 2_000_000  # above this many pairs in a basis, pairs are sampled, not enumerated
    sample_pairs: int = 20_000  # pairs sampled per relation for its quantiles
    neighbours: int = 0  # nearest neighbours kept per checkpoint when pairs are not all kept (0: none)
    max_groups: int = 200  # rows of the group matrix per basis, before coarsening
    seed: int = 0


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


def relation_name(shared: int, groups: tuple[str, ...]) -> str:
    return ", ".join(("same " if shared >> bit & 1 else "other ") + group for bit, group in enumerate(groups))


def pair_relations(codes: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """Each pair's relation as a bit mask of the groups it agrees on."""
    relation = np.zeros(len(rows_a), dtype=np.int64)
    for bit in range(codes.shape[1]):
        a, b = codes[rows_a, bit], codes[rows_b, bit]
        relation |= ((a == b) & (a >= 0)).astype(np.int64) << bit
    return relation


def _group_sums(z: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sums of z, sizes, group index of each row) over the distinct rows of `keys`."""
    _, inverse, sizes = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    sums = np.zeros((len(sizes), z.shape[1]))
    np.add.at(sums, inverse, z)
    return sums, sizes, inverse


def exact_relation_sums(z: np.ndarray, codes: np.ndarray) -> dict[int, tuple[int, float]]:
    """{relation mask: (number of pairs, sum of r)} over every unordered pair of rows, exactly."""
    n_groups = codes.shape[1]
    agree = {}  # pairs agreeing on at least the groups in the mask (others free)
    for mask in range(1 << n_groups):
        columns = [bit for bit in range(n_groups) if mask >> bit & 1]
        members = np.all(codes[:, columns] >= 0, axis=1) if columns else np.ones(len(z), dtype=bool)
        if not members.any():
            agree[mask] = (0, 0.0)
            continue
        sums, sizes, _ = _group_sums(z[members], codes[members][:, columns] if columns else np.zeros((members.sum(), 1)))
        pairs = int((sizes * (sizes - 1) // 2).sum())
        agree[mask] = (pairs, float((np.einsum("ij,ij->i", sums, sums) - sizes).sum() / 2))
    exact = {}
    for mask in range(1 << n_groups):
        count, total = 0, 0.0
        for superset in range(1 << n_groups):
            if superset & mask == mask:
                sign = -1 if bin(superset ^ mask).count("1") % 2 else 1
                count += sign * agree[superset][0]
                total += sign * agree[superset][1]
        if count > 0:
            exact[mask] = (count, total)
    return exact


def sample_relation_pairs(codes: np.ndarray, mask: int, n_pairs: int, size: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to `size` pairs drawn uniformly (with replacement) from those whose relation is exactly `mask`.

    A candidate is a uniform pair among those agreeing on at least the groups in
    `mask`; candidates with a wider agreement are rejected, which leaves the
    draw uniform over the relation.
    """
    columns = [bit for bit in range(codes.shape[1]) if mask >> bit & 1]
    members = np.flatnonzero(np.all(codes[:, columns] >= 0, axis=1)) if columns else np.arange(len(codes))
    keys = codes[members][:, columns] if columns else np.zeros((len(members), 1))
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
        exact = pair_relations(codes, rows_a, rows_b) == mask
        kept_a.append(rows_a[exact])
        kept_b.append(rows_b[exact])
        kept += int(exact.sum())
    return np.concatenate(kept_a)[:size], np.concatenate(kept_b)[:size]


def relation_summary(z: np.ndarray, codes: np.ndarray, groups: tuple[str, ...], limits: ConsistencyLimits,
                     all_pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> list[dict]:
    """Rows of (relation, n_pairs, mean_r, median_r, min_r, max_r, n_sampled) for one basis.

    `all_pairs` (rows_a, rows_b, r) when every pair was enumerated; otherwise the quantiles come from samples.
    """
    rng = np.random.default_rng(limits.seed)
    rows = []
    if all_pairs is not None:
        relations = pair_relations(codes, all_pairs[0], all_pairs[1])
    for mask, (count, total) in sorted(exact_relation_sums(z, codes).items()):
        if all_pairs is not None:
            r = all_pairs[2][relations == mask]
        else:
            rows_a, rows_b = sample_relation_pairs(codes, mask, count, min(count, limits.sample_pairs), rng)
            r = np.einsum("ij,ij->i", z[rows_a], z[rows_b])
        rows.append({"relation": relation_name(mask, groups), "n_pairs": count, "mean_r": total / count,
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


def group_labels(checkpoints: pd.DataFrame, limits: ConsistencyLimits) -> np.ndarray:
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
        if labels.nunique() <= limits.max_groups:
            return labels.to_numpy(dtype=object)
        groups = groups[:-1]


def group_matrix(z: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Mean r between and within groups of checkpoints, exactly, from group sums of z."""
    names, inverse = np.unique(labels.astype(str), return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(names))
    sums = np.zeros((len(names), z.shape[1]))
    np.add.at(sums, inverse, z)
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


def checkpoint_means(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each checkpoint's mean r with every other checkpoint of its basis, and with the others of its group."""
    n = len(z)
    mean_all = (z @ z.sum(axis=0) - 1.0) / (n - 1) if n > 1 else np.full(n, np.nan)
    names, inverse = np.unique(labels.astype(str), return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(names))
    sums = np.zeros((len(names), z.shape[1]))
    np.add.at(sums, inverse, z)
    own = sizes[inverse]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_group = np.where(own > 1, (np.einsum("ij,ij->i", z, sums[inverse]) - 1.0) / (own - 1), np.nan)
    return mean_all, mean_group
