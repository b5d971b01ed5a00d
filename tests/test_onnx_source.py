"""The `onnx` source: the first Conv reached from the graph input, its weight stored every way ONNX allows."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from firstlayer_zoo.analysis import analyse_stem
from firstlayer_zoo.zoo_sources.local_files import OnnxSource
from firstlayer_zoo.zoo_sources.base import GeometryCache
from firstlayer_zoo.zoo_sources import extract_stem
from hostile_corpus import onnx_conv_model as conv_model


def weights(shape=(8, 3, 5, 5), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def specs(root, tmp_path):
    options = {"source": "onnx", "dataset": "photos", "root": str(root)}
    source = OnnxSource("exported", options, "results", GeometryCache(tmp_path / "cache.json"))
    return {spec.name: spec for spec in source.checkpoints()}


def test_stem_weight_as_initializer_constant_and_external_data(tmp_path):
    root = tmp_path / "models"
    (root / "ext").mkdir(parents=True)
    weight = weights()
    onnx.save(conv_model(weight), str(root / "init.onnx"))
    onnx.save(conv_model(weight, as_constant=True), str(root / "const.onnx"))
    onnx.save_model(conv_model(weight), str(root / "ext" / "big.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="big.onnx.data", size_threshold=0)
    found = specs(root, tmp_path)
    assert sorted(found) == ["const.onnx", "ext--big.onnx", "init.onnx"]
    for spec in found.values():
        assert (spec.kernel_size, spec.in_chans, spec.first_conv, spec.stride) == (5, 3, "stem", 2)
        stem = extract_stem(spec)
        assert stem.status == "ok", stem.status
        np.testing.assert_array_equal(stem.weight, weight.astype(np.float64))
        assert stem.stride == 2


def test_missing_external_data_is_named(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    onnx.save_model(conv_model(weights()), str(root / "big.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="big.onnx.data", size_threshold=0)
    (root / "big.onnx.data").unlink()
    (spec,) = specs(root, tmp_path).values()
    assert spec.kernel_size == 5  # the graph alone gives the geometry
    assert extract_stem(spec).status == (
        f"skipped: {root / 'big.onnx'}: the stem weight 'stem_w' lives in the external data file 'big.onnx.data', "
        f"which is not next to the model; copy it into {root}")


def test_grouped_truncated_and_convless_models(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    onnx.save(conv_model(weights((6, 1, 3, 3)), group=3), str(root / "grouped.onnx"))
    onnx.save(conv_model(weights((6, 3, 1, 1))), str(root / "pointwise.onnx"))
    data = conv_model(weights()).SerializeToString()
    (root / "cut.onnx").write_bytes(data[: len(data) // 2])
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["out"])], "noconv",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph), str(root / "noconv.onnx"))
    found = specs(root, tmp_path)
    assert all(spec.basis is None for spec in found.values())
    status = {name: analyse_stem(spec, extract_stem(spec), None, False).status for name, spec in found.items()}
    assert status["grouped.onnx"] == (
        f"skipped: {root / 'grouped.onnx'}: grouped stem (group=3): each filter sees 1 of the input channels; "
        "no c*k*k patch basis fits")
    assert status["pointwise.onnx"] == (
        f"skipped: {root / 'pointwise.onnx'}: 1x1 stem only mixes colours; it has no spatial patch basis to be "
        "profiled in")
    assert status["cut.onnx"].startswith(
        f"skipped: {root / 'cut.onnx'}: not a readable ONNX model, truncated or corrupt (")
    assert status["noconv.onnx"] == f"skipped: {root / 'noconv.onnx'}: no Conv node is reached from the graph input " \
                                    "(no conv stem)"


@pytest.mark.parametrize("junk,reason", [
    (b"", "zero-byte file (an interrupted copy or download?); fetch it again"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n",
     "Git LFS pointer file, not the checkpoint itself; run `git lfs pull` in its repository"),
])
def test_sniffed_junk_saved_as_onnx(tmp_path, junk, reason):
    root = tmp_path / "models"
    root.mkdir()
    (root / "m.onnx").write_bytes(junk)
    (spec,) = specs(root, tmp_path).values()
    assert extract_stem(spec).status == f"skipped: {root / 'm.onnx'}: {reason}"
