"""Zoo sources for checkpoints already on disk: `folder` (state dicts) and `onnx` (exported models).

Their base LocalFiles (files, metadata, sidecars, the root's boundary) is also
the base of keras.py's `keras` source; each subclass declares the formats
(checkpoint_io.sniff's names) it reads, by which the notebook API picks one.

Files are found by glob at start-up in sorted order, so the checkpoint list is
deterministic; each file's stem geometry is read from its header (or a
weights-only, memory-mapped load) once and cached by (path, size, mtime), so
re-planning a large folder costs a stat per file. A file whose geometry cannot
be read is still planned, without a basis: its own jobs write a `skipped:` row.

Nothing outside `root` is read as part of the zoo: a file or sidecar that is a
symlink leaving it, or a sidecar `init` that is absolute or climbs out, is
planned as a `skipped:` row without its target ever being opened. Only the
config's own `init` may name a file elsewhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, ClassVar

from ..checkpoint_io import as_conv_weight, conv_shape, onnx_stem, read_onnx_stem, read_tensor, tensor_shape
from ..meta_models import cached_stem_geometry
from ..preprocessing import Preprocessing
from ..records import CheckpointSpec
from ..stems import Stem, StemError, validate_conv_weight
from ..paths import NAME_LIMIT
from .base import ZooSource, name_pattern, register

# Metadata fields the workflow reads, with their types; others are kept as they are in spec.extra.
FIELD_TYPES = {"seed": int, "step": int, "stride": int, "labels": str, "run": str, "arch": str, "init": str}
SIDECAR_LIMIT = 1 << 20
# The tables hold integers in 64 bits.
INT64 = range(-(1 << 63), 1 << 63)


class MetadataError(ValueError):
    """A file's own metadata (its sidecar, or what path_pattern finds in its path) that cannot be used: the file
    becomes a `skipped:` row saying so, and the study goes on."""


def typed_fields(values: dict, message: Callable[[str, str], str], error: type[ValueError] = MetadataError) -> dict:
    """The fields the workflow reads converted to their types; one that cannot be raises message(key, what it should
    be)."""
    values = dict(values)
    for key, kind in FIELD_TYPES.items():
        if values.get(key) is None:
            continue
        try:
            values[key] = kind(values[key])
            if kind is int and values[key] not in INT64:
                raise OverflowError
        except (TypeError, ValueError, OverflowError):
            what = "an integer within 64 bits" if kind is int else "text"
            raise error(message(key, what)) from None
    return values


def expand_path(value: str) -> Path:
    """A configured path with `~` and `$VARS` expanded."""
    return Path(os.path.expandvars(os.path.expanduser(value)))


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, with every symlink followed, lies under `root` (itself resolved)."""
    return path.resolve().is_relative_to(root)


def file_stat(path: str | Path | None) -> list[int] | None:
    """[size, mtime in ns] of a file, None where there is none: what tells a replaced file from the one planned."""
    try:
        stat = os.stat(path) if path else None
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns] if stat else None


def outside_root_reason(path: Path, root: Path) -> str:
    return (f"{path}: a symlink to a file outside the zoo's root {root}, which this workflow does not read; "
            "copy the file into the root instead")


