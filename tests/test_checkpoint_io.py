"""Reading checkpoint files safely: formats, wrappers, the hostile corpus, and the `folder` source's planning."""

import contextlib
import json
import os
import pickle
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from firstlayer_zoo.analysis import analyse_stem, require_ok
from firstlayer_zoo.checkpoint_io import CheckpointError, read_tensor, sniff, tensor_shape
from firstlayer_zoo.zoo_sources.local_files import FolderSource
from firstlayer_zoo.stems import StemError
from firstlayer_zoo.zoo_sources.base import GeometryCache
from firstlayer_zoo.zoo_sources import extract_stem
from hostile_corpus import (
    STEM_KEY,
    expected_status,
    identity_basis,
    secret_traces,
    stem_weights,
    write_corpus,
    write_good,
)


def folder_source(root, cache_path, **options):
    options = {"source": "folder", "dataset": "photos", "root": str(root), "stem_key": STEM_KEY, **options}
    return FolderSource("local", options, "results", GeometryCache(cache_path))


@pytest.fixture()
def corpus(tmp_path):
    folder = tmp_path / "zoo"
    marker = tmp_path / "MARKER"
    expected = write_corpus(folder, marker)
    write_good(folder, "good.safetensors", seed=10)
    return folder, marker, expected


def test_every_hostile_file_becomes_its_exact_status_and_no_code_runs(corpus, tmp_path):
    folder, marker, expected = corpus
    specs = {spec.name: spec for spec in folder_source(folder, tmp_path / "cache.json").checkpoints()}
    assert sorted(specs) == sorted([*expected, "good.safetensors"])
    assert not marker.exists(), "planning executed code from a pickle"
    for name, template in expected.items():
        spec = specs[name]
        stem = extract_stem(spec)
        basis = identity_basis(spec.kernel_size, spec.in_chans) if spec.basis is not None else None
        analysis = analyse_stem(spec, stem, basis=basis, subtract_init=True)
        assert analysis.status == expected_status(template, folder / name), name
        with pytest.raises(StemError, match="analysis.strict: checkpoint local/"):
            require_ok(spec, analysis.status)
    assert not marker.exists(), "a job executed code from a pickle"
    good = extract_stem(specs["good.safetensors"])
    assert good.status == "ok"
    np.testing.assert_array_equal(good.weight, stem_weights(10).double().numpy())


def test_nothing_outside_the_root_is_read_or_quoted(corpus, tmp_path):
    folder, _, _ = corpus
    source = folder_source(folder, tmp_path / "cache.json")
    specs = source.checkpoints()
    source.cache.save()
    said = [json.dumps(spec.to_dict()) + extract_stem(spec).status for spec in specs]
    said.append((tmp_path / "cache.json").read_text())
    for trace in secret_traces():
        assert not [text for text in said if trace in text], trace
    assert all(spec.init_locator is None for spec in specs if "init" in spec.name)


def test_planning_reads_geometry_and_plans_bad_files_without_a_basis(corpus, tmp_path):
    folder, _, _ = corpus
    specs = {spec.name: spec for spec in folder_source(folder, tmp_path / "cache.json").checkpoints()}
    good = specs["good.safetensors"]
    assert (good.kernel_size, good.in_chans, good.first_conv) == (5, 3, "stem")
    assert good.basis is not None and good.basis.kernel_size == 5
    assert specs["gray.safetensors"].in_chans == 1 and specs["gray.safetensors"].basis is None
    for name in ["malicious.pt", "truncated.safetensors", "empty.pt", "lfs.safetensors", "one_by_one.safetensors",
                 "non_square.safetensors", "no_conv.safetensors"]:
        assert specs[name].basis is None, name
    assert "Git LFS pointer" in specs["lfs.safetensors"].extra["planning_error"]


