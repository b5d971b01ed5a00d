"""Hostile inputs, round two: what the checkpoint corpus cannot hold as a row of a folder zoo.

ONNX graphs, start-up (sidecars, file names, zoo and dataset names), limits on
headers, downloads and archives, image decoding, and a file rewritten under
its memory map. Each test fails on the code before these fixes (2b43e50).
"""

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from safetensors.torch import save_file
from snakemake.utils import validate

from firstlayer_zoo.analysis import analyse_stem
from firstlayer_zoo.zoo_sources.archive import ArchiveError, unpack
from firstlayer_zoo.checkpoint_io import CheckpointError, tensor_shape
from firstlayer_zoo.dataset_sources.base import DatasetSource
from firstlayer_zoo.dataset_sources import dataset_source
from firstlayer_zoo.downloads import DownloadError, DownloadTooLarge, download
from firstlayer_zoo.limits import Limits, applied
from firstlayer_zoo.loaders import ImageError
from firstlayer_zoo.patchstats import source_basis
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.zoo_sources.local_files import FolderSource, OnnxSource
from firstlayer_zoo.plan import Study
from firstlayer_zoo.remote_tensors import read_remote_safetensors
from firstlayer_zoo.rule_io import ClearError
from firstlayer_zoo.stems import StemError
from firstlayer_zoo.zoo_sources.base import GeometryCache
from firstlayer_zoo.zoo_sources import extract_stem
from hostile_corpus import (
    STEM_KEY,
    expected_status,
    identity_basis,
    stem_weights,
    write_good,
    write_onnx_corpus,
    write_safetensors_entry,
    write_safetensors_raw,
)
from loopback import LoopbackServer
from workflow_helpers import ROOT

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def folder_source(root, cache_path, **options):
    options = {"source": "folder", "dataset": "photos", "root": str(root), "stem_key": STEM_KEY, **options}
    return FolderSource("local", options, "results", GeometryCache(cache_path))


def study_config(tmp_path, zoo_name="local", dataset_name="photos", **zoo):
    (tmp_path / "zoo").mkdir(exist_ok=True)
    write_good(tmp_path / "zoo", "good.safetensors", seed=0)
    config = {"outdir": str(tmp_path / "results"),
              "datasets": {dataset_name: {"source": "skimage"}},
              "zoos": {zoo_name: {"source": "folder", "dataset": dataset_name, "root": str(tmp_path / "zoo"),
                                  "stem_key": STEM_KEY, "preprocessing": {}, **zoo}}}
    validate(config, str(SCHEMA))  # fills in the defaults, as at Snakemake start-up
    return config


# ONNX


def test_every_hostile_onnx_model_becomes_its_exact_status(tmp_path):
    expected = write_onnx_corpus(tmp_path / "onnx")
    source = OnnxSource("exported", {"source": "onnx", "dataset": "photos", "root": str(tmp_path / "onnx")},
                        "results", GeometryCache(tmp_path / "cache.json"))
    specs = {spec.name: spec for spec in source.checkpoints()}
    assert sorted(specs) == sorted(expected)
    for name, template in expected.items():
        spec = specs[name]
        basis = identity_basis(spec.kernel_size, spec.in_chans) if spec.basis is not None else None
        status = analyse_stem(spec, extract_stem(spec), basis, subtract_init=True).status
        assert status == expected_status(template, tmp_path / "onnx" / name), name


def test_identity_cycle_does_not_hang_planning(tmp_path):
    # In a child process with a deadline: before the fix this loop never ended.
    write_onnx_corpus(tmp_path / "onnx")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(SCRIPTS)!r})
        from firstlayer_zoo.checkpoint_io import onnx_stem
        try:
            onnx_stem({str(tmp_path / "onnx" / "identity_cycle.onnx")!r})
        except ValueError as error:
            print(error)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert "cycle of Identity nodes" in result.stdout


# Start-up: sidecars and file names


def test_deeply_nested_sidecar_names_the_file(tmp_path):
    write_good(tmp_path, "a.safetensors", seed=0)
    (tmp_path / "a.json").write_text("[" * 100_000 + "]" * 100_000)
    (spec,) = folder_source(tmp_path, tmp_path / "cache.json").checkpoints()
    assert spec.refused.startswith(f"{tmp_path / 'a.json'}: sidecar metadata is not valid JSON")


def test_a_file_name_that_is_not_utf8_is_named_at_start_up(tmp_path):
    write_good(tmp_path, "good.safetensors", seed=0)
    os.rename(tmp_path / "good.safetensors", os.fsencode(tmp_path) + b"/caf\xe9.safetensors")
    with pytest.raises(ValueError, match=r"caf\\udce9.safetensors'? is not valid UTF-8.*rename it"):
        folder_source(tmp_path, tmp_path / "cache.json").checkpoints()