class LocalFiles(ZooSource):
    """Files under `root` matching `patterns`, each with metadata from the config, its path and a sidecar."""

    default_patterns: ClassVar[list[str]]
    formats: ClassVar[tuple[str, ...]]  # what checkpoint_io.sniff calls the files it reads
    # stem: how the reader finds the stem; metadata: the file's other metadata, as found; root, init_in_root and
    # refused: the root's boundary; stat: [size, mtime] of the file and its init, which plan its shard's job.
    spec_fields = {"stem": dict, "metadata": dict, "planning_error": str, "refused": str, "root": str,
                   "init_in_root": bool, "stat": dict}

    @property
    def root(self) -> Path:
        root = expand_path(self.options["root"])
        if not root.is_dir():
            raise ValueError(f"zoos.{self.name}.root: {root} is not a folder; give the folder that holds the files")
        return root

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.options.get("preprocessing", {}))

    def read_roots(self) -> list[Path]:
        return [self.root]

    def input_files(self, specs: list[CheckpointSpec]) -> list[str]:
        """None: each file (and init) is tracked by the size and mtime its spec carries (extra["stat"]) in the
        shard job's params, so replacing one reruns its shard (Snakemake's params trigger). Its path never reaches
        Snakemake, whose patterns would read braces in it as wildcards, and a file deleted after planning becomes
        its own `skipped:` row instead of a job Snakemake will not start.
        """
        return []

    def files(self) -> list[Path]:
        root = self.root
        patterns = self.options.get("patterns", self.default_patterns)
        found: set[Path] = set()
        for pattern in patterns:
            found.update(path for path in root.glob(pattern) if path.is_file())
        # Hidden files are other programs' partial writes (our own atomic writes use them too).
        files = sorted(path for path in found if not any(part.startswith(".") for part in path.relative_to(root).parts))
        if not files:
            raise ValueError(f"zoos.{self.name}: no file under root {root} matches patterns {patterns} "
                             f"(source {self.source!r}); fix root or patterns")
        for path in files:
            self.check_name(path, root)
        return files

    def check_name(self, path: Path, root: Path) -> None:
        """Refuse at start-up a file whose name cannot become an output name (Snakemake records paths as UTF-8)."""
        relative = path.relative_to(root)
        try:
            encoded = relative.as_posix().encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"zoos.{self.name}.root: the file name {ascii(str(path))} is not valid UTF-8, "
                             "which Snakemake cannot record; rename it (or move it out of the root)") from None
        if len(encoded) > NAME_LIMIT:
            raise ValueError(f"zoos.{self.name}.root: {path}: its path relative to the root is {len(encoded)} "
                             f"bytes, over the {NAME_LIMIT} a name may take; rename it or narrow the root")

    def shared_metadata(self) -> dict:
        """The config's `metadata`, which every file shares: a value of the wrong type is the config's to fix."""
        return typed_fields(self.options.get("metadata", {}), lambda key, what: (
            f"zoos.{self.name}.metadata.{key} is not {what}; fix it in the config"), ValueError)

    def metadata(self, path: Path) -> dict:
        """Config `metadata`, then named groups of `path_pattern` on the relative path, then `<file>.json`.

        The file's own metadata (path or sidecar) that cannot be used raises MetadataError: the file becomes a
        `skipped:` row. The config's raises a ValueError naming the key.
        """
        relative = path.relative_to(self.root).as_posix()
        values = self.shared_metadata()
        if self.options.get("path_pattern"):
            match = name_pattern(f"zoos.{self.name}.path_pattern", self.options["path_pattern"]).search(relative)
            if match:
                values.update(typed_fields(
                    {key: value for key, value in match.groupdict().items() if value is not None},
                    lambda key, what: f"{path}: the {key} that path_pattern finds in its path is not {what}; fix "
                                      "path_pattern or rename the file"))
        sidecar = path.with_suffix(".json")
        if self.options.get("sidecar", True) and sidecar.is_file() and inside(sidecar, self.root.resolve()):
            if sidecar.stat().st_size > SIDECAR_LIMIT:
                raise MetadataError(f"{sidecar}: sidecar metadata is over {SIDECAR_LIMIT} bytes; it holds a few "
                                    "fields such as seed and step: fix or remove it")
            try:
                found = json.loads(sidecar.read_bytes())
            except (ValueError, UnicodeDecodeError, RecursionError) as error:
                raise MetadataError(f"{sidecar}: sidecar metadata is not valid JSON ({type(error).__name__}); "
                                    "fix or remove it") from None
            if not isinstance(found, dict):
                raise MetadataError(f"{sidecar}: sidecar metadata must be a JSON object of fields such as seed, "
                                    "step; fix or remove it")
            values.update(typed_fields(found, lambda key, what: f"{sidecar}: its {key} is not {what}; fix or "
                                                                "remove it"))
        return values

    def file_key(self, path: Path) -> list:
        stat = path.stat()
        return [self.source, str(path.resolve()), stat.st_size, stat.st_mtime_ns]

    def geometry(self, path: Path) -> dict:
        """Stem geometry of one file (cached by path, size and mtime); unreadable files get an `error` entry."""
        key = json.dumps(self.file_key(path) + [self.stem_options()], sort_keys=True)

        def compute() -> dict:
            try:
                return self.read_geometry(path)
            except Exception as error:  # noqa: BLE001 - a bad file must not sink the DAG; its job reports it
                return {"first_conv": "", "kernel_size": 0, "in_chans": 0, "stride": None,
                        "error": f"{type(error).__name__}: {error}"}

        return self.cache.get(key, compute)

    def stem_options(self) -> dict:
        return {}

    def read_geometry(self, path: Path) -> dict:
        raise NotImplementedError

    @staticmethod
    def refuse_outside_root(spec: CheckpointSpec) -> None:
        """Raise the planned refusal, or a new one if the file became a symlink out of the root since planning."""
        extra = spec.extra
        if extra.get("refused"):
            raise StemError(extra["refused"])
        root = Path(extra["root"])
        for path in [spec.locator, *([spec.init_locator] if spec.init_locator and extra.get("init_in_root") else [])]:
            if not inside(Path(path), root):
                raise StemError(outside_root_reason(Path(path), root))

    def refusal(self, path: Path, sidecar_init: str | None) -> str | None:
        """Why the file must not be read at all (it or its init lies outside the root), or None."""
        root = self.root.resolve()
        sidecar = path.with_suffix(".json")
        if not inside(path, root):
            return outside_root_reason(path, root)
        if self.options.get("sidecar", True) and sidecar.is_file() and not inside(sidecar, root):
            return outside_root_reason(sidecar, root)
        if sidecar_init is not None and (Path(sidecar_init).is_absolute() or not inside(root / sidecar_init, root)):
            return (f"{sidecar}: its init {sidecar_init!r} lies outside the zoo's root {root}, which this workflow "
                    "does not read; give a path relative to the root, or set `init` in the config")
        return None

    def checkpoints(self) -> list[CheckpointSpec]:
        prep = self.preprocessing
        specs, names = [], {}
        for path in self.files():
            name = path.relative_to(self.root).as_posix().replace("/", "--")
            if name in names:
                raise ValueError(f"zoos.{self.name}: {names[name]} and {path} both become checkpoint {name} (a / in "
                                 "the path under the root is written --); rename one of them")
            names[name] = path
            try:
                metadata, unusable = self.metadata(path), None
            except MetadataError as error:
                metadata, unusable = {}, str(error)
            sidecar_init = metadata.pop("init", None)
            refused = self.refusal(path, sidecar_init) or unusable
            geometry = self.geometry(path) if refused is None else \
                {"first_conv": "", "kernel_size": 0, "in_chans": 0, "stride": None, "error": refused}
            # The config's init is an explicit path and may lie anywhere (an absolute one stays absolute).
            if refused is not None or not (sidecar_init or self.options.get("init")):
                init_locator = None
            elif sidecar_init:
                init_locator = str(self.root / sidecar_init)
            else:
                init_locator = str(self.root / expand_path(self.options["init"]))  # an absolute one stays absolute
            stride = metadata.pop("stride", None) or self.options.get("stride") or geometry.get("stride")
            specs.append(CheckpointSpec(
                zoo=self.name,
                name=name,
                source=self.source,
                arch=metadata.pop("arch", None) or self.options.get("arch"),  # None: unknown, never "the same" as another
                locator=str(path),
                first_conv=geometry["first_conv"],
                kernel_size=geometry["kernel_size"],
                in_chans=geometry["in_chans"],
                dataset=self.options["dataset"],
                preprocessing=prep,
                init_locator=init_locator,
                stride=stride,
                step=metadata.pop("step", None),
                seed=metadata.pop("seed", None),
                labels=metadata.pop("labels", None),
                run=metadata.pop("run", None),
                extra={"stem": self.stem_options(), "metadata": metadata,
                       "planning_error": geometry.get("error"), "refused": refused,
                       "root": str(self.root.resolve()), "init_in_root": bool(sidecar_init),
                       "stat": {"file": file_stat(path), "init": file_stat(init_locator)}},
                channel_order=self.options.get("channel_order", "rgb"),
                refused=refused,
            ))
        return specs


