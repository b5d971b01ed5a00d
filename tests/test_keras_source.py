"""The `keras` source: the first convolution of Keras .h5 and .keras models, read with h5py from files the test
writes in Keras' own layouts (tests/keras_files.py); kernels come back as (out, in, kh, kw)."""

import zipfile

import h5py
import numpy as np
import pytest

from firstlayer_zoo.analysis import analyse_stem
from firstlayer_zoo.zoo_sources.base import GeometryCache
from firstlayer_zoo.zoo_sources import extract_stem
from firstlayer_zoo.zoo_sources.keras import KerasSource
from keras_files import conv, functional_keras, kernel, layer, model, sequential_h5, write_h5, write_keras


def specs(root, tmp_path, **options):
    options = {"source": "keras", "dataset": "photos", "root": str(root), **options}
    source = KerasSource("keras_zoo", options, "results", GeometryCache(tmp_path / "cache.json"))
    return {spec.name: spec for spec in source.checkpoints()}


def stems(root, tmp_path):
    return {name: extract_stem(spec) for name, spec in specs(root, tmp_path).items()}


def as_torch_layout(weight):
    return weight.transpose(3, 2, 0, 1).astype(np.float64)


def test_sequential_h5_and_functional_keras_stems_are_their_kernels_transposed(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    first, second = kernel(seed=1), kernel((7, 7, 3, 16), seed=2)
    sequential_h5(root / "seq.h5", first, strides=2)
    functional_keras(root / "func.keras", second, strides=4)
    found = specs(root, tmp_path)
    assert sorted(found) == ["func.keras", "seq.h5"]
    assert (found["seq.h5"].first_conv, found["seq.h5"].kernel_size, found["seq.h5"].in_chans,
            found["seq.h5"].stride) == ("conv2d", 5, 3, 2)
    assert (found["func.keras"].first_conv, found["func.keras"].kernel_size, found["func.keras"].stride) == \
        ("stem", 7, 4)
    for name, weight, stride in (("seq.h5", first, 2), ("func.keras", second, 4)):
        stem = extract_stem(found[name])
        assert stem.status == "ok", stem.status
        np.testing.assert_array_equal(stem.weight, as_torch_layout(weight))
        assert stem.stride == stride


def test_nested_models_in_both_formats(tmp_path):
    """The stem inside a nested model; a later top-level Conv2D (a decoy) is not taken for it."""
    root = tmp_path / "models"
    root.mkdir()
    weight, decoy = kernel(seed=3), kernel(seed=4)
    backbone = model("Sequential", "backbone", [conv("stem")])
    legacy = model("Sequential", "outer", [layer("Rescaling", "scale", scale=0.5), backbone, conv("head")])
    # tf.keras lists a nested model's weights in its own group, named by their layers.
    write_h5(root / "nested.h5", legacy, {
        "backbone": [("stem/kernel:0", weight), ("stem/bias:0", np.zeros(8, np.float32))],
        "head": [("head/kernel:0", decoy), ("head/bias:0", np.zeros(8, np.float32))],
    })
    # Keras 3 numbers layers by class within each model: the second Sequential is sequential_1.
    keras3 = model("Functional", "outer", [layer("InputLayer", "input_layer"),
                                           model("Sequential", "augment", [layer("RandomFlip", "flip")]),
                                           backbone, conv("head")])
    write_keras(root / "nested.keras", keras3, {"sequential/layers/random_flip": [],
                                                "sequential_1/layers/conv2d": [weight, np.zeros(8, np.float32)],
                                                "conv2d": [decoy, np.zeros(8, np.float32)]})
    for name, stem in stems(root, tmp_path).items():
        assert stem.status == "ok", (name, stem.status)
        assert stem.first_conv == "stem"
        np.testing.assert_array_equal(stem.weight, as_torch_layout(weight))


def test_channels_first_reads_the_same_kernel(tmp_path):
    """Keras keeps (kh, kw, in, out) whatever data_format says: a channels_first model's filters are the same."""
    root = tmp_path / "models"
    root.mkdir()
    weight = kernel(seed=5)
    config = model("Sequential", "cf", [conv("conv2d", data_format="channels_first")])
    write_h5(root / "cf.h5", config, {"conv2d": [("conv2d/kernel:0", weight)]})
    (stem,) = stems(root, tmp_path).values()
    np.testing.assert_array_equal(stem.weight, as_torch_layout(weight))


def test_separable_stem_is_the_filter_bank_it_computes(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    depthwise, pointwise = kernel((3, 3, 3, 2), seed=6), kernel((1, 1, 6, 5), seed=7)
    config = model("Sequential", "sep", [conv("sep", filters=5, size=3, class_name="SeparableConv2D")])
    write_keras(root / "sep.keras", config, {"separable_conv2d": [depthwise, pointwise, np.zeros(5, np.float32)]})
    (stem,) = stems(root, tmp_path).values()
    # Output o at input channel c: sum over the depth multiplier j of depthwise[:, :, c, j] * pointwise[c*2 + j, o].
    expected = np.zeros((5, 3, 3, 3))
    for o in range(5):
        for c in range(3):
            for j in range(2):
                expected[o, c] += depthwise[:, :, c, j] * pointwise[0, 0, c * 2 + j, o]
    np.testing.assert_allclose(stem.weight, expected, rtol=1e-6)


def test_models_without_a_usable_conv_stem_are_skipped_with_their_reason(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    dense_only = model("Sequential", "mlp", [layer("Flatten", "flatten"), layer("Dense", "dense", units=3)])
    write_h5(root / "mlp.h5", dense_only, {"dense": [("dense/kernel:0", np.zeros((4, 3), np.float32))]})
    depthwise = model("Sequential", "dw", [conv("dw", size=3, class_name="DepthwiseConv2D")])
    write_keras(root / "dw.keras", depthwise, {"depthwise_conv2d": [kernel((3, 3, 3, 1))]})
    grouped = model("Sequential", "g", [conv("g", filters=6, size=3, groups=3)])
    write_h5(root / "grouped.h5", grouped, {"g": [("g/kernel:0", kernel((3, 3, 1, 6)))]})
    write_h5(root / "weights_only.h5", dense_only, {})
    with h5py.File(root / "weights_only.h5", "a") as handle:
        del handle.attrs["model_config"]
    data = sequential_h5(tmp_path / "whole.h5", kernel()).read_bytes()
    (root / "cut.h5").write_bytes(data[: len(data) // 2])
    data = functional_keras(tmp_path / "whole.keras", kernel()).read_bytes()
    (root / "cut.keras").write_bytes(data[: len(data) // 2])
    (root / "pointer.h5").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n")
    with zipfile.ZipFile(root / "badconfig.keras", "w") as archive:
        archive.writestr("config.json", '{"class_name": "Sequential", "config": {"layers": [')
        archive.writestr("model.weights.h5", b"")
    found = specs(root, tmp_path)
    assert all(spec.basis is None for spec in found.values())
    status = {name: analyse_stem(spec, extract_stem(spec), None, False).status for name, spec in found.items()}
    assert status == {
        "mlp.h5": f"skipped: {root / 'mlp.h5'}: no Conv2D layer in the Keras model config (no conv stem)",
        "dw.keras": f"skipped: {root / 'dw.keras'}: the first convolution is a DepthwiseConv2D: each filter sees one "
                    "input channel, so no c*k*k patch basis fits",
        "grouped.h5": f"skipped: {root / 'grouped.h5'}: grouped stem (groups=3): each filter sees a part of the input "
                      "channels; no c*k*k patch basis fits",
        "weights_only.h5": f"skipped: {root / 'weights_only.h5'}: an HDF5 file without a Keras model_config (weights "
                           "only, from save_weights?); save the model again with model.save()",
        "cut.h5": f"skipped: {root / 'cut.h5'}: a truncated or corrupt HDF5 file; copy or save it again",
        "cut.keras": f"skipped: {root / 'cut.keras'}: a truncated or corrupt zip file, not a readable .keras model; "
                     "copy or save it again",
        "pointer.h5": f"skipped: {root / 'pointer.h5'}: Git LFS pointer file, not the checkpoint itself; run "
                      "`git lfs pull` in its repository",
        "badconfig.keras": f"skipped: {root / 'badconfig.keras'}: corrupt Keras model config (not JSON); save the "
                           "model again with model.save()",
    }


LINKED_OUT = "the stem's weights link to another file, which this workflow does not read; save the model again " \
    "with its weights inside"


def _external(handle, kernel_path, secret):
    handle[kernel_path] = h5py.ExternalLink(str(secret), "kernel")


def _soft_to_external(handle, kernel_path, secret):
    handle["outside"] = h5py.ExternalLink(str(secret), "/")
    handle[kernel_path] = h5py.SoftLink("/outside/kernel")


def _soft_chain_to_external(handle, kernel_path, secret):
    handle["outside"] = h5py.ExternalLink(str(secret), "/")
    handle["hop"] = h5py.SoftLink("/outside")
    handle["hop2"] = h5py.SoftLink("/hop")
    handle[kernel_path] = h5py.SoftLink("/hop2/kernel")


def _relative_soft_to_external(handle, kernel_path, secret):
    handle[kernel_path.rsplit("/", 1)[0] + "/ext"] = h5py.ExternalLink(str(secret), "/")
    handle[kernel_path] = h5py.SoftLink("ext/kernel")


def _external_to_soft(handle, kernel_path, secret):
    with h5py.File(secret, "a") as other:
        other["soft"] = h5py.SoftLink("/kernel")
    handle[kernel_path] = h5py.ExternalLink(str(secret), "soft")


def _soft_loop(handle, kernel_path, secret):
    handle["a"] = h5py.SoftLink("/b")
    handle["b"] = h5py.SoftLink("/a")
    handle[kernel_path] = h5py.SoftLink("/a")


def _soft_inside(handle, kernel_path, secret):
    handle["elsewhere/kernel"] = handle[kernel_path][()]
    del handle[kernel_path]
    handle[kernel_path] = h5py.SoftLink("/elsewhere/kernel")


LINKS = {"external": _external, "soft to external": _soft_to_external,
         "soft chain to external": _soft_chain_to_external, "relative soft to external": _relative_soft_to_external,
         "external to soft": _external_to_soft, "soft loop": _soft_loop, "soft inside": _soft_inside}


def _linked_model(root, fmt, weight, edit, secret):
    """A model of format `fmt` whose stem kernel is reached through the links `edit` makes."""
    def edited(weights, kernel_path):
        with h5py.File(weights, "a") as handle:
            if edit is not _soft_inside:
                del handle[kernel_path]
            edit(handle, kernel_path, secret)

    if fmt == "h5":
        path = sequential_h5(root / "linked.h5", weight)
        edited(path, "model_weights/conv2d/conv2d/kernel:0")
        return path
    path = functional_keras(root / "linked.keras", weight)
    weights = root.parent / "weights.h5"
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    weights.write_bytes(members["model.weights.h5"])
    edited(weights, "layers/conv2d/vars/0")
    members["model.weights.h5"] = weights.read_bytes()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("fmt", ["h5", "keras"])
@pytest.mark.parametrize("how", sorted(LINKS))
def test_a_kernel_reached_through_a_link_out_of_the_file_is_never_read(tmp_path, fmt, how):
    """HDF5 links could point the stem at any file on the machine, directly or behind soft links: every link on the
    way to the kernel is checked, a soft link's target too, and one that leaves the file is refused unfollowed."""
    root = tmp_path / "models"
    root.mkdir()
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as handle:
        handle["kernel"] = kernel(seed=8)
    weight = kernel()
    path = _linked_model(root, fmt, weight, LINKS[how], secret)
    (spec,) = specs(root, tmp_path).values()
    stem = extract_stem(spec)
    if how == "soft inside":
        np.testing.assert_array_equal(stem.weight, as_torch_layout(weight))
    elif how == "soft loop":
        assert stem.status == (f"skipped: {path}: the stem's weights sit behind a loop or a chain of over 32 soft "
                               "links (corrupt?); save the model again with model.save()")
    else:
        assert stem.status == f"skipped: {path}: {LINKED_OUT}"
