"""The two patch-statistics engines give the same integer sums, bit for bit, and `auto` picks the cheaper one."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from firstlayer_zoo.moment_sums import DIRECTIONS
from firstlayer_zoo.patchstats import (ENGINES, PatchMoments, choose_engine, exact_centred, statistics_threads,
                                      statistics_work)
from firstlayer_zoo.preprocessing import Preprocessing

# Offsets up to 40: wider than some of the images below, so some pairs exist along one direction only,
# and some not at all.
OFFSETS = (1, 2, 5, 10, 40)


def _images(rng, in_chans, sizes):
    return [torch.from_numpy(rng.integers(0, 256, size=(count, in_chans, height, width), dtype=np.uint8))
            for count, height, width in sizes]


def _moments(engine, kernel_size, in_chans, batches, threads=1):
    moments = PatchMoments(kernel_size, in_chans, offsets=OFFSETS, engine=engine, threads=threads)
    for batch in batches:
        moments.update(batch)
    return moments


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("kernel_size", [1, 2, 3, 7, 16, 32])
def test_both_engines_give_identical_integer_sums_at_every_offset(kernel_size, in_chans):
    rng = np.random.default_rng(kernel_size * 10 + in_chans)
    k = kernel_size
    # Odd sizes; a batch just one patch wide; batches too small for the larger offsets; pixels at both
    # extremes. Fewer patches at large k, where the `patches` engine's p^2 per patch is the test's cost.
    sizes = ([(2, k + 9, k + 4), (1, k + 30, k), (3, k + 2, k + 45), (1, k + 41, k + 43)] if k < 16
             else [(1, k + 5, k + 3), (1, k + 11, k), (1, k + 1, k + 12)])
    batches = _images(rng, in_chans, sizes)
    batches.append(torch.full((1, in_chans, k + 3, k + 5), 255, dtype=torch.uint8))
    batches.append(torch.zeros((1, in_chans, k + 5, k + 3), dtype=torch.uint8))
    patches = _moments("patches", k, in_chans, batches)
    lags = _moments("lags", k, in_chans, batches, threads=2)
    assert lags.n_patches == patches.n_patches
    torch.testing.assert_close(lags._sum, patches._sum, rtol=0, atol=0)
    torch.testing.assert_close(lags._outer, patches._outer, rtol=0, atol=0)
    for direction in DIRECTIONS:
        for offset, ours, theirs in zip(OFFSETS, lags._pairs[direction], patches._pairs[direction]):
            assert ours.count == theirs.count, (direction, offset)
            for mine, reference in zip((ours.first, ours.second, ours.outer),
                                       (theirs.first, theirs.second, theirs.outer)):
                torch.testing.assert_close(mine, reference, rtol=0, atol=0, msg=f"{direction} at {offset} px")
    for ours, theirs in zip(lags.pixel_covariance(), patches.pixel_covariance()):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(lags.pixel_cross_covariances(), patches.pixel_cross_covariances())


def test_engines_are_exact_where_float32_would_round():
    # A row of 1,100 patches: more products than one float32 GEMM may add exactly, on both engines.
    images = torch.from_numpy(np.random.default_rng(2).integers(0, 256, size=(1, 1, 40, 1104), dtype=np.uint8))
    found = [_moments(engine, 5, 1, [images]) for engine in sorted(ENGINES)]
    torch.testing.assert_close(found[0]._outer, found[1]._outer, rtol=0, atol=0)
    windows = np.lib.stride_tricks.sliding_window_view(images[0, 0].numpy().astype(np.int64) - 128, (5, 5))
    patches = windows.reshape(-1, 25)
    np.testing.assert_array_equal(found[1]._outer.numpy(), patches.T @ patches)


def test_auto_takes_patches_for_small_kernels_on_small_images_and_lags_for_large_kernels():
    assert choose_engine(32, 32, 3, 3, (2, 5, 10))[0] == "patches"
    name, why = choose_engine(224, 224, 16, 3, (2, 5, 10))
    assert name == "lags" and "224x224 images, k=16" in why
    moments = PatchMoments(16, 3, offsets=(2,))
    moments.update(torch.zeros((2, 3, 40, 40), dtype=torch.uint8))
    assert set(moments.engine_use) == {"lags"} and "engine lags on 2 images" in moments.describe_engines()


def test_a_job_takes_threads_by_its_share_of_its_datasets_work_and_a_cheap_one_takes_one():
    timm_224 = Preprocessing(resize=256, crop=224)
    offsets = (2, 5, 10)

    def threads(kernel_sizes, others=(), preprocessing=timm_224, n_images=7, most=4):
        work = statistics_work(preprocessing, kernel_sizes, n_images, offsets)
        everything = [work, *(statistics_work(timm_224, sizes, n_images, offsets) for sizes in others)]
        return statistics_threads(work, None if None in everything else sum(everything), most)

    # The photos at 3x3 (a timm zoo plans a hundred such jobs): start-up dominates, one thread.
    assert threads([3]) == 1 and threads([3, 4, 7]) == 1
    # The same photos at 32x32, or 50,000 CIFAR images at 3x3, alone: work worth every thread.
    assert threads([3, 32]) == 4
    assert threads([3], preprocessing=Preprocessing(crop=32), n_images=50_000) == 4
    # Two such jobs share the threads; among a zoo's sixty costly jobs each takes one, and they run side by side.
    assert threads([3, 32], others=[[3, 32]]) == 2
    assert threads([3, 32], others=[[3, 32]], most=2) == 1
    assert threads([16, 32], others=[[14, 16]] * 60) == 1
    # Images of no fixed size: the work is unknown, so every thread.
    assert threads([3], preprocessing=Preprocessing(resize=256)) == 4
    assert threads([3, 32], others=[[3]], preprocessing=Preprocessing(resize=256)) == 4


def test_an_unknown_engine_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="'auto' or one of"):
        PatchMoments(3, 3, engine="fft")


@pytest.mark.parametrize("outer_bits,first_bits,shift", [(20, 14, 0), (40, 30, 0), (40, 30, 12)])
def test_centring_gives_the_floats_python_integers_give(outer_bits, first_bits, shift):
    # Float64 (every term below 2^53), int64 (below 2^62) and Python integers (beyond): numerators beyond
    # 2^53, where the conversion to float64 rounds, must round alike in each.
    rng = np.random.default_rng(outer_bits + shift)
    count = 3_000_001
    outer = torch.from_numpy(rng.integers(-2**outer_bits, 2**outer_bits, size=(6, 6)).astype(np.float64))
    first = torch.from_numpy(rng.integers(-2**first_bits, 2**first_bits, size=6).astype(np.float64)) * 2**shift
    exact = [[float(Fraction(int(outer[i, j]) * count - int(first[i]) * int(first[j]), 1)) / count / count
              for j in range(6)] for i in range(6)]
    np.testing.assert_array_equal(exact_centred(outer, first, first, count), np.array(exact))