def test_a_path_too_long_for_an_output_name_is_named_at_start_up(tmp_path):
    folder = tmp_path / ("d" * 120) / ("e" * 60)
    folder.mkdir(parents=True)
    path = write_good(folder, "weights.safetensors", seed=0)
    with pytest.raises(ValueError, match=rf"^zoos.local.root: {path}: its path relative to the root is 201 bytes, "
                                         "over the 200"):
        folder_source(tmp_path, tmp_path / "cache.json").checkpoints()
    assert len(folder_source(folder.parent, tmp_path / "cache.json").checkpoints()) == 1


def test_an_image_name_that_is_not_utf8_is_named(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    os.rename(tmp_path / "a.png", os.fsencode(tmp_path) + b"/\xff.png")
    source = dataset_source("pics", {"source": "folder", "path": str(tmp_path)})
    with pytest.raises(ValueError, match=r"dataset 'pics': the file name .*\\udcff.png' is not valid UTF-8"):
        source.prepare(tmp_path)


@pytest.mark.parametrize("field", ["zoo", "dataset"])
@pytest.mark.parametrize("name", ["..", ".", "a/b", ".hidden", "x" * 201])
def test_names_that_cannot_be_folders_are_refused_at_start_up(tmp_path, field, name):
    config = study_config(tmp_path, **{f"{field}_name": name})
    with pytest.raises(ValueError, match=rf"^{field}s: the name '{name[:50]}"):
        Study(config)


def test_zoo_root_expands_home_and_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_PARENT", str(tmp_path))
    config = study_config(tmp_path, root="$ZOO_PARENT/zoo")
    assert list(Study(config).checkpoints) == ["local/good.safetensors"]
    monkeypatch.setenv("HOME", str(tmp_path))
    assert list(Study(study_config(tmp_path, root="~/zoo")).checkpoints) == ["local/good.safetensors"]


def test_dataset_path_expands_variables(tmp_path, monkeypatch):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    monkeypatch.setenv("PICTURES", str(tmp_path))
    assert dataset_source("pics", {"source": "folder", "path": "$PICTURES"}).count(None) == 1


# Files no corpus row can hold


def test_unreadable_file_becomes_a_row_saying_so(tmp_path, monkeypatch):
    # Tests run as root, where chmod cannot make a file unreadable; the open itself is made to refuse.
    write_good(tmp_path, "locked.safetensors", seed=0)
    (spec,) = folder_source(tmp_path, tmp_path / "cache.json").checkpoints()

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("firstlayer_zoo.checkpoint_io.sniff", refuse)
    assert extract_stem(spec).status == (
        f"skipped: {spec.uri} (or its init): permission denied; make it readable (chmod a+r) or remove it from "
        "the zoo")


def test_a_failure_inside_the_analysis_becomes_a_row(tmp_path, monkeypatch):
    write_good(tmp_path, "good.safetensors", seed=0)
    (spec,) = folder_source(tmp_path, tmp_path / "cache.json").checkpoints()
    stem = extract_stem(spec)

    def fail(*args):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr("firstlayer_zoo.analysis.fit_analytic_profile", fail)
    status = analyse_stem(spec, stem, identity_basis(5, 3), subtract_init=True).status
    assert status == (f"skipped: {spec.uri}: its stem could not be analysed (LinAlgError); check the file's weights")


def test_all_zero_stem_with_a_known_init_equals_it(tmp_path):
    # The other half of the all-zero corpus row: with an init the reason stays "equals its initialisation".
    save_file({STEM_KEY: stem_weights(0) * 0}, str(tmp_path / "trained.safetensors"))
    save_file({STEM_KEY: stem_weights(0) * 0}, str(tmp_path / "init.safetensors"))
    specs = folder_source(tmp_path, tmp_path / "cache.json", init="init.safetensors",
                          patterns=["trained.safetensors"]).checkpoints()
    stem = extract_stem(specs[0])
    status = analyse_stem(specs[0], stem, identity_basis(5, 3), subtract_init=True).status
    assert status == "skipped: the stem equals its initialisation (no training signal)"


# Limits


def test_limits_defaults_are_the_schemas():
    schema = yaml.safe_load((SCRIPTS.parent / "workflow" / "schemas" / "config.schema.yaml").read_text())
    defaults = {key: value["default"] for key, value in schema["properties"]["limits"]["properties"].items()}
    assert defaults == Limits().to_dict()


def test_header_limit_is_configurable(tmp_path):
    path = write_good(tmp_path, "good.safetensors", seed=0)
    assert tensor_shape(path, STEM_KEY)[1] == (8, 3, 5, 5)
    with applied(Limits(safetensors_header_mb=1e-5)):
        with pytest.raises(CheckpointError, match=r"safetensors header is \d+ bytes, over the limit of 10 "
                                                  r"\(limits.safetensors_header_mb\)"):
            tensor_shape(path, STEM_KEY)


def test_study_limits_reach_every_checkpoint_and_its_job(tmp_path):
    config = {**study_config(tmp_path), "limits": {"safetensors_header_mb": 1e-5}}
    study = Study(config)
    (spec,) = study.checkpoints.values()
    assert spec.extra["planning_error"].startswith("CheckpointError: ")
    assert "limits.safetensors_header_mb" in spec.extra["planning_error"]
    with applied(study.limits):  # as the shard's job applies its rule's `limits` param
        assert "limits.safetensors_header_mb" in extract_stem(spec).status


def remote_safetensors(header: bytes, data: bytes = b"") -> bytes:
    return len(header).to_bytes(8, "little") + header + data


def test_remote_header_claiming_gigabytes_is_refused_before_it_is_fetched():
    claimed = 1_500_000_000
    with LoopbackServer() as server:
        # The file is short; the server claims a 2 GB total, as a hostile server may.
        body = claimed.to_bytes(8, "little") + b"{" * (64 * 1024 - 8)
        server.handle_hook = lambda handler, head: _claim_total(handler, body, 2_000_000_000)
        url = server.add("/model.safetensors", body)
        with pytest.raises(StemError, match=r"safetensors header is 1,500,000,000 bytes, over the limit"):
            read_remote_safetensors(url, [STEM_KEY])
        assert len(server.requests) == 1


def _claim_total(handler, body: bytes, total: int) -> bool:
    handler.send_response(206)
    handler.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{total}")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
    return True


def test_remote_tensor_whose_bytes_disagree_with_its_shape_is_refused():
    header = json.dumps({STEM_KEY: {"dtype": "F32", "shape": [8, 3, 5, 5], "data_offsets": [0, 12]}}).encode()
    with LoopbackServer() as server:
        url = server.add("/model.safetensors", remote_safetensors(header, bytes(12)))
        with pytest.raises(CheckpointError, match=r"takes 12 bytes in the file, not the 4 per element"):
            read_remote_safetensors(url, [STEM_KEY])


def _stream_without_length(handler, head: bool) -> bool:
    handler.send_response(200)
    handler.send_header("Connection", "close")
    handler.end_headers()
    for _ in range(64):
        handler.wfile.write(bytes(1024))
    handler.close_connection = True
    return True


def test_download_without_content_length_stops_at_the_limit(tmp_path):
    with LoopbackServer() as server:
        server.handle_hook = _stream_without_length
        with applied(Limits(download_gb=16 * 1024 / 2**30)):
            with pytest.raises(DownloadTooLarge, match=r"streamed on without a size, over the limit of 16,384 "
                                                       r"bytes \(limits.download_gb\)"):
                download(server.url + "/endless", tmp_path / "endless", log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_download_announcing_more_than_the_limit_is_refused_unread(tmp_path):
    with LoopbackServer() as server:
        url = server.add("/big.zip", bytes(100_000))
        with applied(Limits(download_gb=1000 / 2**30)):
            with pytest.raises(DownloadError, match=r"announces 100,000 bytes, over the limit of 1,000 bytes"):
                download(url, tmp_path / "big.zip", log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def zip_of(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members:
            bundle.writestr(name, data)
    return path


def test_zip_bomb_is_refused_by_expansion_ratio_and_total(tmp_path):
    bomb = zip_of(tmp_path / "bomb.zip", [("run/checkpoints", bytes(20 << 20))])
    with pytest.raises(ArchiveError, match=r"over the limit of [\d,]+ \(limits.archive_expansion_ratio\)"):
        unpack(bomb, tmp_path / "out", "http://x/bomb.zip", Limits())
    assert not (tmp_path / "out").exists()
    with pytest.raises(ArchiveError, match=r"\(limits.archive_unpacked_gb\)"):
        unpack(bomb, tmp_path / "out", "http://x/bomb.zip", Limits(archive_unpacked_gb=1e-3))
    unpack(bomb, tmp_path / "out", "http://x/bomb.zip", Limits(archive_expansion_ratio=1e6))
    assert (tmp_path / "out" / "run" / "checkpoints").stat().st_size == 20 << 20


def test_zip_names_with_dots_are_kept_and_duplicates_refused(tmp_path):
    archive = zip_of(tmp_path / "runs.zip", [("run..v2/checkpoints", b"a"), ("run.v3/checkpoints", b"b")])
    unpack(archive, tmp_path / "out", "u", Limits())
    assert (tmp_path / "out" / "run..v2" / "checkpoints").read_bytes() == b"a"
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = zip_of(tmp_path / "twice.zip", [("run/checkpoints", b"a"), ("run/checkpoints", b"b")])
    with pytest.raises(ArchiveError, match=r"holds 'run/checkpoints' twice"):
        unpack(twice, tmp_path / "out2", "u", Limits())
    climbing = zip_of(tmp_path / "climb.zip", [("../escape", b"a")])
    with pytest.raises(ArchiveError, match=r"member '../escape' would land outside"):
        unpack(climbing, tmp_path / "out3", "u", Limits())


def tar_of(path, members):
    """A gzipped tar of (TarInfo fields, bytes or None) members, written as given: names, links, modes."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as bundle:
        for fields, data in members:
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            info.size = len(data or b"")
            bundle.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.mark.parametrize("member", [{"name": "../escape"}, {"name": "/tmp/absolute"}])
def test_tar_member_climbing_out_is_refused_before_anything_is_written(tmp_path, member):
    archive = tar_of(tmp_path / "climb.tar.gz", [({"name": "run/checkpoints"}, b"w"), (member, b"x")])
    with pytest.raises(ArchiveError, match=r"would land outside"):
        unpack(archive, tmp_path / "out" / "zoo", "http://x/climb.tar.gz", Limits())
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape").exists()


@pytest.mark.parametrize("link", ["/etc/passwd", "../../outside"])
def test_tar_link_pointing_outside_is_refused_by_the_data_filter(tmp_path, link):
    import tarfile

    archive = tar_of(tmp_path / "link.tar.gz", [({"name": "run/checkpoints", "type": tarfile.SYMTYPE,
                                                  "linkname": link}, None)])
    with pytest.raises(ArchiveError, match=r"http://x/link.tar.gz: .run/checkpoints. .*hostile"):
        unpack(archive, tmp_path / "out", "http://x/link.tar.gz", Limits())
    assert not (tmp_path / "out" / "run" / "checkpoints").is_symlink()


def test_tar_members_lose_setuid_bits_and_keep_their_bytes(tmp_path):
    archive = tar_of(tmp_path / "modes.tar.gz", [({"name": "run/checkpoints", "mode": 0o6777}, b"weights")])
    unpack(archive, tmp_path / "out", "http://x/modes.tar.gz", Limits())
    unpacked = tmp_path / "out" / "run" / "checkpoints"
    assert unpacked.read_bytes() == b"weights"
    assert unpacked.stat().st_mode & 0o7022 == 0  # no setuid, setgid, sticky, group or other write


@pytest.mark.parametrize("name", ["ZOO.ZIP", "download", "zoo.tar.gz"])
def test_archive_format_is_read_from_its_bytes(tmp_path, name):
    import shutil

    (tmp_path / "src" / "run").mkdir(parents=True)
    (tmp_path / "src" / "run" / "checkpoints").write_bytes(b"weights")
    kind = "gztar" if name.endswith(".tar.gz") else "zip"
    made = Path(shutil.make_archive(str(tmp_path / "made"), kind, tmp_path / "src"))
    archive = made.rename(tmp_path / name)
    unpack(archive, tmp_path / "out", f"http://x/{name}", Limits())
    assert (tmp_path / "out" / "run" / "checkpoints").read_bytes() == b"weights"


def test_safetensors_entry_checks_hold_for_local_headers(tmp_path):
    path = write_safetensors_entry(tmp_path / "bad.safetensors",
                                   {"dtype": "F32", "shape": [8, 3, 5, -5], "data_offsets": [0, 4]})
    with pytest.raises(CheckpointError, match="lacks a dtype, shape or data_offsets"):
        tensor_shape(path, STEM_KEY)
    raw = write_safetensors_raw(tmp_path / "raw.safetensors", b"\xff\xfe{")
    with pytest.raises(CheckpointError, match=r"corrupt safetensors header \(not JSON\)"):
        tensor_shape(raw, STEM_KEY)


# Images


def test_16_bit_greyscale_png_keeps_its_range(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    image = dataset_source("pics", {"source": "folder", "path": str(tmp_path)}).load(None, 0)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image[..., 0].min() == 0 and image[..., 0].max() == 255
    assert abs(image.mean() - 127.5) < 1


def test_truncated_or_garbage_jpeg_names_the_file(tmp_path):
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff" + bytes(100))
    source = dataset_source("pics", {"source": "folder", "path": str(tmp_path)})
    for index, name in enumerate(["a.jpg", "b.jpg"]):
        with pytest.raises(ValueError, match=rf"^{tmp_path / name}: not a readable image, truncated or corrupt"):
            source.load(None, index)


def test_decompression_bomb_names_the_file(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    source = dataset_source("pics", {"source": "folder", "path": str(tmp_path)})
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'big.png'}: more pixels than PIL will decode"):
        source.load(None, 0)


class _TinyImages(DatasetSource):
    """Images without files: a message names them by index."""

    source = "tiny_test_images"

    def count(self, root):
        return 2

    def load(self, root, index):
        return np.zeros((40, 40, 3) if index == 0 else (5, 30, 3), np.uint8)


@pytest.mark.parametrize("workers", [0, 1])
def test_an_image_smaller_than_the_kernel_or_unreadable_is_one_line_naming_it_and_the_fix(tmp_path, workers):
    Image.new("RGB", (20, 20)).save(tmp_path / "big.png")
    Image.new("RGB", (6, 4)).save(tmp_path / "tiny.png")
    source = dataset_source("pics", {"source": "folder", "path": str(tmp_path)})
    with pytest.raises(ImageError) as refused:
        source_basis(source, None, Preprocessing(), 7, device="cpu", workers=workers, progress=False)
    assert str(refused.value) == (
        f"{tmp_path / 'tiny.png'}: 4x6 pixels after preprocessing, smaller than the 7x7 kernel whose patches are "
        "wanted; remove it from dataset 'pics', or give the zoos of 7x7 stems on it a preprocessing whose resize "
        "(and crop) is at least 7")
    assert isinstance(refused.value, ClearError) and isinstance(refused.value, ValueError)
    with pytest.raises(ImageError, match=r"^image 1 of dataset 'tiny': 5x30 pixels after preprocessing, smaller "
                                         r"than the 7x7 kernel"):
        source_basis(_TinyImages("tiny", {}), None, Preprocessing(), 7, device="cpu", workers=workers,
                     progress=False)
    # An unreadable image is one line too, even from a DataLoader worker (which folds tracebacks into messages).
    (tmp_path / "tiny.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(ImageError) as refused:
        source_basis(source, None, Preprocessing(), 7, device="cpu", workers=workers, progress=False)
    assert str(refused.value) == (f"{tmp_path / 'tiny.png'}: not a readable image, truncated or corrupt "
                                  "(UnidentifiedImageError); remove or replace it")


# The config


def test_yaml_alias_bomb_is_refused_at_start_up(tmp_path):
    from workflow_helpers import TINY_CONFIG, snakemake

    levels = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    levels += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    config = tmp_path / "bomb.yaml"
    config.write_text(TINY_CONFIG.read_text() + "bomb:\n" + "".join(f"  {level}\n" for level in levels))
    # Ten million values: before the guard, validating them took many minutes.
    result = snakemake(tmp_path, "--dry-run", config=config, check=False)
    assert result.returncode != 0
    assert "config: the config expands to more than 200,000 values (YAML aliases" in result.stdout + result.stderr


# A file rewritten under its memory map


def test_sigbus_while_reading_names_the_file_in_the_log(tmp_path):
    # A reader that maps the file and finds it cut short dies of SIGBUS; the log must say which file.
    path = write_good(tmp_path, "mapped.safetensors", seed=0)
    log = tmp_path / "job.log"
    code = textwrap.dedent(f"""
        import mmap, sys, types
        sys.path.insert(0, {str(SCRIPTS)!r})
        from firstlayer_zoo.zoo_sources import local_files as local_zoos
        from firstlayer_zoo.rule_io import logged
        from firstlayer_zoo.zoo_sources.base import GeometryCache
        from firstlayer_zoo.zoo_sources import extract_stem

        def read_under_a_shrinking_map(uri):
            with open(uri, "r+b") as handle:
                mapped = mmap.mmap(handle.fileno(), 0)
                handle.truncate(0)
                return mapped[-1]

        source = local_zoos.FolderSource("local", {{"source": "folder", "dataset": "photos",
            "root": {str(tmp_path)!r}, "stem_key": "stem.weight"}}, "results", GeometryCache({str(tmp_path / "c")!r}))
        (spec,) = source.checkpoints()
        local_zoos.FolderSource.read_weight = classmethod(lambda cls, uri, options: read_under_a_shrinking_map(uri))
        with logged(types.SimpleNamespace(log=[{str(log)!r}])):
            extract_stem(spec)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    text = log.read_text()
    assert f"local/mapped.safetensors: reading {path}" in text
    assert "Bus error" in text
