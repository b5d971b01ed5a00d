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

from firstlayer_zoo.dataset_source import prepared_indices
from firstlayer_zoo.dataset_sources import dataset_source, prepare_dataset
from firstlayer_zoo.downloads import DownloadError


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
