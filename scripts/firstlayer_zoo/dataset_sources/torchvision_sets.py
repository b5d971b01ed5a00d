"""Dataset sources that torchvision knows: CIFAR-10, CIFAR-100, SVHN, STL-10, Imagenette.

The file is downloaded by this workflow's downloads (retried, resumed, within
limits.download_gb and limits.download_minutes) and checked against the md5
torchvision's dataset class declares, or the `md5` a config gives with its
`url` (a mirror, or a loopback server in tests). Nothing from a downloaded
file runs, whoever serves it: archives are unpacked by the archive zoo
source's checked extraction (no member outside the folder, no link out, no
name twice, limits.archive_*), into a hidden folder first, so a refused
archive leaves nothing behind; CIFAR's pickled batches are read by an
unpickler that admits only what a batch holds (dicts, lists, strings, numbers
and numpy arrays of numbers), not by torchvision's `pickle.load`. Where the
file is torchvision's own (its md5 is the one torchvision declares),
torchvision's per-file checksums are checked too; another archive's files
only have to exist. SVHN (a .mat read by scipy), STL-10 (raw bytes) and
Imagenette (a folder of JPEGs) are then read by the torchvision class itself.
"""

from __future__ import annotations

import pickle
import shutil
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from .base import DatasetSource, register
from ..downloads import FETCH_FIRST, DownloadError, NetworkError, download, file_digest
from ..limits import current as current_limits
from ..rule_io import ClearError
from ..zoo_sources.archive import ArchiveError, unpack


class DatasetFileError(ClearError):
    """A downloaded dataset file this workflow refuses to read; the message names the file and what to do."""


def torchvision_datasets():
    """torchvision.datasets, imported when data is read: planning needs only the classes' attributes."""
    from torchvision import datasets

    return datasets


