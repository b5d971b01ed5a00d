"""The `archive` source: a published population of trained models (e.g. Schürholt et al.'s Model Zoos).

The checkpoints are known only once the archive is downloaded (checksum
verified) and unpacked: the source is listed by a job (rule list_zoo, as any
source with listed_by_job), which lists its checkpoints with their metadata.
Stem geometry and preprocessing come from the config, so the patch bases are
planned at start-up as for any zoo.

The archive's format is read from its bytes, not its URL. Before anything is
unpacked, every member is checked: no absolute or climbing paths, no links
out of the folder, no name twice, and the total within limits.archive_*.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from ..downloads import download
from ..limits import Limits, current as current_limits, refuse_over
from ..preprocessing import Preprocessing
from ..records import CheckpointSpec
from ..checkpoint_io import read_conv_weight
from ..paths import checkpoint_stem
from ..rule_io import ClearError
from ..stems import Stem, StemError
from .base import ZooSource, name_pattern, register


class ArchiveError(StemError, ClearError):
    """An archive this workflow refuses to unpack or index; the message names the URL (or key) and the reason, and
    is all the console shows of the failed job (rule_io.ClearError)."""


# A run's params file holds a few hyper-parameters; more is a corrupt or hostile file.
PARAMS_LIMIT = 1 << 20
INT64 = range(-(1 << 63), 1 << 63)


def read_params(path: Path) -> dict:
    """A run's hyper-parameters, flattened; a file that is not a small JSON object raises StemError saying so."""
    if path.stat().st_size > PARAMS_LIMIT:
        raise StemError(f"{path}: over {PARAMS_LIMIT} bytes, not a params file of a few hyper-parameters; "
                        "fix it in the archive")
    try:
        params = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise StemError(f"{path}: not valid JSON ({type(error).__name__}); fix it in the archive") from None
    if not isinstance(params, dict):
        raise StemError(f"{path}: not a JSON object of hyper-parameters; fix it in the archive")
    return flatten(params)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)


def int64(value: object, what: str) -> int | None:
    """An integer the tables can hold (None stays None); anything else raises StemError naming `what`."""
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or number not in INT64:
        raise StemError(f"{what} is not an integer within 64 bits; fix it in the archive, or the zoo's keys")
    return number


def member_path(name: str, url: str) -> PurePosixPath:
    """A member's path inside the folder; absolute or climbing names are refused, not silently dropped."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"[A-Za-z]:", name):
        raise ArchiveError(f"{url}: the archive member {name!r} would land outside the unpacked folder; "
                           "the archive is corrupt or hostile, and is not unpacked")
    return path


def check_members(members: list[tuple[str, int, bool]], packed: int, url: str, limits: Limits) -> None:
    """Refuse the archive unless each (name, size, is_dir) member stays inside, appears once, is not both a file and
    a folder, and all fit the limits."""
    seen: set[PurePosixPath] = set()
    files: dict[PurePosixPath, str] = {}
    folders: set[PurePosixPath] = set()
    for name, _, is_dir in members:
        path = member_path(name, url)
        if path in seen and not is_dir:
            raise ArchiveError(f"{url}: the archive holds {name!r} twice, so which one is meant is unclear; "
                               "repack it with each file once")
        seen.add(path)
        folders.update(path.parents)
        if is_dir:
            folders.add(path)
        else:
            files[path] = name
    both = sorted(path for path in files if path in folders)
    if both:
        raise ArchiveError(f"{url}: the archive holds {files[both[0]]!r} both as a file and as a folder of other "
                           "members, which cannot both be unpacked; repack it with each name used once")
    total = sum(size for _, size, _ in members)
    refuse_over(f"{url}: the archive unpacked", total, limits.archive_bytes, "archive_unpacked_gb", ArchiveError)
    refuse_over(f"{url}: the archive unpacked", total, int(max(packed, 1) * limits.archive_expansion_ratio),
                "archive_expansion_ratio", ArchiveError)


def unpack(archive: Path, dest: Path, url: str, limits: Limits) -> None:
    """Unpack a zip or (compressed) tar, told apart by their bytes, into `dest` after checking every member."""
    packed = archive.stat().st_size
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            check_members([(m.filename, m.file_size, m.is_dir()) for m in members], packed, url, limits)
            for member in members:
                target = dest / member_path(member.filename, url)
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink)
        return
    try:
        bundle = tarfile.open(archive)
    except tarfile.TarError:
        raise ArchiveError(f"{url}: neither a zip nor a tar archive (compressed or not); check the URL") from None
    with bundle:
        members = bundle.getmembers()
        check_members([(m.name, m.size, m.isdir()) for m in members], packed, url, limits)
        # The "data" filter refuses links that point outside the folder and devices, and drops setuid bits.
        try:
            bundle.extractall(dest, filter="data")
        except tarfile.FilterError as error:
            raise ArchiveError(f"{url}: {error}; the archive is corrupt or hostile, and is not used") from None


def flatten(values: dict, prefix: str = "") -> dict:
    """Nested hyper-parameters as one level of dotted keys."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@register
