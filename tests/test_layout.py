"""The `platform/` folder must not shadow the standard library's `platform` module (README.md, "Layout")."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_stdlib_platform_works_from_repo_root():
    code = "import platform, uuid; platform.system(); import nerlab.platform.cli; print(platform.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert str(ROOT) not in out.stdout  # the standard library's module, not our folder


def test_platform_folder_has_no_init():
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_every_verb_has_help_and_a_function(cli_verbs, capsys):
    """Each verb prints its own usage for --help (exit 0) and is wired to the function that runs it."""
    from nerlab.platform.cli import main

    verbs = cli_verbs
    assert {v[0] for v, _ in verbs} >= {"data", "plm", "evaluate", "train", "study", "leaderboard", "report",
                                         "select", "predict", "ui"}
    for verb, parser in verbs:
        assert callable(parser.get_default("fn")), verb
        with pytest.raises(SystemExit) as exit_:
            main([*verb, "--help"])
        assert exit_.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: nerlab {' '.join(verb)} "), verb


def test_imports_point_one_way():
    """losses <- models <- platform; dashboards uses models only; nothing imports the CLI (no cycle)."""
    import ast

    forbidden = {"losses": ("nerlab.models", "nerlab.platform", "nerlab.dashboards"),
                 "models": ("nerlab.platform", "nerlab.dashboards", "ray", "mlflow", "optuna"),
                 "dashboards": ("nerlab.platform", "ray"),
                 "platform": ("nerlab.platform.cli",)}
    for folder, bad in forbidden.items():
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                for name in names:
                    assert not any(name == b or name.startswith(b + ".") for b in bad), f"{path}: imports {name}"


def test_every_data_file_of_the_package_is_package_data():
    """An installed nerlab (a wheel, not this checkout) holds every non-Python file its code reads."""
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    for package, folder in setup["package-dir"].items():
        data = {p.name for p in (ROOT / folder).iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")}
        assert data <= set(setup.get("package-data", {}).get(package, [])), package
