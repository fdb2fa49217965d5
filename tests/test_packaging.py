"""Every folder with Python code is listed as a package, so installs (editable or not) include it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"envs": "pushrl.envs", "policies": "pushrl.policies", "agents": "pushrl.agents", "experiments": "pushrl.experiments"}


def test_all_code_folders_are_packages():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    for folder, package in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            name = ".".join([package, *rel.parts]) if rel.parts else package
            assert name in listed, f"{init.parent} holds code but {name} is not in pyproject's packages"


def test_every_config_folder_is_a_package():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    for folder in (ROOT / "configs").rglob("*"):
        if folder.is_dir() and any(folder.glob("*.yaml")) and folder.name != "__pycache__":
            name = ".".join(["pushrl.configs", *folder.relative_to(ROOT / "configs").parts])
            assert name in listed, f"{folder} holds configs but {name} is not in pyproject's packages"
