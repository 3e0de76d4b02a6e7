"""Every third-party package the code imports is declared in pyproject.toml.

A package installed by hand in a developer's environment would let the suite pass
there and fail on a fresh machine; this catches it everywhere.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Top-level packages of this project.
OWN = {"app", "baton", "config", "examples", "bench", "tests"}


#: The server's project and the client's, which `make` installs with it.
PROJECTS = ("pyproject.toml", "clients/python/pyproject.toml")


def _declared() -> set[str]:
    requirements: list[str] = []
    for path in PROJECTS:
        project = tomllib.loads((ROOT / path).read_text())["project"]
        requirements.extend(project["dependencies"])
        for extra in project.get("optional-dependencies", {}).values():
            requirements.extend(extra)
    names = set()
    for requirement in requirements:
        name = requirement.split(";")[0]
        for stop in "<>=![ ":
            name = name.split(stop)[0]
        names.add(name.strip().lower().replace("_", "-"))
    # Extras pull in packages of their own (uvicorn[standard]); pydantic pins its core.
    names.update({"uvloop", "httptools", "pydantic-core"})
    return names


def _imports(folder: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    # Helper modules beside the tests (tests/e2e/harness.py and the like).
    local = {p.stem for p in (ROOT / folder).rglob("*.py")}
    return found - OWN - local - set(sys.stdlib_module_names) - {"__future__"}


def test_every_imported_package_is_declared() -> None:
    distributions = packages_distributions()
    declared = _declared()
    missing = []
    for folder in ("app", "clients/python/src", "config", "examples", "tests"):
        for module in sorted(_imports(folder)):
            owners = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
            if not owners & declared:
                missing.append(f"{folder}: {module} ({', '.join(sorted(owners))})")
    assert not missing, "imported but not declared in a pyproject.toml: " + "; ".join(missing)