def test_geometry_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    folder = tmp_path / "zoo"
    folder.mkdir()
    path = write_good(folder, "a.safetensors", seed=0)
    cache = tmp_path / "cache.json"
    source = folder_source(folder, cache)
    source.checkpoints()
    source.cache.save()

    def must_not_read(self, path):
        raise AssertionError(f"re-read {path} although it is unchanged")

    monkeypatch.setattr(FolderSource, "read_geometry", must_not_read)
    assert folder_source(folder, cache).checkpoints()[0].kernel_size == 5
    monkeypatch.undo()
    save_file({STEM_KEY: stem_weights(0, (8, 3, 7, 7))}, str(path))
    os.utime(path, ns=(1, 1))  # an older mtime than before: the cache must not trust "newer" alone
    assert folder_source(folder, cache).checkpoints()[0].kernel_size == 7


def test_wrapper_prefixes_and_lightning_state_dict(tmp_path):
    weights = stem_weights(5)
    torch.save({"epoch": 3, "global_step": 300,
                "state_dict": {f"model._orig_mod.{STEM_KEY}": weights, "model.head.weight": torch.zeros(2)}},
               tmp_path / "run.ckpt")
    torch.save({"model": {f"module.{STEM_KEY}": weights}}, tmp_path / "ddp.pth")
    for name in ["run.ckpt", "ddp.pth"]:
        key, array = read_tensor(tmp_path / name, STEM_KEY)
        assert key.endswith(STEM_KEY) and key != STEM_KEY
        np.testing.assert_array_equal(array, weights.double().numpy())


def test_legacy_torch_file_and_bfloat16_safetensors(tmp_path):
    weights = stem_weights(6)
    torch.save({STEM_KEY: weights}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    np.testing.assert_array_equal(read_tensor(tmp_path / "old.pt", STEM_KEY)[1], weights.double().numpy())
    save_file({STEM_KEY: weights.bfloat16()}, str(tmp_path / "half.safetensors"))
    key, shape = tensor_shape(tmp_path / "half.safetensors", STEM_KEY)
    assert (key, shape) == (STEM_KEY, (8, 3, 5, 5))
    np.testing.assert_array_equal(read_tensor(tmp_path / "half.safetensors", STEM_KEY)[1],
                                  weights.bfloat16().double().numpy())


def test_a_pickled_module_is_refused_with_the_conversion_one_liner(tmp_path):
    torch.save(torch.nn.Conv2d(3, 4, 3), tmp_path / "whole_model.pt")
    with pytest.raises(CheckpointError) as error:
        read_tensor(tmp_path / "whole_model.pt", STEM_KEY)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'whole_model.pt'}: loading it would run code from the file "
                              "(the pickle calls torch.nn.modules.conv.Conv2d), which this workflow refuses; ")
    assert f"torch.load('{tmp_path / 'whole_model.pt'}', weights_only=False)" in message
    assert f"'{tmp_path / 'whole_model.safetensors'}'" in message


