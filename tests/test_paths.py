"""Every output path is spelled once, in firstlayer_zoo/paths.py, for the rules and the Python alike."""

import re
from pathlib import Path

from firstlayer_zoo.paths import TABLES, StudyPaths, checkpoint_file
from firstlayer_zoo.tables import SCHEMAS

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = "bases|datasets|runs|analyses|fetched|tables|plots|logs|zoos"
# Pieces of the outdir's layout, in a string or joined onto a Path (`outdir / "tables"`): any of them outside
# paths.py is a path spelled a second time.
LAYOUT = re.compile(rf"/({FOLDERS})/|/\s*\"({FOLDERS}|resources)\"|listing\.json|manifest\.json|"
                    r"geometry\.json|\.plan/|:06d\}\.safetensors|\{OUT\}|\.parquet\"|\.\./resources/")


def test_no_rule_or_module_but_paths_spells_an_output_path():
    files = [ROOT / "Snakefile", *(ROOT / "workflow" / "rules").glob("*.smk"),
             *(ROOT / "scripts").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    spelled = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
               for path in files if path.name != "paths.py"
               for number, line in enumerate(path.read_text().splitlines(), 1) if LAYOUT.search(line)]
    assert spelled == []


def test_the_tables_written_are_the_tables_declared():
    assert set(SCHEMAS) == set(TABLES)


def test_a_rule_pattern_and_the_python_path_of_its_file_agree():
    paths = StudyPaths("out")
    assert paths.basis().format(dataset="d", prep="p", kernels="3-7", c=1) == paths.basis("d", "p", "3-7", 1) \
        == "out/bases/d/p/k3-7_c1.npz"
    assert paths.run_dir().format(zoo="z", run="r") == paths.run_dir("z", "r")
    assert checkpoint_file(paths.run_dir("z", "r"), "step", 25) == "out/zoos/z/runs/r/step000025.safetensors"
    assert checkpoint_file(paths.run_dir("z", "r"), "epoch", 3) == "out/zoos/z/runs/r/epoch000003.safetensors"
    assert paths.manifest().format(dataset="d") == paths.manifest("d") == f"{paths.dataset_root('d')}/manifest.json"
    assert paths.log("patch_statistics", "{dataset}", "k{k}").format(dataset="d", k=3) == \
        "out/logs/patch_statistics/d/k3.log"
