"""Sources are plug-ins: the schema offers exactly the registered sources, a name is taken once, imports run one way."""

import ast
from pathlib import Path

import pytest
import yaml

from firstlayer_zoo.dataset_sources import DATASET_SOURCES
from firstlayer_zoo.preprocessing import Preprocessing
from firstlayer_zoo.records import CheckpointSpec
from firstlayer_zoo.registry import Registry
from firstlayer_zoo.zoo_sources.base import GeometryCache
from firstlayer_zoo.zoo_sources import ZOO_SOURCES
from firstlayer_zoo.zoo_sources.local_files import FolderSource
from import_graph import import_graph, module_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "scripts" / "firstlayer_zoo"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ListedFolder(FolderSource):
    """A folder whose files are found by its listing job, not at planning (as a Hub listing finds repositories);
    nothing is known of their stems before the listing (ZooSource.planned_specs' default)."""

    source = "listed_folder"
    listed_by_job = True

    def checkpoints(self):
        return []

    def list_checkpoints(self):
        return [spec.to_dict() for spec in super().checkpoints()]

    def listed_spec(self, entry):
        return CheckpointSpec.from_dict(entry)


def schema_sources(definition: str) -> set[str]:
    schema = yaml.safe_load(SCHEMA.read_text())
    return set(schema["$defs"][definition]["properties"]["source"]["enum"])


def test_the_schema_offers_exactly_the_registered_zoo_sources():
    assert schema_sources("zoo") == set(ZOO_SOURCES)


def test_the_schema_offers_exactly_the_registered_dataset_sources():
    assert schema_sources("dataset") == set(DATASET_SOURCES)


def test_a_source_name_registered_twice_is_refused_naming_both_classes():
    registry = Registry("zoo")

    class First:
        source = "same"

    class Second:
        source = "same"

    registry.register(First)
    with pytest.raises(ValueError, match=r"zoo source 'same' is registered twice, by .*First and .*Second"):
        registry.register(Second)
    assert registry["same"] is First


@pytest.mark.parametrize("source, locator", [("timm", "timm/resnet18.a1_in1k"),
                                             ("torchhub", "owner/repo:resnet20"),
                                             ("torchvision", "https://download.example/resnet18.pth")])
def test_a_remote_locator_that_is_also_a_relative_path_is_no_input_file(tmp_path, monkeypatch, source, locator):
    monkeypatch.chdir(tmp_path)
    Path(locator).parent.mkdir(parents=True)
    Path(locator).write_bytes(b"a file that happens to share the Hub id's name")
    spec = CheckpointSpec(zoo="z", name="m", source=source, arch=None, locator=locator, first_conv="conv1",
                          kernel_size=3, in_chans=3, dataset="photos", preprocessing=Preprocessing())
    zoo = ZOO_SOURCES[source]("z", {"source": source}, str(tmp_path), GeometryCache(tmp_path / "g.json"))
    assert zoo.input_files([spec]) == []


