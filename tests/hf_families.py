"""Hub repositories of every family in hf_stems.csv, built from tests/data/hf_families/*.json.

scripts/dev/build_hf_fixtures.py writes one fixture per family with transformers (or open_clip_torch) itself:
the config files exactly as `save_pretrained` writes them, the (name, shape) of every tensor of the full-size
model and of a tiny one, the stem found by running the tiny model, and the shape of what the image processor
returns for images of several sizes. The tests build repositories from them without installing transformers:
a tiny one with random weights (read, then compared with the same file read from a folder), and full-size
ones whose weights are all zeros but the stem's (served without being held in memory, for the large study).
"""

from __future__ import annotations

import json
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent / "data" / "hf_families"
PROBED_TYPES = {"Conv2d": "Conv2d", "Linear": "Linear", "WeightStandardizedConv2d": "StdConv2d"}


@lru_cache(maxsize=1)
def load_fixtures() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))}


def header_of(tensors: list[list], dtype: str = "F32") -> dict[str, dict]:
    """A safetensors header's entries (dtype, shape, data_offsets) for (name, shape) pairs, in that order."""
    item = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}[dtype]
    header, offset = {}, 0
    for name, shape in tensors:
        size = item * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    return header


def config_files(fixture: dict, tiny: bool = True) -> dict[str, bytes]:
    """The repository's config files as bytes: config.json and preprocessor_config.json, or open_clip_config.json."""
    config = fixture["tiny_config" if tiny else "config"]
    if fixture["library"] == "open_clip":
        return {"open_clip_config.json": json.dumps(config, indent=2).encode()}
    return {"config.json": json.dumps(config, indent=2).encode(),
            "preprocessor_config.json": json.dumps(fixture["preprocessor_config"], indent=2).encode()}


def tiny_state(fixture: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights of the tiny model, every tensor under its real name."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in fixture["tiny_tensors"]}


def weights_filename(fixture: dict) -> str:
    return "open_clip_model.safetensors" if fixture["library"] == "open_clip" else "model.safetensors"


def safetensors_bytes(state: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    return save({name: np.ascontiguousarray(array) for name, array in state.items()})


class VirtualSafetensors:
    """A safetensors file of real tensor names and shapes, all zeros but one tensor: bytes made when asked.

    A full-size ViT is hundreds of megabytes; the server slices this like bytes, and only the header and the
    one stored tensor are ever held.
    """

    def __init__(self, tensors: list[list], stored: dict):
        """stored: tensor name -> its array, or a function that makes it (called whenever its bytes are sent)."""
        header = header_of(tensors)
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        self.prefix = struct.pack("<Q", len(text)) + text
        self.size = len(self.prefix) + max(entry["data_offsets"][1] for entry in header.values())
        self.stored = []
        for name, array in stored.items():
            start, end = header[name]["data_offsets"]
            self.stored.append((len(self.prefix) + start, end - start, array))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, span: slice) -> bytes:
        start, stop, _ = span.indices(self.size)
        out = bytearray(max(0, stop - start))
        pieces = [(0, len(self.prefix), self.prefix), *self.stored]
        for begin, length, data in pieces:
            lo, hi = max(start, begin), min(stop, begin + length)
            if lo < hi:
                data = data() if callable(data) else data
                if not isinstance(data, bytes):
                    data = np.ascontiguousarray(data, dtype=np.float32).tobytes()
                assert len(data) == length
                out[lo - start:hi - start] = data[lo - begin:hi - begin]
        return bytes(out)


def check_fixture(fixture: dict) -> str:
    """The committed tables read this family as the model itself does; one line saying what was checked.

    Raises AssertionError naming the first disagreement: the stem key found in the full-size and in the tiny
    model's tensors against the one the tiny model's forward pass calls first, its kind, stride and flattening
    order, and the preprocessing's output size against what the image processor returned.
    """
    from firstlayer_zoo.hf_table import eval_preprocessing, plan_stem, repository_layout

    family, probed = fixture["family"], fixture["stem"]
    open_clip = fixture["library"] == "open_clip"
    plans = []
    for config, tensors in ((fixture["config"], fixture["tensors"]), (fixture["tiny_config"], fixture["tiny_tensors"])):
        layout = repository_layout(None if open_clip else config, config if open_clip else None)
        plans.append(plan_stem(layout, None if open_clip else config, header_of(tensors),
                               open_clip_config=config if open_clip else None))
    full, tiny = plans
    assert full.key == tiny.key == probed["key"], (family, full.key, tiny.key, probed["key"])
    assert tiny.module_type == PROBED_TYPES[probed["module"]], (family, tiny.module_type, probed["module"])
    if probed["module"] == "Linear":
        assert tiny.patch_layout == probed["patch_layout"], (family, tiny.patch_layout, probed["patch_layout"])
        assert tiny.in_chans * tiny.kernel_size ** 2 == probed["in_features"], family
    else:
        assert (tiny.kernel_size, tiny.stride, tiny.in_chans) == (probed["kernel"], probed["stride"],
                                                                  probed["in_chans"]), (family, tiny, probed)
    if "eps" in probed:
        assert tiny.std_eps == probed["eps"], (family, tiny.std_eps, probed["eps"])
    config = fixture["config"]
    prep = eval_preprocessing(layout, None if open_clip else config, fixture.get("preprocessor_config"),
                              config if open_clip else None)
    sizes = []
    if open_clip:
        size = config["model_cfg"]["vision_cfg"].get("image_size", 224)
        assert prep.preprocessing.crop == size and prep.preprocessing.resize == size, (family, prep)
        sizes.append(size)
    elif prep.approximate is None:
        for probe in fixture["processor_probe"]:
            image = np.zeros((*probe["image"], 3), dtype=np.uint8)
            shape = list(prep.preprocessing.apply(image).shape)
            assert shape == probe["shape"], (family, probe, shape)
            sizes.append(shape[1])
    return (f"{family}: {full.key} ({full.module_type} {full.kernel_size}x{full.kernel_size}, stride {full.stride}, "
            f"{full.out_channels} filters), eval size {sorted(set(sizes)) or prep.approximate}")


def pickle_bytes(state: dict[str, np.ndarray]) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in state.items()}, buffer)
    return buffer.getvalue()