def test_truncated_zip_pickle_is_named_corrupt(tmp_path):
    torch.save({STEM_KEY: stem_weights(0)}, tmp_path / "cut.pt")
    data = (tmp_path / "cut.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:300])
    with pytest.raises(CheckpointError, match=r"cut.pt: truncated or corrupt PyTorch file \(PytorchStreamReader"):
        read_tensor(tmp_path / "cut.pt", STEM_KEY)


def test_unknown_bytes_are_named(tmp_path):
    (tmp_path / "weights.npy").write_bytes(b"\x93NUMPY" + bytes(100))
    with pytest.raises(CheckpointError, match="weights.npy: not a checkpoint format this workflow reads"):
        sniff(tmp_path / "weights.npy")


def test_keras_models_are_sniffed_as_keras_and_a_state_dict_reader_names_their_source(tmp_path):
    from keras_files import functional_keras, kernel, sequential_h5

    sequential_h5(tmp_path / "model.h5", kernel())
    functional_keras(tmp_path / "model.keras", kernel())
    torch.save({STEM_KEY: stem_weights(0)}, tmp_path / "zipped.pt")  # torch.save's zip, no Keras config in it
    assert [sniff(tmp_path / name) for name in ("model.h5", "model.keras", "zipped.pt")] == ["keras", "keras", "torch"]
    for name in ("model.h5", "model.keras"):
        with pytest.raises(CheckpointError, match=f"{name}: a Keras model; list it under a zoo with `source: keras`"):
            tensor_shape(tmp_path / name, STEM_KEY)


def test_linear_patch_embedding_reads_as_a_conv(tmp_path):
    conv = stem_weights(7, (6, 3, 4, 4))
    folder = tmp_path / "zoo"
    folder.mkdir()
    save_file({"patch.weight": conv.reshape(6, -1)}, str(folder / "chw.safetensors"))
    save_file({"patch.weight": conv.permute(0, 2, 3, 1).reshape(6, -1).contiguous()},
              str(folder / "hwc.safetensors"))
    for layout in ["chw", "hwc"]:
        source = folder_source(folder, tmp_path / f"{layout}.json", stem_key="patch.weight", patch_size=4,
                               patch_layout=layout, patterns=[f"{layout}.safetensors"])
        (spec,) = source.checkpoints()
        assert (spec.kernel_size, spec.in_chans) == (4, 3)
        stem = extract_stem(spec)
        np.testing.assert_allclose(stem.weight, conv.double().numpy())
    (spec,) = folder_source(folder, tmp_path / "none.json", stem_key="patch.weight",
                            patterns=["chw.safetensors"]).checkpoints()
    assert spec.basis is None
    assert extract_stem(spec).status == (
        f"skipped: {folder / 'chw.safetensors'}: stem weight has shape (6, 48): a linear patch embedding? "
        "set patch_size in the zoo's config to read it as a conv")


def test_metadata_from_config_path_pattern_and_sidecar(tmp_path):
    folder = tmp_path / "zoo"
    (folder / "seed3").mkdir(parents=True)
    write_good(folder / "seed3", "step00100.safetensors", seed=0)
    write_good(folder / "seed3", "step00200.safetensors", seed=1)
    write_good(folder, "init.safetensors", seed=2)
    (folder / "seed3" / "step00200.json").write_text(json.dumps({"labels": "random", "lr": 0.1, "step": 250, "stride": "4"}))
    source = folder_source(folder, tmp_path / "cache.json", patterns=["seed*/*.safetensors"],
                           path_pattern=r"seed(?P<seed>\d+)/step(?P<step>\d+)", metadata={"labels": "true",
                                                                                         "run": "sweep"},
                           init="init.safetensors", arch="my-cnn")
    first, second = source.checkpoints()
    assert (first.name, first.seed, first.step, first.labels, first.run) == (
        "seed3--step00100.safetensors", 3, 100, "true", "sweep")
    assert (second.seed, second.step, second.labels, second.extra["metadata"]) == (3, 250, "random", {"lr": 0.1})
    assert (first.stride, second.stride) == (None, 4)
    assert first.arch == "my-cnn" and first.init_locator == str(folder / "init.safetensors")
    assert (first.kernel_size, first.in_chans, first.extra["planning_error"]) == (5, 3, None)
    stem = extract_stem(first)
    np.testing.assert_array_equal(stem.init, stem_weights(2).double().numpy())


@contextlib.contextmanager
def hang_guard(seconds: int):
    """Fail, rather than hang, if the block runs for `seconds` (a backtracking regex engine checks signals)."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_path_pattern_with_nested_quantifiers_on_a_long_name_matches_in_linear_time(tmp_path):
    """`(a+)+b` on forty a's and no b backtracks 2^40 times in Python's engine; RE2 answers at once."""
    folder = tmp_path / "zoo"
    folder.mkdir()
    write_good(folder, "a" * 40 + "!.safetensors", seed=0)
    write_good(folder, "aab.safetensors", seed=1)
    with hang_guard(120):
        specs = folder_source(folder, tmp_path / "c.json", path_pattern=r"(?P<run>(a+)+b)").checkpoints()
    assert [spec.run for spec in specs] == [None, "aab"]


@pytest.mark.parametrize("pattern, reason", [
    (r"seed(?=\d)", "invalid perl operator: (?="),
    (r"(?P<seed>\d)x(?P=seed)", "invalid perl operator: (?P"),
    (r"(a)\1", "invalid escape sequence: \\1"),
    (r"a{2000}", "invalid repetition size: {2000}"),
])
def test_a_pattern_re2_refuses_is_refused_at_start_up_naming_the_key(tmp_path, pattern, reason):
    from firstlayer_zoo.zoo_sources.archive import ArchiveSource

    folder = tmp_path / "zoo"
    folder.mkdir()
    write_good(folder, "a.safetensors", seed=0)
    expected = (f"zoos.local.path_pattern: not a regular expression RE2 accepts ({reason}); file-name patterns are "
                "matched by RE2, in time linear in the name: rewrite it without lookarounds, backreferences, "
                "possessive quantifiers or counted repetitions over 1000")
    with pytest.raises(ValueError) as refused:
        folder_source(folder, tmp_path / "c.json", path_pattern=pattern).checkpoints()
    assert str(refused.value) == expected
    archive = ArchiveSource("mz", {"source": "archive", "url": "http://x/z.zip", "step_pattern": pattern},
                            str(tmp_path / "results"), cache=None)
    with pytest.raises(ValueError, match=r"^zoos\.mz\.step_pattern: not a regular expression RE2 accepts"):
        archive.checkpoints()  # at planning, before any download


def test_bad_sidecar_is_the_files_row_and_a_bad_pattern_names_the_key(tmp_path):
    folder = tmp_path / "zoo"
    folder.mkdir()
    write_good(folder, "a.safetensors", seed=0)
    with pytest.raises(ValueError, match=r"zoos.local.path_pattern: not a regular expression"):
        folder_source(folder, tmp_path / "c.json", path_pattern="(?P<seed").checkpoints()
    (folder / "a.json").write_text("{seed: 1")
    (spec,) = folder_source(folder, tmp_path / "c.json").checkpoints()
    assert extract_stem(spec).status == (f"skipped: {folder / 'a.json'}: sidecar metadata is not valid JSON "
                                         "(JSONDecodeError); fix or remove it")
    (folder / "a.json").write_text('{"seed": "one"}')
    (spec,) = folder_source(folder, tmp_path / "c.json").checkpoints()
    assert extract_stem(spec).status == (f"skipped: {folder / 'a.json'}: its seed is not an integer within 64 "
                                         "bits; fix or remove it")
    assert spec.basis is None and spec.seed is None
    with pytest.raises(ValueError, match=r"zoos.local.root: .*missing is not a folder"):
        folder_source(tmp_path / "missing", tmp_path / "c.json").checkpoints()


def test_missing_init_is_a_status_not_a_crash(tmp_path):
    folder = tmp_path / "zoo"
    folder.mkdir()
    path = write_good(folder, "a.safetensors", seed=0)
    (spec,) = folder_source(folder, tmp_path / "c.json", init="gone.safetensors").checkpoints()
    assert extract_stem(spec).status == (
        f"skipped: {path}: its init file {folder / 'gone.safetensors'} does not exist; "
        "fix `init` in the config or the sidecar")


def test_timm_arch_names_the_stem(tmp_path):
    import timm

    model = timm.create_model("test_resnet", num_classes=3)
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    folder = tmp_path / "zoo"
    folder.mkdir()
    torch.save(state, folder / "ddp.pth")
    options = {"source": "folder", "dataset": "photos", "root": str(folder), "arch": "test_resnet"}
    (spec,) = FolderSource("local", options, "results", GeometryCache(tmp_path / "c.json")).checkpoints()
    assert (spec.first_conv, spec.kernel_size, spec.in_chans, spec.stride) == ("module.conv1.0", 3, 3, 2)
    stem = extract_stem(spec)
    np.testing.assert_array_equal(stem.weight, model.conv1[0].weight.detach().double().numpy())
    assert stem.stride == 2
    with pytest.raises(ValueError, match="zoos.local.arch: 'no_such_net' is not a timm model"):
        FolderSource("local", {**options, "arch": "no_such_net"}, "results",
                     GeometryCache(tmp_path / "c.json")).checkpoints()


def test_pickle_marker_never_appears_through_every_entry_point(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    from hostile_corpus import WritesMarker

    with open(path, "wb") as handle:
        pickle.dump(WritesMarker(marker), handle)
    for call in (lambda: sniff(path), lambda: tensor_shape(path, STEM_KEY), lambda: read_tensor(path, STEM_KEY)):
        try:
            call()
        except CheckpointError:
            pass
    assert not marker.exists()