class TorchvisionDataset(DatasetSource):
    """One torchvision dataset: download + verify an archive (or file), unpack it checked, read it."""

    remote = True
    splits: ClassVar[tuple[str, ...]]
    default_split: ClassVar[str] = "train"

    @property
    def split(self) -> str:
        split = self.options.get("split", self.default_split)
        if split not in self.splits:
            raise ValueError(f"dataset {self.name!r}: split {split!r} is not one of {list(self.splits)}")
        return split

    def official_download(self) -> tuple[str, str]:
        """(url, md5) that torchvision declares for this dataset and split."""
        raise NotImplementedError

    def filename(self) -> str:
        return Path(self.download_url()).name

    def download_url(self) -> str:
        return self.options.get("url") or self.official_download()[0]

    def md5(self) -> str:
        return self.options.get("md5") or self.official_download()[1]

    @property
    def official_files(self) -> bool:
        """Whether the file is torchvision's own (wherever it is served from): its per-file checksums then hold."""
        return self.md5().lower() == self.official_download()[1]

    def fetch(self, root: Path) -> Path:
        """Download the file once and check its md5; a corrupted file is deleted and refused."""
        path = root / self.filename()
        if path.is_file() and file_digest(path, "md5") == self.md5().lower():
            return path
        ways_out = f"set datasets.{self.name}.url (and md5) to a copy this machine reaches, " + FETCH_FIRST
        from torchvision.datasets.utils import USER_AGENT  # what torchvision's own downloads say they are

        try:
            download(self.download_url(), path, headers={"User-Agent": USER_AGENT})
        except NetworkError as error:
            raise NetworkError(error.endpoint, error.reason, ways_out) from None
        actual = file_digest(path, "md5")
        if actual != self.md5().lower():
            path.unlink()
            raise DownloadError(
                f"dataset {self.name!r}: {path} downloaded from {self.download_url()} has md5 {actual}, "
                f"expected {self.md5()}; the corrupted file was deleted. Rerun to download it again; if the "
                f"URL is a mirror with a different archive, set datasets.{self.name}.md5 to its checksum"
            )
        return path

    def unpack(self, archive: Path, root: Path) -> None:
        """Unpack with the archive source's checks into a hidden folder, then move what it holds into root."""
        marker = root / f".{archive.name}.{self.md5()}.extracted"
        if marker.exists():
            return
        staging = root / ".unpacking"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            unpack(archive, staging, self.download_url(), current_limits())
        except (ArchiveError, tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as error:
            shutil.rmtree(staging, ignore_errors=True)
            reason = str(error) if isinstance(error, ArchiveError) else (
                f"{archive}: a truncated or corrupt archive ({type(error).__name__})")
            raise DatasetFileError(f"dataset {self.name!r}: {reason}; set datasets.{self.name}.url and md5 to a "
                                   "sound copy of the dataset") from None
        for entry in staging.iterdir():
            target = root / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            entry.rename(target)
        staging.rmdir()
        marker.touch()

    def prepare_files(self, root: Path) -> dict:
        root.mkdir(parents=True, exist_ok=True)
        self.unpack(self.fetch(root), root)
        self.dataset(root)
        return {"split": self.split, "url": self.download_url(), "md5": self.md5()}

    def dataset(self, root: Path):
        if getattr(self, "_dataset_root", None) != root:
            self._dataset = self.open(root)
            self._dataset_root = root
        return self._dataset

    def open(self, root: Path):
        raise NotImplementedError

    def __getstate__(self) -> dict:
        # DataLoader workers reopen the data themselves instead of receiving a pickled copy.
        return {k: v for k, v in self.__dict__.items() if k not in ("_dataset", "_dataset_root")}


class ArrayTorchvisionDataset(TorchvisionDataset):
    """Sources whose torchvision class holds every image in one uint8 array."""

    channels_first: ClassVar[bool]
    labels_attribute: ClassVar[str] = "labels"  # where the torchvision class keeps the classes

    def count(self, root: Path) -> int:
        return len(self.dataset(root).data)

    def load(self, root: Path, index: int) -> np.ndarray:
        image = self.dataset(root).data[index]
        return np.ascontiguousarray(image.transpose(1, 2, 0) if self.channels_first else image)

    def label(self, root: Path, index: int) -> int:
        label = int(getattr(self.dataset(root), self.labels_attribute)[index])
        if label < 0:
            raise ValueError(f"dataset {self.name!r}: split {self.split!r} has no labels; choose a labelled split")
        return label


def _without_checksums(files: list) -> list:
    return [[name, None] for name, _ in files]


class _NeedsCode(pickle.UnpicklingError):
    """The pickle asked for a global a CIFAR batch never needs."""


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """How Python 3 writes bytes in a protocol-2 pickle (`_codecs.encode(text, "latin1")`), and nothing else."""
    if not isinstance(text, str) or encoding != "latin1":
        raise _NeedsCode()
    return text.encode("latin1")


# What a CIFAR batch's pickle may call: numpy's array reconstruction (named numpy.core.multiarray in the
# published files, numpy._core.multiarray in pickles numpy 2 writes; from a buffer under protocol 5), the
# array class, dtypes, and bytes as protocol 2 spells them.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_FROM_BUFFER = np.empty(0).__reduce_ex__(5)[0]
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROM_BUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROM_BUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _CifarUnpickler(pickle.Unpickler):
    """Dicts, lists, strings, bytes, numbers and numpy arrays: what a CIFAR batch holds, and nothing that runs."""

    def find_class(self, module: str, name: str):
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise _NeedsCode() from None


def _numbers(value) -> bool:
    """Only plain containers, strings and numbers, and arrays of numbers, anywhere inside `value`."""
    if isinstance(value, dict):
        return all(isinstance(key, (str, bytes)) and _numbers(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return all(_numbers(item) for item in value)
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf" and not value.dtype.hasobject and type(value) is np.ndarray
    return isinstance(value, (str, bytes, int, float, bool, type(None)))


@dataclass(frozen=True)
class CifarArrays:
    """One split of CIFAR as torchvision holds it: (N, 32, 32, 3) uint8 images and their classes."""

    data: np.ndarray
    targets: list[int]


@register
class Cifar10(ArrayTorchvisionDataset):
    source = "cifar10"
    splits = ("train", "test")
    image_side = 32
    channels_first = False
    labels_attribute = "targets"
    torchvision_name = "CIFAR10"

    @property
    def base(self) -> type:
        return getattr(torchvision_datasets(), self.torchvision_name)

    def official_download(self) -> tuple[str, str]:
        return self.base.url, self.base.tgz_md5

    def open(self, root: Path) -> CifarArrays:
        """The split's batches, as torchvision's CIFAR10 reads them, but through the restricted unpickler."""
        files = self.base.train_list if self.split == "train" else self.base.test_list
        batches = [self.read_batch(root / self.base.base_folder / name, md5) for name, md5 in files]
        images = np.vstack([data for data, _ in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return CifarArrays(images, [label for _, labels in batches for label in labels])

    def read_batch(self, path: Path, md5: str) -> tuple[np.ndarray, list[int]]:
        """(data, labels) of one batch file; a file that is not a CIFAR batch is refused, nothing in it run."""
        fix = f"set datasets.{self.name}.url and md5 to a sound copy of {self.source}"
        if not path.is_file():
            raise DatasetFileError(f"dataset {self.name!r}: the archive holds no {path.name} (expected at {path}); "
                                   f"{fix}")
        if self.official_files and file_digest(path, "md5") != md5:
            raise DatasetFileError(f"dataset {self.name!r}: {path} does not have the md5 torchvision declares for "
                                   f"it (a corrupt unpacking?); delete {path.parent} and rerun")
        try:
            with open(path, "rb") as handle:
                entry = _CifarUnpickler(handle, encoding="latin1").load()
            plain = _numbers(entry)
        except _NeedsCode:
            raise DatasetFileError(f"dataset {self.name!r}: {path}: its pickle would run code, which a CIFAR batch "
                                   f"never does; it is not read (a hostile or foreign file): {fix}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                MemoryError, OverflowError, RecursionError, UnicodeDecodeError) as error:
            raise DatasetFileError(f"dataset {self.name!r}: {path}: not a readable CIFAR batch "
                                   f"({type(error).__name__}); {fix}") from None
        labels_key = "labels" if isinstance(entry, dict) and "labels" in entry else "fine_labels"
        data = entry.get("data") if isinstance(entry, dict) else None
        labels = entry.get(labels_key) if isinstance(entry, dict) else None
        if (not plain or not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
                or data.shape[1] != 3 * 32 * 32 or not isinstance(labels, (list, np.ndarray))
                or len(labels) != len(data) or not all(isinstance(label, (int, np.integer)) for label in labels)):
            raise DatasetFileError(f"dataset {self.name!r}: {path}: not a CIFAR batch (a dict of uint8 `data` of "
                                   f"N x 3072 and N integer `labels` or `fine_labels`); {fix}")
        return data, [int(label) for label in labels]


@register
class Cifar100(Cifar10):
    source = "cifar100"
    torchvision_name = "CIFAR100"


@register
class Svhn(ArrayTorchvisionDataset):
    source = "svhn"
    splits = ("train", "test", "extra")
    image_side = 32
    channels_first = True

    def official_download(self) -> tuple[str, str]:
        tv = torchvision_datasets()
        url, _, md5 = tv.SVHN.split_list[self.split]
        return url, md5

    def unpack(self, archive: Path, root: Path) -> None:
        """SVHN is a single .mat file: nothing to extract."""

    def torchvision_class(self) -> type:
        tv = torchvision_datasets()
        split_list = {**tv.SVHN.split_list, self.split: [self.download_url(), self.filename(), self.md5()]}
        return type("SVHN", (tv.SVHN,), {"split_list": split_list})

    def open(self, root: Path):
        return self.torchvision_class()(str(root), split=self.split, download=False)


@register
class Stl10(ArrayTorchvisionDataset):
    source = "stl10"
    splits = ("train", "test", "unlabeled", "train+unlabeled")
    image_side = 96
    channels_first = True

    def official_download(self) -> tuple[str, str]:
        tv = torchvision_datasets()
        return tv.STL10.url, tv.STL10.tgz_md5

    def torchvision_class(self) -> type:
        tv = torchvision_datasets()
        if self.official_files:
            return tv.STL10
        return type("STL10", (tv.STL10,), {
            "train_list": _without_checksums(tv.STL10.train_list),
            "test_list": _without_checksums(tv.STL10.test_list),
        })

    def open(self, root: Path):
        return self.torchvision_class()(str(root), split=self.split, download=False)


@register
class Imagenette(TorchvisionDataset):
    source = "imagenette"
    splits = ("train", "val")
    sizes = ("full", "320px", "160px")

    @property
    def size(self) -> str:
        size = self.options.get("size", "320px")
        if size not in self.sizes:
            raise ValueError(f"dataset {self.name!r}: size {size!r} is not one of {list(self.sizes)}")
        return size

    def official_download(self) -> tuple[str, str]:
        tv = torchvision_datasets()
        return tv.Imagenette._ARCHIVES[self.size]

    def prepare_files(self, root: Path) -> dict:
        return {**super().prepare_files(root), "size": self.size}

    def torchvision_class(self) -> type:
        tv = torchvision_datasets()
        archives = {**tv.Imagenette._ARCHIVES, self.size: (self.download_url(), self.md5())}
        return type("Imagenette", (tv.Imagenette,), {"_ARCHIVES": archives})

    def open(self, root: Path):
        return self.torchvision_class()(str(root), split=self.split, size=self.size, download=False)

    def count(self, root: Path) -> int:
        return len(self.dataset(root)._samples)

    def path_of(self, root: Path, index: int) -> Path:
        return Path(self.dataset(root)._samples[index][0])

    def image_name(self, root: Path, index: int) -> str:
        return str(self.path_of(root, index))

    def label(self, root: Path, index: int) -> int:
        return int(self.dataset(root)._samples[index][1])

    def load(self, root: Path, index: int) -> np.ndarray:
        from PIL import Image  # here, not at start-up: planning reads no image

        with Image.open(self.path_of(root, index)) as image:
            return np.asarray(image.convert("RGB"))