def square_geometry(shape: tuple[int, ...]) -> tuple[int, int]:
    """(kernel_size, in_chans) of a square (K, c, k, k) weight; (0, 0) for anything else (its job says why)."""
    if len(shape) == 4 and shape[2] == shape[3]:
        return shape[2], shape[1]
    return 0, 0


@register
class FolderSource(LocalFiles):
    """State dicts on disk (.safetensors, .pt/.pth/.bin, Lightning .ckpt); the stem by timm arch or by key."""

    source = "folder"
    default_patterns = ["**/*.safetensors", "**/*.pt", "**/*.pth", "**/*.bin", "**/*.ckpt"]
    formats = ("safetensors", "torch")
    stem_fields = {"key": str}  # the state dict's key the stem was read from

    def arch_geometry(self) -> dict | None:
        """The timm model's stem geometry, when the arch (not a stem_key) locates the stem."""
        arch = self.options.get("arch")
        if not arch or self.options.get("stem_key"):
            return None
        try:
            return cached_stem_geometry(self.cache, arch, {}, self.preprocessing.in_chans)
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"zoos.{self.name}.arch: {arch!r} is not a timm model with a first_conv ({error}); "
                             "give a timm model name or set stem_key instead") from None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not (self.options.get("stem_key") or self.options.get("arch")):
            raise ValueError(f"zoos.{self.name}: give arch (a timm model name) or stem_key (the stem's weight "
                             "in the state dict, e.g. conv1.weight) so the stem can be found")

    def stem_options(self) -> dict:
        if self.options.get("stem_key"):
            key = self.options["stem_key"]  # then arch is only a label
        else:
            key = f"{self.arch_geometry()['first_conv']}.weight"
        return {"key": key, "patch_size": self.options.get("patch_size"),
                "patch_layout": self.options.get("patch_layout", "chw")}

    def read_geometry(self, path: Path) -> dict:
        options = self.stem_options()
        key, shape = tensor_shape(path, options["key"])
        kernel_size, in_chans = square_geometry(conv_shape(shape, options["patch_size"]))
        arch = self.arch_geometry()
        return {"first_conv": key.removesuffix(".weight"), "kernel_size": kernel_size, "in_chans": in_chans,
                "stride": arch["stride"] if arch else None}

    @classmethod
    def read_weight(cls, locator: str, options: dict) -> tuple[str, object]:
        key, array = read_tensor(locator, options["key"])
        return key, validate_conv_weight(
            as_conv_weight(array, options["patch_size"], options["patch_layout"], locator), locator)

    @classmethod
    def load_stem(cls, spec: CheckpointSpec) -> Stem:
        cls.refuse_outside_root(spec)
        options = spec.extra["stem"]
        key, weight = cls.read_weight(spec.locator, options)
        init = None
        if spec.init_locator:
            if not Path(spec.init_locator).is_file():
                raise StemError(f"{spec.uri}: its init file {spec.init_locator} does not exist; fix `init` in the "
                                "config or the sidecar")
            _, init = cls.read_weight(spec.init_locator, options)
            if init.shape != weight.shape:
                raise StemError(f"{spec.uri}: init {spec.init_locator} has a stem of shape {init.shape}, "
                                f"the checkpoint {weight.shape}; they are not the same model")
        return Stem(weight=weight, init=init, stride=spec.stride, first_conv=key.removesuffix(".weight"),
                    meta={"key": key})


@register
class OnnxSource(LocalFiles):
    """Exported ONNX models; the stem is the first Conv reached from the graph input."""

    source = "onnx"
    default_patterns = ["**/*.onnx"]
    formats = ("onnx",)
    stem_fields = {"weight": str}  # the initializer the stem's weight was read from

    def read_geometry(self, path: Path) -> dict:
        stem = onnx_stem(path)
        kernel_size, in_chans = square_geometry(stem.shape) if stem.group == 1 else (0, 0)
        return {"first_conv": stem.node, "kernel_size": kernel_size, "in_chans": in_chans, "stride": stem.stride}

    @classmethod
    def load_stem(cls, spec: CheckpointSpec) -> Stem:
        cls.refuse_outside_root(spec)
        stem, array = read_onnx_stem(spec.locator)
        if stem.group != 1:
            raise StemError(f"{spec.uri}: grouped stem (group={stem.group}): each filter sees "
                            f"{stem.shape[1]} of the input channels; no c*k*k patch basis fits")
        weight = validate_conv_weight(array, spec.uri)
        return Stem(weight=weight, init=None, stride=stem.stride, first_conv=stem.node,
                    meta={"weight": stem.weight_name})

