"""Dataset sources download for real, from a loopback HTTP server that serves tiny archives in the real formats."""

import hashlib
import http.server
import io
import json
import pickle
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firstlayer_zoo.dataset_sources.base import prepared_indices
from firstlayer_zoo.dataset_sources import dataset_source, prepare_dataset
from firstlayer_zoo.dataset_sources.torchvision_sets import DatasetFileError
from firstlayer_zoo.downloads import DownloadError
from firstlayer_zoo.limits import Limits, applied
from loopback import LoopbackServer


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(folder, base URL) of a threaded HTTP server on 127.0.0.1 serving that folder."""
    folder = tmp_path_factory.mktemp("served")
    handler = partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _images(seed: int, n: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _cifar_archive(path: Path, folder: str, train: dict, test: dict, meta: dict) -> Path:
    members = {f"{folder}/{name}": pickle.dumps(entry) for name, entry in {**train, **test, **meta}.items()}
    return _tar(path, members)


def _cifar10(served_folder: Path):
    images = _images(10, 12, (3, 32, 32))
    train = {f"data_batch_{i}": {"data": images[2 * (i - 1):2 * i].reshape(2, -1), "labels": [0, 1]}
             for i in range(1, 6)}
    test = {"test_batch": {"data": images[10:].reshape(2, -1), "labels": [1, 0]}}
    meta = {"batches.meta": {"label_names": [f"class{i}" for i in range(10)]}}
    archive = _cifar_archive(served_folder / "cifar-10-python.tar.gz", "cifar-10-batches-py", train, test, meta)
    return archive, images[:10].transpose(0, 2, 3, 1)


def _cifar100(served_folder: Path):
    images = _images(100, 5, (3, 32, 32))
    train = {"train": {"data": images[:3].reshape(3, -1), "fine_labels": [0, 1, 2]}}
    test = {"test": {"data": images[3:].reshape(2, -1), "fine_labels": [0, 1]}}
    meta = {"meta": {"fine_label_names": [f"class{i}" for i in range(100)]}}
    archive = _cifar_archive(served_folder / "cifar-100-python.tar.gz", "cifar-100-python", train, test, meta)
    return archive, images[3:].transpose(0, 2, 3, 1)


def _svhn(served_folder: Path):
    from scipy.io import savemat

    images = _images(7, 4, (32, 32, 3))
    path = served_folder / "test_32x32.mat"
    savemat(path, {"X": images.transpose(1, 2, 3, 0), "y": np.array([[1], [2], [3], [10]], dtype=np.uint8)})
    return path, images


def _stl10(served_folder: Path):
    images = _images(3, 3, (3, 96, 96))
    # STL-10's binary files store each channel column-major.
    stored = images.transpose(0, 1, 3, 2).tobytes()
    members = {f"stl10_binary/{name}": data for name, data in {
        "train_X.bin": stored, "train_y.bin": bytes([1, 2, 3]), "unlabeled_X.bin": stored[: 3 * 96 * 96],
        "test_X.bin": stored, "test_y.bin": bytes([1, 2, 3]),
    }.items()}
    return _tar(served_folder / "stl10_binary.tar.gz", members), images.transpose(0, 2, 3, 1)


def _imagenette(served_folder: Path):
    images = _images(5, 3, (40, 56, 3))
    members = {}
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")  # lossless, so the test can compare pixels
        wnid = ["n01440764", "n02102040"][i % 2]
        members[f"imagenette2-160/val/{wnid}/img{i}.JPEG"] = buffer.getvalue()
    members["imagenette2-160/train/n01440764/only.JPEG"] = members["imagenette2-160/val/n01440764/img0.JPEG"]
    order = [0, 2, 1]  # sorted by class folder, then file name
    return _tar(served_folder / "imagenette2-160.tgz", members), images[order]


TORCHVISION_CASES = {
    "cifar10": (_cifar10, {"split": "train"}),
    "cifar100": (_cifar100, {"split": "test"}),
    "svhn": (_svhn, {"split": "test"}),
    "stl10": (_stl10, {"split": "test"}),
    "imagenette": (_imagenette, {"split": "val", "size": "160px"}),
}


@pytest.mark.parametrize("source", sorted(TORCHVISION_CASES))
def test_torchvision_source_downloads_verifies_and_reads(served, tmp_path, source):
    folder, base_url = served
    build, options = TORCHVISION_CASES[source]
    archive, expected = build(folder)
    config = {"source": source, **options, "url": f"{base_url}/{archive.name}", "md5": _md5(archive)}
    manifest = prepare_dataset("data", config, tmp_path / "root", tmp_path / "manifest.json")
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert manifest["md5"] == _md5(archive) and manifest["n_images"] == len(expected)
    assert (tmp_path / "root" / archive.name).is_file()
    images = list(dataset_source("data", config).images(tmp_path / "root"))
    np.testing.assert_array_equal(np.stack(images), expected)


def test_official_checksums_come_from_torchvision():
    from torchvision import datasets as tv

    assert dataset_source("c", {"source": "cifar10"}).md5() == tv.CIFAR10.tgz_md5
    assert dataset_source("c", {"source": "cifar100"}).download_url() == tv.CIFAR100.url
    assert dataset_source("s", {"source": "svhn", "split": "extra"}).md5() == tv.SVHN.split_list["extra"][2]
    assert dataset_source("s", {"source": "stl10"}).md5() == tv.STL10.tgz_md5
    assert dataset_source("i", {"source": "imagenette", "size": "full"}).download_url() == \
        tv.Imagenette._ARCHIVES["full"][0]


def test_corrupted_download_is_refused_and_deleted(served, tmp_path):
    folder, base_url = served
    archive, _ = _cifar10(folder)
    corrupted = folder / "corrupted" / archive.name
    corrupted.parent.mkdir(exist_ok=True)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    config = {"source": "cifar10", "url": f"{base_url}/corrupted/{archive.name}", "md5": _md5(archive)}
    with pytest.raises(DownloadError) as error:
        prepare_dataset("cifar", config, tmp_path / "root", tmp_path / "manifest.json")
    message = str(error.value)
    assert str(tmp_path / "root" / archive.name) in message
    assert _md5(corrupted) in message and "datasets.cifar.md5" in message
    assert not (tmp_path / "root" / archive.name).exists()
    assert not (tmp_path / "manifest.json").exists()
    assert list(tmp_path.glob(".manifest.json.*")) == []


def test_failed_preparation_leaves_no_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="datasets.missing.path"):
        prepare_dataset("missing", {"source": "folder", "path": str(tmp_path / "nowhere")},
                        tmp_path / "root", tmp_path / "manifest.json")
    assert list(tmp_path.iterdir()) == []


def test_image_folder_reads_recursively_in_sorted_order(tmp_path):
    images = _images(1, 4, (20, 24, 3))
    names = ["b/2.png", "a/z.PNG", "b/10.png", "a/sub/x.png"]
    for name, image in zip(names, images):
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "data" / name)
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    source = dataset_source("folder", {"source": "folder", "path": str(tmp_path / "data")})
    manifest = source.prepare(tmp_path / "root")
    order = sorted(range(4), key=lambda i: names[i])
    np.testing.assert_array_equal(np.stack(list(source.images(tmp_path / "root"))), images[order])
    assert manifest["n_images"] == 4
    (tmp_path / "data" / "b" / "2.png").unlink()
    changed = dataset_source("folder", {"source": "folder", "path": str(tmp_path / "data")})
    assert changed.prepare(tmp_path / "root")["files_sha1"] != manifest["files_sha1"]


def test_a_folder_datasets_symlinks_out_of_the_folder_are_skipped_unread_and_recorded(tmp_path):
    images = _images(2, 4, (20, 24, 3))
    folder, outside = tmp_path / "data", tmp_path / "outside"
    (folder / "sub").mkdir(parents=True)
    (outside / "more").mkdir(parents=True)
    Image.fromarray(images[0]).save(folder / "a.png")
    Image.fromarray(images[1]).save(outside / "secret.png")
    Image.fromarray(images[2]).save(outside / "more" / "other.png")
    Image.fromarray(images[3]).save(folder / "sub" / "inside.png")
    (folder / "b.png").symlink_to(outside / "secret.png")
    (folder / "c.png").symlink_to(folder / "sub" / "inside.png")  # a link that stays inside is an image like any
    (folder / "linked_dir").symlink_to(outside / "more", target_is_directory=True)
    source = dataset_source("photos", {"source": "folder", "path": str(folder)})
    manifest = prepare_dataset("photos", {"source": "folder", "path": str(folder)}, tmp_path / "root",
                               tmp_path / "manifest.json")
    assert manifest["n_images"] == 3 and manifest["skipped"] == [{"file": "b.png", "reason": (
        f"{folder / 'b.png'}: a symlink to a file outside the dataset's folder {folder}, which this workflow does "
        "not read; copy the image into the folder instead")}]
    np.testing.assert_array_equal(np.stack(list(source.images(tmp_path / "root"))), images[[0, 3, 3]])
    # A listed image made into a link out after the listing is refused when read, naming it.
    (folder / "a.png").unlink()
    (folder / "a.png").symlink_to(outside / "secret.png")
    with pytest.raises(ValueError, match=r"a.png: a symlink to a file outside the dataset's folder"):
        source.load(tmp_path / "root", 0)


def test_subsampling_is_seeded_recorded_and_checked(tmp_path):
    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field"]

    def sample(seed):
        source = dataset_source("p", {"source": "skimage", "images": names, "subsample": {"count": 3, "seed": seed}})
        return source.prepare(None), source.indices(None)

    first, indices = sample(0)
    again, same = sample(0)
    assert first == again and np.array_equal(indices, same)
    assert len(set(indices)) == 3 and list(indices) == sorted(indices)
    assert first["subsample"] == {"count": 3, "seed": 0} and first["n_images"] == 3 and first["n_available"] == 5
    seeds = [sample(seed)[1].tolist() for seed in range(6)]
    assert len({tuple(s) for s in seeds}) > 1
    too_many = dataset_source("p", {"source": "skimage", "images": names[:2], "subsample": {"count": 3}})
    with pytest.raises(ValueError, match="datasets.p.subsample.count"):
        too_many.prepare(None)


def test_jobs_read_the_images_the_manifest_lists_not_a_fresh_selection(tmp_path):
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    options = {"source": "skimage", "images": names, "subsample": {"count": 2, "seed": 1}}
    manifest = prepare_dataset("p", options, tmp_path, tmp_path / "manifest.json")
    source = dataset_source("p", options)
    np.testing.assert_array_equal(prepared_indices(tmp_path / "manifest.json"), source.indices(None))
    # Whatever the manifest lists is what is read, even if the config's sample would now differ.
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "indices": [3, 0]}))
    read = list(source.images(None, prepared_indices(tmp_path / "manifest.json")))
    assert [list(image.shape) for image in read] == [manifest["images"][3]["shape"], manifest["images"][0]["shape"]]
    unsampled = prepare_dataset("q", {"source": "skimage", "images": names}, tmp_path, tmp_path / "all.json")
    assert unsampled["indices"] is None
    np.testing.assert_array_equal(prepared_indices(tmp_path / "all.json"), np.arange(4))


# Mirrors serving hostile files: nothing lands outside the dataset's folder and nothing from a file runs.


def _tar_with(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    with tarfile.open(path, "w:gz") as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                archive.addfile(info, io.BytesIO(member[1]))
    return path.read_bytes()


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _files_under(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*")}


def _serve_cifar(server: LoopbackServer, tmp_path: Path, members: list) -> dict:
    data = _tar_with(tmp_path / "cifar-10-python.tar.gz", members)
    url = server.add("/mirror/cifar-10-python.tar.gz", data)
    return {"source": "cifar10", "split": "train", "url": url, "md5": hashlib.md5(data).hexdigest()}


@pytest.mark.parametrize("hostile", ["climbing", "absolute", "symlink out", "hardlink out"])
def test_a_mirrored_archive_whose_members_leave_the_folder_is_refused_and_nothing_lands_outside(tmp_path, hostile):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}))
    root = tmp_path / "results" / "datasets" / "cifar"
    batch = ("cifar-10-batches-py/data_batch_1", pickle.dumps({"data": np.zeros((2, 3072), np.uint8),
                                                               "labels": [0, 1]}))
    escape = {
        "climbing": ("../../../outside/escaped", b"written outside"),
        "absolute": (str(outside / "escaped"), b"written outside"),
        "symlink out": _link("cifar-10-batches-py/data_batch_2", str(outside / "secret")),
        "hardlink out": _link("cifar-10-batches-py/data_batch_2", "../../../outside/secret", tarfile.LNKTYPE),
    }[hostile]
    (tmp_path / "served").mkdir()
    with LoopbackServer() as server:
        config = _serve_cifar(server, tmp_path / "served", [batch, escape])
        with pytest.raises(DatasetFileError) as refused:
            prepare_dataset("cifar", config, root, tmp_path / "manifest.json")
    message = str(refused.value)
    assert message.startswith(f"dataset 'cifar': {config['url']}: ") and "hostile" in message
    assert "\n" not in message and "set datasets.cifar.url and md5" in message
    assert _files_under(outside) == {"secret"}
    assert _files_under(root) == {"cifar-10-python.tar.gz"}  # nothing unpacked, no staging folder left
    assert not (tmp_path / "manifest.json").exists()


def _cifar_batches(batch: bytes) -> list:
    clean = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]})
    members = [(f"cifar-10-batches-py/data_batch_{i}", batch if i == 3 else clean) for i in range(1, 6)]
    return members + [("cifar-10-batches-py/test_batch", clean)]


@pytest.mark.parametrize("payload", ["reduce", "reduce in the labels", "object array", "nested too deeply"])
def test_a_cifar_batch_is_read_without_running_anything_from_it(tmp_path, payload):
    from hostile_corpus import WritesMarker

    marker = tmp_path / "marker"
    batch = {
        "reduce": lambda: pickle.dumps(WritesMarker(marker), protocol=2),
        "reduce in the labels": lambda: pickle.dumps(
            {"data": np.zeros((2, 3072), np.uint8), "labels": [0, WritesMarker(marker)]}, protocol=2),
        "object array": lambda: pickle.dumps({"data": np.array([[1, "x"]], dtype=object), "labels": [0]}),
        # A list inside a list, 100,000 deep (EMPTY_LIST then APPEND opcodes): nothing runs, nothing overflows.
        "nested too deeply": lambda: b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".",
    }[payload]()
    (tmp_path / "served").mkdir()
    with LoopbackServer() as server:
        config = _serve_cifar(server, tmp_path / "served", _cifar_batches(batch))
        # The deep nesting compresses a thousandfold: allowed here, so that the batch itself is what is tested.
        with applied(Limits(archive_expansion_ratio=1e6)), pytest.raises(DatasetFileError) as refused:
            prepare_dataset("cifar", config, tmp_path / "root", tmp_path / "manifest.json")
    path = tmp_path / "root" / "cifar-10-batches-py" / "data_batch_3"
    expected = {"reduce": "its pickle would run code", "reduce in the labels": "its pickle would run code",
                "object array": "not a CIFAR batch", "nested too deeply": "not a readable CIFAR batch (RecursionError)"
                }[payload]
    assert str(refused.value).startswith(f"dataset 'cifar': {path}: {expected}")
    assert not marker.exists()
    assert not (tmp_path / "manifest.json").exists()


def _as_published(entry: dict) -> bytes:
    """A batch pickled as the published CIFAR files are: protocol 2, arrays rebuilt by numpy.core.multiarray."""
    data = pickle.dumps(entry, protocol=2)
    assert (b"numpy._core.multiarray" in data) == ("data" in entry)
    return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def test_a_clean_cifar_reads_exactly_as_torchvision_reads_it(tmp_path):
    from torchvision.datasets import CIFAR10

    images = _images(11, 10, (3, 32, 32))
    entries = {f"data_batch_{i}": {"batch_label": f"training batch {i} of 5", "data": images[2 * i - 2:2 * i]
                                   .reshape(2, -1), "labels": [i % 10, (i + 3) % 10],
                                   "filenames": [f"img{i}a.png", f"img{i}b.png"]} for i in range(1, 6)}
    entries["test_batch"] = entries["data_batch_1"]
    members = [(f"cifar-10-batches-py/{name}", _as_published(entry)) for name, entry in entries.items()]
    members.append(("cifar-10-batches-py/batches.meta", _as_published({"label_names": [f"c{i}" for i in range(10)],
                                                                        "num_cases_per_batch": 2, "num_vis": 3072})))
    (tmp_path / "served").mkdir()
    with LoopbackServer() as server:
        config = _serve_cifar(server, tmp_path / "served", members)
        prepare_dataset("cifar", config, tmp_path / "root", tmp_path / "manifest.json")
    source = dataset_source("cifar", config)
    unchecked = type("CIFAR10", (CIFAR10,), {"train_list": [[n, None] for n, _ in CIFAR10.train_list],
                                            "test_list": [[n, None] for n, _ in CIFAR10.test_list],
                                            "meta": {**CIFAR10.meta, "md5": None}})
    theirs = unchecked(str(tmp_path / "root"), train=True, download=False)
    np.testing.assert_array_equal(np.stack(list(source.images(tmp_path / "root"))), theirs.data)
    assert [source.label(tmp_path / "root", i) for i in range(10)] == theirs.targets


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_read_alike(tmp_path, protocol):
    data = _images(13, 3, (3072,))
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": data, "labels": [4, 5, 6], "filenames": [b"a.png"] * 3}, protocol=protocol))
    read, labels = dataset_source("cifar", {"source": "cifar10", "md5": "0" * 32}).read_batch(path, None)
    np.testing.assert_array_equal(read, data)
    assert labels == [4, 5, 6]


def test_torchvisions_per_file_checksums_hold_wherever_its_own_archive_is_served_from(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    images = _images(12, 12, (3, 32, 32))
    batches = {name: pickle.dumps({"data": images[2 * i:2 * i + 2].reshape(2, -1), "labels": [0, 1]})
               for i, name in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"])}
    (tmp_path / "served").mkdir()
    with LoopbackServer() as server:
        members = [(f"cifar-10-batches-py/{name}", data) for name, data in batches.items()]
        config = _serve_cifar(server, tmp_path / "served", members)
        # The served archive plays torchvision's own: its md5 is the one torchvision declares, the config's too.
        monkeypatch.setattr(CIFAR10, "tgz_md5", config["md5"])
        declared = {name: hashlib.md5(data).hexdigest() for name, data in batches.items()}
        declared["data_batch_4"] = "0" * 32
        monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", declared[f"data_batch_{i}"]]
                                                    for i in range(1, 6)])
        with pytest.raises(DatasetFileError, match=r"data_batch_4 does not have the md5 torchvision declares"):
            prepare_dataset("cifar", config, tmp_path / "root", tmp_path / "manifest.json")
        declared["data_batch_4"] = hashlib.md5(batches["data_batch_4"]).hexdigest()
        monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", declared[f"data_batch_{i}"]]
                                                    for i in range(1, 6)])
        assert prepare_dataset("cifar", config, tmp_path / "root", tmp_path / "manifest.json")["n_images"] == 10


def test_a_dataset_download_ends_at_the_download_deadline(tmp_path):
    with LoopbackServer(stall_s=20) as server:
        url = server.add("/cifar-10-python.tar.gz", b"x" * 5000)
        server.faults["/cifar-10-python.tar.gz"] = ["trickle"]
        with applied(Limits(download_minutes=0.005)), pytest.raises(DownloadError, match="limits.download_minutes"):
            prepare_dataset("cifar", {"source": "cifar10", "url": url, "md5": "0" * 32}, tmp_path / "root",
                            tmp_path / "manifest.json")
    assert not (tmp_path / "manifest.json").exists()