def test_each_format_sniff_names_is_read_by_exactly_one_local_source():
    """The notebook API reads a file with the source that claims its sniffed format."""
    from firstlayer_zoo.zoo_sources.local_files import LocalFiles

    claims = {name: cls.formats for name, cls in ZOO_SOURCES.items() if issubclass(cls, LocalFiles)}
    assert claims == {"folder": ("safetensors", "torch"), "onnx": ("onnx",), "keras": ("keras",)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (the first repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert "firstlayer_zoo.zoo_sources.base" in graph["firstlayer_zoo.zoo_sources.train"]
    # Each source package imports all its modules (registry.import_modules), which the graph follows.
    assert {f"firstlayer_zoo.zoo_sources.{module}" for module in ("keras", "train", "local_files", "base")} <= \
        graph["firstlayer_zoo.zoo_sources"]
    assert "firstlayer_zoo.dataset_sources.torchvision_sets" in graph["firstlayer_zoo.dataset_sources"]
    assert find_cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle_through_a_package_and_a_function_level_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sources").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text("def f():\n    from .sources import REGISTRY\n")
    (package / "sources" / "__init__.py").write_text("from . import one\n")
    (package / "sources" / "one.py").write_text("from ..base import f\n")
    assert find_cycle(import_graph(package)) == ["pkg.base", "pkg.sources", "pkg.sources.one", "pkg.base"]


def test_the_cycle_finder_follows_a_package_that_imports_every_module_of_its_path(tmp_path):
    package = tmp_path / "pkg"
    (package / "sources").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text("def f():\n    from .sources import REGISTRY\n")
    (package / "sources" / "__init__.py").write_text(
        "import importlib, pkgutil\n\nfor module in pkgutil.iter_modules(__path__):\n"
        "    importlib.import_module(f'{__name__}.{module.name}')\n")
    (package / "sources" / "one.py").write_text("from ..base import f\n")
    assert find_cycle(import_graph(package)) == ["pkg.base", "pkg.sources", "pkg.sources.one", "pkg.base"]


def test_no_two_classes_of_the_package_share_a_name():
    defined: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                defined.setdefault(node.name, []).append(module_name(path, PACKAGE))
    assert {name: modules for name, modules in defined.items() if len(modules) > 1} == {}


def test_no_rule_or_planner_branches_on_a_source_name():
    """The rule layer asks the source (remote, listed_by_job, input_files), never its name."""
    checked = [*(ROOT / "workflow" / "rules").glob("*.smk"), PACKAGE / "plan.py"]
    for path in checked:
        text = path.read_text()
        for name in {*ZOO_SOURCES, *DATASET_SOURCES}:
            assert f'== "{name}"' not in text and f"== '{name}'" not in text, (path, name)
        assert "dynamic" not in text, path


def test_planning_imports_no_torch():
    """Snakemake plans at every start: the planner, every source's planning and TrainRun stay free of torch and PIL."""
    import subprocess
    import sys

    probe = ("import sys, firstlayer_zoo.plan, firstlayer_zoo.zoo_sources, firstlayer_zoo.dataset_sources; "
             "print(sorted(name for name in ('torch', 'torchvision', 'timm', 'PIL') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=PACKAGE.parent, capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_the_readme_layout_names_every_module_of_the_package():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):].split("\n## ", 1)[0]
    missing = [path.relative_to(PACKAGE).as_posix() for path in sorted(PACKAGE.rglob("*.py"))
               if (path.name if path.parent == PACKAGE else path.stem) not in layout
               or (path.parent != PACKAGE and f"{path.parent.name}/" not in layout)]
    assert missing == []


def folder_zoo_of_one_file(tmp_path):
    from firstlayer_zoo.zoo_sources.local_files import FolderSource
    from hostile_corpus import STEM_KEY, write_good

    (tmp_path / "zoo").mkdir()
    write_good(tmp_path / "zoo", "good.safetensors", seed=0)
    options = {"source": "folder", "dataset": "photos", "root": str(tmp_path / "zoo"), "stem_key": STEM_KEY}
    return FolderSource("local", options, str(tmp_path / "results"), GeometryCache(tmp_path / "g.json"))


def test_a_basis_keeps_its_file_when_a_listing_adds_a_kernel_size_of_its_preprocessing(tmp_path, monkeypatch):
    """Jobs planned before a listing was written read their bases' files: the bases the listing adds get files of
    their own, so the study never asks for one basis in two files (and computes it twice) in one run."""
    from safetensors.torch import save_file

    from firstlayer_zoo.plan import Study
    from hostile_corpus import STEM_KEY, stem_weights

    monkeypatch.setitem(ZOO_SOURCES, ListedFolder.source, ListedFolder)
    for folder, shape in (("k5", (8, 3, 5, 5)), ("k3", (8, 3, 3, 3))):
        (tmp_path / folder).mkdir()
        save_file({STEM_KEY: stem_weights(0, shape)}, str(tmp_path / folder / "net.safetensors"))
    zoo = {"dataset": "photos", "stem_key": STEM_KEY, "preprocessing": {"resize": 64}}
    config = {"outdir": str(tmp_path / "results"), "datasets": {"photos": {"source": "skimage"}},
              "zoos": {"plain": {**zoo, "source": "folder", "root": str(tmp_path / "k5")},
                       "listed": {**zoo, "source": ListedFolder.source, "root": str(tmp_path / "k3")}}}
    study = Study(config, cache_path=tmp_path / "g.json")
    (k5,) = study.bases
    assert study.basis_files[k5].endswith("/k5_c3.npz")
    study.sources["listed"].write_listing(study.sources["listed"].list_checkpoints())
    k3, same = study.bases
    assert (k3.kernel_size, same) == (3, k5) and k3.preprocessing == k5.preprocessing
    assert study.basis_files[k5].endswith("/k5_c3.npz") and study.basis_files[k3].endswith("/k3_c3.npz")
    # A later run plans both at start-up, into one file, unless a file on disk already holds one.
    assert {path.rsplit("/", 1)[1] for path in Study(config, cache_path=tmp_path / "g.json").basis_files.values()} \
        == {"k3-5_c3.npz"}


def test_a_source_writing_a_field_it_does_not_declare_fails_naming_it(tmp_path, monkeypatch):
    """What a source knows of a checkpoint is declared, with types: an undeclared field fails planning and the
    reading job (a bug in the source, not one file's skipped row); a value of another type fails the same way."""
    from firstlayer_zoo.plan import Study
    from firstlayer_zoo.records import FieldError
    from firstlayer_zoo.shard_analysis import analyse_shard
    from firstlayer_zoo.zoo_sources import extract_stem
    from firstlayer_zoo.zoo_sources.local_files import FolderSource

    zoo = folder_zoo_of_one_file(tmp_path)
    (spec,) = zoo.checkpoints()
    assert extract_stem(spec).status == "ok"
    config = {"outdir": str(tmp_path / "results"), "datasets": {"photos": {"source": "skimage"}},
              "zoos": {"local": zoo.options}, "analysis": {"shard_size": 8}}
    monkeypatch.setattr(FolderSource, "spec_fields", {name: kind for name, kind in FolderSource.spec_fields.items()
                                                      if name != "stat"})
    with pytest.raises(FieldError, match=r"zoo source 'folder' \(checkpoint local/good.safetensors\) wrote the "
                                         r"field 'stat', which it does not declare"):
        Study(config, cache_path=tmp_path / "g.json")
    with pytest.raises(FieldError, match="'stat'"):
        extract_stem(spec)
    monkeypatch.setattr(FolderSource, "spec_fields", {**FolderSource.spec_fields, "stat": str})
    with pytest.raises(FieldError, match="wrote 'stat' as dict, declared str"):
        extract_stem(spec)
    monkeypatch.undo()
    monkeypatch.setattr(FolderSource, "stem_fields", {})
    with pytest.raises(FieldError, match=r"zoo source 'folder' reading local/good.safetensors wrote the field 'key'"):
        extract_stem(spec)
    with pytest.raises(FieldError, match="'key'"):  # the shard's job fails; no skipped row hides the bug
        analyse_shard([spec], {}, subtract_init=True, strict=False, progress=False)


def test_every_provenance_field_a_source_declares_has_its_columns_kind_and_one_place():
    """A source fills a provenance column of checkpoints.parquet by declaring a field of its name and kind; the
    column is copied from the spec's extra or the stem's meta, so no source declares it in both."""
    from firstlayer_zoo.checkpoint_record import PROVENANCE

    columns = {field.name: field.kind for field in PROVENANCE}
    filled = set()
    for name, source in ZOO_SOURCES.items():
        assert not set(source.spec_fields) & set(source.stem_fields) & set(columns), name
        for field, kind in {**source.spec_fields, **source.stem_fields}.items():
            assert kind in (str, int, float, bool, dict, list), (name, field)
            if field in columns:
                assert kind is columns[field], (name, field)
                filled.add(field)
    assert filled == set(columns)  # every provenance column has a source that fills it


def test_any_source_listed_by_a_job_is_planned_from_its_listing_with_no_rule_of_its_own(tmp_path, monkeypatch):
    """The generic mechanism (ZooSource.listed_by_job, rule list_zoo): a source whose checkpoints and even their
    geometry are known only after its job is planned from its listing; its shards depend on the listing; the bases
    the config could not declare are planned from the listing once it is written, in the same process."""
    import runpy
    from types import SimpleNamespace

    from firstlayer_zoo.limits import Limits
    from firstlayer_zoo.plan import Study

    monkeypatch.setitem(ZOO_SOURCES, ListedFolder.source, ListedFolder)
    options = {**folder_zoo_of_one_file(tmp_path).options, "source": ListedFolder.source}
    config = {"outdir": str(tmp_path / "results"), "datasets": {"photos": {"source": "skimage"}},
              "zoos": {"found": options}, "analysis": {"shard_size": 8}}
    study = Study(config, cache_path=tmp_path / "g.json")
    assert list(study.listed_by_job) == ["found"] and not study.listed("found") and study.bases == []
    log = tmp_path / "list_zoo.log"
    runpy.run_path(str(ROOT / "scripts" / "list_zoo.py"), init_globals={"snakemake": SimpleNamespace(
        log=[str(log)], wildcards=SimpleNamespace(zoo="found"),
        params=SimpleNamespace(options=options, outdir=config["outdir"], limits=Limits().to_dict()))})
    assert "1 checkpoints listed" in log.read_text() and Path(study.sources["found"].listed_files).is_dir()
    ((shard, (spec,)),) = study.shards("found").items()
    assert spec.id == "found/good.safetensors" and spec.basis is not None
    assert study.shard_input_files("found", shard) == [study.sources["found"].listing_path]
    # Its basis is planned from the listing by the same Study (Snakemake asks again after list_zoo), as the next
    # start would plan it.
    assert study.bases == [spec.basis] and study.shard_bases("found", shard) == {
        spec.basis.slug: study.basis_files[spec.basis]}
    assert study.preprocessing[spec.preprocessing.key] == spec.preprocessing
    again = Study(config, cache_path=tmp_path / "g.json")
    assert again.bases == [spec.basis] and again.basis_files == study.basis_files