def sharded(state: dict[str, np.ndarray], parts: int = 2) -> dict[str, bytes]:
    """model-0000i-of-0000n.safetensors files and the index that maps every tensor to its file."""
    names = list(state)
    files, weight_map = {}, {}
    for part in range(parts):
        filename = f"model-{part + 1:05d}-of-{parts:05d}.safetensors"
        chunk = names[part::parts]
        files[filename] = safetensors_bytes({name: state[name] for name in chunk})
        weight_map.update({name: filename for name in chunk})
    total = sum(array.nbytes for array in state.values())
    files["model.safetensors.index.json"] = json.dumps({"metadata": {"total_size": total},
                                                        "weight_map": weight_map}).encode()
    return files


def serve(hub, fixture: dict, repo_id: str, *, seed: int = 0, weights: str = "safetensors", full_size: bool = False,
          card_data: dict | None = None, downloads: int = 0, pipeline_tag: str | None = "image-classification",
          state: dict[str, np.ndarray] | None = None, tags: tuple[str, ...] = (), stem=None) -> dict[str, np.ndarray]:
    """Put a repository of the fixture's family on the Hub imitation; returns the weights it holds.

    weights: "safetensors", "pickle" (pytorch_model.bin only) or "sharded" (two safetensors and their index);
    full_size: the real model's tensors, zeros but the stem's (a VirtualSafetensors; `stem`, an array or a
    function making it, is what the stem holds: by default a seeded draw, made again whenever it is sent).
    """
    library = fixture["library"]
    files = config_files(fixture, tiny=not full_size)
    stem_key = fixture["stem"]["key"]
    if full_size:
        shape = dict((name, shape) for name, shape in fixture["tensors"])[stem_key]
        stem = stem if stem is not None else seeded_stem(shape, seed)
        files[weights_filename(fixture)] = VirtualSafetensors(fixture["tensors"], {stem_key: stem})
        state = {stem_key: stem}
    else:
        state = state if state is not None else tiny_state(fixture, seed)
        if weights == "safetensors":
            files[weights_filename(fixture)] = safetensors_bytes(state)
        elif weights == "pickle":
            files["open_clip_pytorch_model.bin" if library == "open_clip" else "pytorch_model.bin"] = \
                pickle_bytes(state)
        else:
            files.update(sharded(state))
    hub.add_repo(repo_id, files, card_data=card_data, pipeline_tag=pipeline_tag, library=library,
                 downloads=downloads, tags=(fixture.get("model_type") or "open_clip", *tags))
    return state


def seeded_stem(shape, seed: int, base_seed: int | None = None, step: float = 0.05):
    """A function making a stem's float32 weights from seeds: a fine-tune's is its base's plus a small step."""
    def make() -> np.ndarray:
        weights = np.random.default_rng(seed if base_seed is None else base_seed).standard_normal(shape)
        if base_seed is not None:
            weights = weights + step * np.random.default_rng(seed).standard_normal(shape)
        return weights.astype(np.float32)
    return make