class ArchiveSource(ZooSource):
    source = "archive"
    listed_by_job = True  # its checkpoints are known once the archive is unpacked
    spec_fields = {"hyperparameters": str}  # the run's params file, flattened, as JSON

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.options["preprocessing"])

    def checkpoints(self) -> list[CheckpointSpec]:
        _ = self.step_pattern  # a pattern RE2 refuses is refused at start-up, not in the unpacking job
        return []

    @property
    def step_pattern(self):
        pattern = self.options.get("step_pattern")
        return name_pattern(f"zoos.{self.name}.step_pattern", pattern) if pattern else None

    def spec(self, name: str = "", **fields) -> CheckpointSpec:
        """A spec with the config's geometry; a listing's entry fills in name, path and metadata."""
        return CheckpointSpec(
            zoo=self.name, name=name, source=self.source, arch=self.options.get("arch"),
            locator=fields.pop("locator", self.options["url"]), stride=self.options.get("stride"),
            first_conv=self.options["first_conv"],
            kernel_size=self.options["kernel_size"], in_chans=self.options["in_chans"],
            dataset=self.options["dataset"], preprocessing=self.preprocessing,
            channel_order=self.options.get("channel_order", "rgb"), **fields)

    def planned_specs(self) -> list[CheckpointSpec]:
        """Every checkpoint of the archive has the config's geometry: one spec plans their basis."""
        return [self.spec()]

    def listed_spec(self, entry: dict) -> CheckpointSpec:
        return self.spec(**entry)

    def list_checkpoints(self, log=print) -> list[dict]:
        """Download (verified), unpack into listed_files, and return the entries of its checkpoints."""
        options = self.options
        archive_dir = Path(self.paths.archive_download(self.name))
        filename = PurePosixPath(options["url"].split("?")[0]).name or "archive"
        result = download(options["url"], archive_dir / filename, sha256=options.get("sha256"),
                          md5=options.get("md5"), log=log)
        log(f"{options['url']}: {result.size} bytes, {result.bytes_fetched} fetched in {result.attempts} attempt(s)")
        root = self.listed_files
        if root.exists():
            shutil.rmtree(root)
        staging = root.with_name(root.name + ".unpacking")
        shutil.rmtree(staging, ignore_errors=True)
        unpack(result.path, staging, options["url"], current_limits())
        staging.rename(root)
        return self.index_entries(root)

    def index_entries(self, root: Path) -> list[dict]:
        options = self.options
        step_pattern = self.step_pattern
        files = sorted(path for path in root.glob(options["checkpoints"]) if path.is_file())
        if not files:
            raise ArchiveError(f"zoos.{self.name}.checkpoints: {options['checkpoints']!r} matches no file in {root}")
        runs: dict[str, list[dict]] = {}
        for path in files:
            relative = path.relative_to(root)
            run = relative.parts[0] if len(relative.parts) > 1 else relative.stem
            params_file = root / run / options["params_file"] if options.get("params_file") else None
            match = step_pattern.search(str(relative)) if step_pattern else None
            entry = {"locator": str(path), "run": run, "step": None, "seed": None, "labels": None, "extra": {}}
            # One run's unreadable params, or a seed or step the tables cannot hold, is its checkpoints' `skipped:`
            # row (the step's own, if only it is wrong), never the whole archive's failure.
            try:
                entry["step"] = int64(match.group(1), f"{path}: the step that step_pattern finds in its path") \
                    if match else None
            except StemError as error:
                entry["refused"] = str(error)
            try:
                params = read_params(params_file) if params_file and params_file.is_file() else {}
                entry["seed"] = int64(params.get(options["seed_key"]) if options.get("seed_key") else None,
                                      f"{params_file}: its {options.get('seed_key')}")
            except StemError as error:
                params, entry["refused"] = {}, entry.get("refused") or str(error)
            labels = params.get(options["labels_key"]) if options.get("labels_key") else None
            entry["labels"] = str(labels) if labels is not None else None
            entry["extra"] = {"hyperparameters": json.dumps(params, sort_keys=True, default=str)}
            # A step too large for the tables still tells the run's files apart, by the text it was found in.
            suffix = checkpoint_stem("step", entry["step"]) if entry["step"] is not None else \
                safe_name(match.group(0)) if match else None
            entry["name"] = safe_name(run) + (f"-{suffix}" if suffix else "")
            runs.setdefault(run, []).append(entry)
        entries = []
        for members in runs.values():
            initial = next((entry for entry in members if entry["step"] == 0), None)
            for entry in members:
                if entry is initial:
                    continue  # the initialisation is every later checkpoint's W0, not a checkpoint of its own
                entries.append({**entry, "init_locator": initial["locator"] if initial else None})
        names = [entry["name"] for entry in entries]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ArchiveError(f"zoos.{self.name}: checkpoints {duplicates[:3]} share a name; set step_pattern")
        return entries

    @classmethod
    def load_stem(cls, spec: CheckpointSpec) -> Stem:
        key = f"{spec.first_conv}.weight"
        weight = read_conv_weight(spec.locator, key)
        init = read_conv_weight(spec.init_locator, key) if spec.init_locator else None
        return Stem(weight=weight, init=init, stride=spec.stride, first_conv=spec.first_conv)
