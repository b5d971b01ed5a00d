"""Conda environments, checked statically (conda channels are out of reach in CI).

Every rule names an env that exists; every env pins exactly what requirements.txt
pins; and each env holds every third-party package that its rules' scripts
import, following imports through the firstlayer_zoo package. Imports inside
functions count too: a lazy import only defers the need to the first call.
"""

import re
import sys
from pathlib import Path

import pytest
import yaml

from import_graph import third_party_imports

ROOT = Path(__file__).resolve().parents[1]
RULES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
IMPORT_TO_DISTRIBUTION = {
    "PIL": "pillow",
    "skimage": "scikit-image",
    "yaml": "pyyaml",
    "google": "protobuf",
    "re2": "google-re2",
}


def rule_blocks():
    """(rule name, conda env path, script path) for every rule with a script."""
    blocks = []
    for smk in RULES:
        text = smk.read_text()
        for match in re.finditer(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)*)", text, re.M):
            body = match.group(2)
            conda = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", body)
            script = re.search(r"script:\s*\n\s*\"([^\"]+)\"", body)
            if script:
                blocks.append((match.group(1), conda and (smk.parent / conda.group(1)).resolve(),
                               (smk.parent / script.group(1)).resolve()))
    return blocks


def pinned(lines):
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def env_pins(path):
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return pinned(pip)


def test_every_rule_names_an_existing_env():
    blocks = rule_blocks()
    assert {"patch_statistics", "analyse_checkpoints", "build_tables", "plot_study", "plot_bases"} <= {
        rule for rule, _, _ in blocks}  # the parser finds the rules
    for rule, env, _ in blocks:
        assert env is not None, f"rule {rule} declares no conda env"
        assert env.is_file(), f"rule {rule} names {env}, which does not exist"


@pytest.mark.parametrize("env", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_pins_match_requirements(env):
    requirements = pinned((ROOT / "requirements.txt").read_text().splitlines())
    for name, version in env_pins(env).items():
        assert requirements.get(name) == version, f"{env.name} pins {name}=={version}, requirements.txt {requirements.get(name)}"


def test_each_env_holds_what_its_scripts_import():
    stdlib = set(sys.stdlib_module_names)
    for rule, env, script in rule_blocks():
        wanted = {IMPORT_TO_DISTRIBUTION.get(m, m).lower().replace("_", "-")
                  for m in third_party_imports(script) if m not in stdlib and m != "__future__"}
        missing = wanted - set(env_pins(env))
        assert not missing, f"rule {rule}: {env.name} lacks {sorted(missing)} imported by {script.name}"


def test_imports_inside_functions_and_subpackages_are_followed(tmp_path):
    package = tmp_path / "pkg"
    (package / "sources").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sources" / "__init__.py").write_text("from . import lazy\n")
    (package / "sources" / "lazy.py").write_text(
        "import json\n\nfrom ..base import f\n\ndef read():\n    from safetensors import safe_open\n")
    (package / "base.py").write_text("def f():\n    import numpy\n")
    script = tmp_path / "rule.py"
    script.write_text("from pkg.sources import lazy\n")
    assert third_party_imports(script, package) == {"json", "safetensors", "numpy"}
