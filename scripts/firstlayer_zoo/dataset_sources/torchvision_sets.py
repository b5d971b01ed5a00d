"""Dataset sources that torchvision knows: CIFAR-10, CIFAR-100, SVHN, STL-10, Imagenette.

The download goes through torchvision's own utilities and is checked against
the md5 torchvision's dataset class declares. A config may name another URL
and md5 (a mirror, or a loopback server in tests); the per-file checksums
torchvision applies after extraction belong to the official archive, so with
an overridden md5 they only check that the files exist. The data is then read
by the torchvision class itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from ..dataset_source import DatasetSource, register
from ..downloads import FETCH_FIRST, DownloadError, endpoint_of, unreachable_as


def torchvision_datasets():
    """torchvision.datasets, imported when data is read: planning needs only the classes' attributes."""
    from torchvision import datasets

    return datasets


class TorchvisionDataset(DatasetSource):
    """One torchvision dataset: download + verify an archive (or file), then read it with torchvision."""

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
    def checksum_overridden(self) -> bool:
        return "md5" in self.options

    def fetch(self, root: Path) -> Path:
        """Download the file once and check its md5; a corrupted file is deleted and refused."""
        from torchvision.datasets.utils import calculate_md5, download_url

        path = root / self.filename()
        ways_out = f"set datasets.{self.name}.url (and md5) to a copy this machine reaches, " + FETCH_FIRST
        with unreachable_as(endpoint_of(self.download_url()), ways_out):
            try:
                download_url(self.download_url(), str(root), self.filename(), self.md5())
            except RuntimeError:
                actual = calculate_md5(str(path)) if path.exists() else "no file"
                path.unlink(missing_ok=True)
                raise DownloadError(
                    f"dataset {self.name!r}: {path} downloaded from {self.download_url()} has md5 {actual}, "
                    f"expected {self.md5()}; the corrupted file was deleted. Rerun to download it again; if the "
                    f"URL is a mirror with a different archive, set datasets.{self.name}.md5 to its checksum"
                ) from None
        return path

    def unpack(self, archive: Path, root: Path) -> None:
        marker = root / f".{archive.name}.{self.md5()}.extracted"
        if not marker.exists():
            from torchvision.datasets.utils import extract_archive

            extract_archive(str(archive), str(root))
            marker.touch()

    def prepare_files(self, root: Path) -> dict:
        root.mkdir(parents=True, exist_ok=True)
        self.unpack(self.fetch(root), root)
        self.dataset(root)
        return {"split": self.split, "url": self.download_url(), "md5": self.md5()}

    def torchvision_class(self) -> type:
        """The torchvision class, with the member checksums relaxed when the archive is not the official one."""
        raise NotImplementedError

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

    def torchvision_class(self) -> type:
        if not self.checksum_overridden:
            return self.base
        return type(self.base.__name__, (self.base,), {
            "train_list": _without_checksums(self.base.train_list),
            "test_list": _without_checksums(self.base.test_list),
            "meta": {**self.base.meta, "md5": None},
        })

    def open(self, root: Path):
        return self.torchvision_class()(str(root), train=self.split == "train", download=False)


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
        if not self.checksum_overridden:
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

    def label(self, root: Path, index: int) -> int:
        return int(self.dataset(root)._samples[index][1])

    def load(self, root: Path, index: int) -> np.ndarray:
        from PIL import Image  # here, not at start-up: planning reads no image

        with Image.open(self.path_of(root, index)) as image:
            return np.asarray(image.convert("RGB"))