# The most downloaded image classifiers, as a population: each family's share of the repositories.
CLASSIFIERS = {"vit": 30, "resnet": 10, "convnext": 8, "swin": 8, "deit": 6, "beit": 5, "efficientnet": 4,
               "mobilenet_v2": 4, "dinov2": 4, "mobilevit": 3, "regnet": 3, "convnextv2": 3, "swinv2": 3,
               "mobilenet_v1": 2, "levit": 2, "poolformer": 2, "data2vec-vision": 2, "bit": 2}


def base_repo(family: str) -> str:
    return f"base-{family.replace('_', '-')}/{family.replace('_', '-')}-base"


def populate(hub, count: int, *, seed: int = 0, first: int = 0) -> dict[str, dict]:
    """`count` full-size image classifiers on the imitation: one base repository per family, then fine-tunes of
    them (cardData base_model), downloads falling as 1 / rank. Returns what each repository is, by id.

    first: the rank the population starts at (a later call adds repositories below the earlier ones).
    """
    fixtures = load_fixtures()
    families = sorted(CLASSIFIERS)
    weights = np.array([CLASSIFIERS[family] for family in families], dtype=float)
    rng = np.random.default_rng(seed)
    made = {}
    for rank in range(first, first + count):
        if rank < len(families):
            family, repo, base = families[rank], base_repo(families[rank]), None
        else:
            family = families[rng.choice(len(families), p=weights / weights.sum())]
            repo, base = f"user{rank % 37}/{family.replace('_', '-')}-finetuned-{rank}", base_repo(family)
        fixture = fixtures[family]
        shape = dict((name, shape) for name, shape in fixture["tensors"])[fixture["stem"]["key"]]
        base_seed = None if base is None else 10_000 + families.index(family)
        stem = seeded_stem(shape, 10_000 + families.index(family) if base is None else rank, base_seed)
        serve(hub, fixture, repo, full_size=True, stem=stem, downloads=10_000_000 // (rank + 1),
              card_data={"base_model": base, "license": "apache-2.0"} if base else {"license": "apache-2.0"})
        made[repo] = {"family": family, "base": base, "stem": stem, "size": len(hub.repos[repo]["files"][
            weights_filename(fixture)])}
    return made


def fine_tuned(state: dict[str, np.ndarray], seed: int, step: float = 0.05) -> dict[str, np.ndarray]:
    """A fine-tune's weights: its base's plus a small seeded step in every tensor."""
    rng = np.random.default_rng(seed)
    return {name: (array + step * rng.standard_normal(array.shape)).astype(np.float32)
            for name, array in state.items()}


# A small Hub of tiny repositories for the source's tests and the README's studies: two base models with
# fine-tunes of each, a BGR model, a fine-tune whose base is missing, a model type the table does not know.
BASES = {"google/vit-base-patch16-224-in21k": "vit", "microsoft/resnet-50": "resnet"}
FINE_TUNES = {"ana/vit-cats": "google/vit-base-patch16-224-in21k", "bo/vit-dogs": "google/vit-base-patch16-224-in21k",
              "cy/vit-birds": "google/vit-base-patch16-224-in21k", "dee/resnet-flowers": "microsoft/resnet-50"}


def small_hub(hub) -> dict[str, dict[str, np.ndarray]]:
    """Serve the small Hub (downloads falling in the order written here); returns each repository's weights."""
    fixtures = load_fixtures()
    made, downloads = {}, iter(range(10_000, 0, -100))
    for index, (repo, family) in enumerate(BASES.items()):
        made[repo] = serve(hub, fixtures[family], repo, seed=100 + index, downloads=next(downloads))
    for index, (repo, base) in enumerate(FINE_TUNES.items()):
        made[repo] = serve(hub, fixtures[BASES[base]], repo, state=fine_tuned(made[base], 200 + index),
                           card_data={"base_model": base}, downloads=next(downloads))
    made["apple/mobilevit-small"] = serve(hub, fixtures["mobilevit"], "apple/mobilevit-small", seed=300,
                                          downloads=next(downloads))
    made["eve/vit-lost"] = serve(hub, fixtures["vit"], "eve/vit-lost", seed=301,
                                 card_data={"base_model": "nobody/missing"}, downloads=next(downloads))
    custom = {**fixtures["vit"], "tiny_config": {**fixtures["vit"]["tiny_config"], "model_type": "my_vit"}}
    made["fay/custom-vit"] = serve(hub, custom, "fay/custom-vit", seed=302, downloads=next(downloads))
    return made
