"""The `platform/` folder must not shadow the standard library's `platform` module (DESIGN.md)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stdlib_platform_works_from_repo_root():
    code = "import platform, uuid; platform.system(); import nerlab.platform.cli; print(platform.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert str(ROOT) not in out.stdout  # the standard library's module, not our folder


def test_platform_folder_has_no_init():
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_cli_help_lists_the_verbs():
    from nerlab.platform.cli import build_parser

    text = build_parser().format_help()
    for verb in ("data", "plm", "evaluate", "train", "study"):
        assert verb in text
