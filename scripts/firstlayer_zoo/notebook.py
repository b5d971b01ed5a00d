"""One model at a time, for notebooks: `firstlayer_zoo.analyse(model)` runs the workflow's own code on one stem.

The stem is found as the workflow finds it (a file is read by the zoo source that claims its sniffed format,
a model's stem is stems.torch_stem); the basis is the dataset's exact patch basis at the stem's kernel size,
computed once per (dataset, preprocessing, k, c) and kept under $XDG_CACHE_HOME/firstlayer-zoo (laid out by
paths.StudyPaths; written atomically, so a second call only loads it).
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path
from typing import Mapping, NamedTuple

import pandas as pd

from .basis import PatchBasis
from .paths import StudyPaths, notebook_cache
from .preprocessing import Preprocessing
from .records import CheckpointSpec
from .stems import Stem, StemError, validate_conv_weight

ZOO = "notebook"
# Part of every cached basis' key: raise it when what a basis holds changes.
BASIS_CACHE_VERSION = 1
DEFAULT_OFFSETS = (2, 5, 10)


class Result(NamedTuple):
    """What `analyse` returns: one row of checkpoints.parquet, and the rows of profiles.parquet and fits.parquet.

    The columns are those of the workflow's tables (firstlayer_zoo.tables.SCHEMAS); mean_r and mean_r_group
    are empty, as there is no zoo to compare with.
    """

    checkpoint: pd.DataFrame
    profile: pd.DataFrame
    fit: pd.DataFrame


def analyse(obj, dataset: str | Path = "photos", preprocessing: Preprocessing | dict | None = None, *,
            stem_key: str | None = None, name: str | None = None, moments: str = "centred",
            offsets: tuple[int, ...] = DEFAULT_OFFSETS, cache_dir: str | Path | None = None,
            device: str | None = None) -> Result:
    """Profile one model's stem in a dataset's patch basis, as the workflow does for each checkpoint.

    obj: a torch model (its stem: timm's pretrained_cfg first_conv, else the first Conv2d), a state dict,
      or a checkpoint file in any format the workflow reads (.safetensors, .pt/.pth/.bin/.ckpt, .onnx,
      Keras .h5/.keras). In a state dict or a state-dict file the stem is `stem_key`, or else the first
      four-dimensional weight in its order (safetensors files keep their keys sorted by name: give
      stem_key when that is not the stem).
    dataset: "photos" (the colour photos inside scikit-image) or a folder of images.
    preprocessing: what the model was trained with (a Preprocessing or its dict: resize, crop, mean, std ...);
      by default a timm model's pretrained_cfg, else ImageNet's mean and std on images as they are.
    Raises StemError, naming the model or file, when its stem cannot be analysed.
    """
    cache = Path(cache_dir) if cache_dir else notebook_cache()
    stem, spec = _stem_and_spec(obj, dataset, preprocessing, stem_key, name, cache)
    if stem.status != "ok":
        raise StemError(stem.status.removeprefix("skipped: "))
    basis = None
    if spec.basis is not None:
        basis = dataset_basis(dataset, spec.preprocessing, stem.kernel_size, moments, offsets, cache, device)
    from .analysis import analyse_stem
    from .tables import checkpoints_table, fits_table, profiles_table

    analysis = analyse_stem(spec, stem, basis, subtract_init=False)
    if not analysis.ok:
        raise StemError(analysis.status.removeprefix("skipped: "))
    return Result(checkpoints_table([analysis]), profiles_table([analysis]), fits_table([analysis]))


def _stem_and_spec(obj, dataset, preprocessing, stem_key: str | None, name: str | None,
                   cache: Path) -> tuple[Stem, CheckpointSpec]:
    dataset_name = str(dataset)
    if isinstance(obj, (str, Path)):
        return _file_stem(Path(obj), dataset_name, preprocessing, stem_key, name, cache)
    if isinstance(obj, Mapping):
        key = stem_key or _first_conv_key({key: tuple(value.shape) for key, value in obj.items()
                                           if hasattr(value, "shape")}, "the state dict")
        if key not in obj:
            raise StemError(f"the state dict has no tensor {key!r}; give stem_key (one of its 4-D weights)")
        stem = Stem(weight=validate_conv_weight(_float64(obj[key]), "the state dict"), init=None, stride=None,
                    first_conv=key.removesuffix(".weight"))
        source, uri, default = "state_dict", "state dict", Preprocessing()
    else:
        stem, default = _module_stem(obj)
        source, uri = "model", type(obj).__name__
    spec = CheckpointSpec(
        zoo=ZOO, name=name or uri.replace(" ", "_"), source=source, arch=None, locator=uri, first_conv=stem.first_conv,
        kernel_size=stem.kernel_size, in_chans=stem.in_chans, dataset=dataset_name,
        preprocessing=_preprocessing(preprocessing, default), stride=stem.stride)
    return stem, spec


def _preprocessing(given: Preprocessing | dict | None, default: Preprocessing) -> Preprocessing:
    if given is None:
        return default
    return given if isinstance(given, Preprocessing) else Preprocessing.from_dict(given)


def _float64(tensor):
    import numpy as np

    if hasattr(tensor, "detach"):
        import torch

        tensor = tensor.detach().to("cpu", torch.float64).numpy()
    return np.asarray(tensor, dtype=np.float64)


def _first_conv_key(shapes: Mapping[str, tuple[int, ...]], where: str) -> str:
    """The first 4-D `.weight` in order: the stem of a CNN's state dict, saved in module order."""
    for key, shape in shapes.items():
        if key.endswith("weight") and len(shape) == 4:
            return key
    raise StemError(f"{where}: no 4-D weight (no conv stem); give stem_key if the stem is a linear patch embedding")


def _module_stem(model) -> tuple[Stem, Preprocessing]:
    """A torch model's stem (stems.torch_stem) and the preprocessing its pretrained_cfg declares."""
    from .stems import torch_conv_stem, torch_stem

    first_conv, conv = torch_stem(model)
    stem = torch_conv_stem(conv, first_conv, f"{type(model).__name__}.{first_conv}")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return stem, Preprocessing.from_timm_cfg(cfg) if cfg.get("mean") else Preprocessing()


def _file_stem(path: Path, dataset: str, preprocessing, stem_key: str | None, name: str | None,
               cache: Path) -> tuple[Stem, CheckpointSpec]:
    """The stem of one file, read by the zoo source that claims its format, as a job of the workflow reads it."""
    from .checkpoint_io import load_torch_state_dict, safetensors_header, sniff
    from .zoo_sources.base import GeometryCache, ZOO_SOURCES
    from .zoo_sources import extract_stem
    from .zoo_sources.local_files import FolderSource, LocalFiles

    if not path.is_file():
        raise StemError(f"{path}: no such file")
    kind = sniff(path)
    (source,) = [registered for registered, cls in ZOO_SOURCES.items()
                 if issubclass(cls, LocalFiles) and kind in cls.formats]
    options = {"dataset": dataset, "root": str(path.resolve().parent), "patterns": [path.name], "sidecar": False,
               "preprocessing": _preprocessing(preprocessing, Preprocessing()).to_dict()}
    if kind in FolderSource.formats:  # a state dict: its stem is the tensor a key names
        if stem_key is None:
            shapes = ({key: tuple(entry["shape"]) for key, entry in safetensors_header(path).items()}
                      if kind == "safetensors" else
                      {key: tuple(value.shape) for key, value in load_torch_state_dict(path).items()
                       if hasattr(value, "shape")})
            stem_key = _first_conv_key(shapes, str(path))
        options["stem_key"] = stem_key
    # A local file's geometry is read from its header in milliseconds: the geometry cache is never saved.
    zoo = ZOO_SOURCES[source](ZOO, {"source": source, **options}, str(cache),
                              GeometryCache(StudyPaths(str(cache)).geometry_cache))
    (spec,) = zoo.checkpoints()
    spec = replace(spec, name=name or path.name)
    with redirect_stdout(io.StringIO()):  # its line naming the file is for a job's log
        return extract_stem(spec), spec


def dataset_basis(dataset: str | Path, preprocessing: Preprocessing, kernel_size: int, moments: str,
                  offsets: tuple[int, ...], cache: Path, device: str | None) -> PatchBasis:
    """The exact patch basis of "photos" or a folder of images, from the cache when it was computed before."""
    from .dataset_sources import dataset_source
    from .patchstats import source_basis

    options = {"source": "skimage"} if str(dataset) == "photos" else {"source": "folder", "path": str(dataset)}
    source = dataset_source(str(dataset), options)
    manifest = source.prepare(None)
    key = json.dumps({"manifest": manifest, "preprocessing": preprocessing.to_dict(), "kernel_size": kernel_size,
                      "moments": moments, "offsets": sorted(offsets), "version": BASIS_CACHE_VERSION}, sort_keys=True)
    path = Path(StudyPaths(str(cache)).cached_basis(key))
    if path.is_file():
        return PatchBasis.load(path)
    basis = source_basis(source, None, preprocessing, kernel_size, device=device, progress=False,
                         meta={"dataset": str(dataset)}, offsets=offsets, second_moment=moments)
    path.parent.mkdir(parents=True, exist_ok=True)
    basis.save(path)
    return basis
