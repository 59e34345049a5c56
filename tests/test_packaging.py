"""What `pip install edge-moss` puts on the import path: every package of the tree, and no
generic top-level name (a user's own export.py or quant.py must not shadow the build tools)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def test_every_package_folder_is_installed_under_an_edge_name():
    tool = _setuptools()
    folders = {v: k for k, v in tool["package-dir"].items()}  # folder -> installed name
    found = set()
    for init in REPO.glob("*/**/__init__.py"):
        rel = init.parent.relative_to(REPO).parts
        if rel[0] not in ("edge_runtime", *folders):
            continue
        found.add(".".join((folders.get(rel[0], rel[0]), *rel[1:])))
    assert found == set(tool["packages"])
    assert all(name.split(".")[0].startswith("edge_") for name in tool["packages"])


def test_a_users_own_export_and_quant_modules_do_not_shadow_the_build_tools(tmp_path):
    # The user's folder is the current directory, first on sys.path under `python -m`.
    (tmp_path / "export.py").write_text("raise SystemExit('the user export.py was imported')\n")
    (tmp_path / "quant.py").write_text("raise SystemExit('the user quant.py was imported')\n")
    out = tmp_path / "ckpt"
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "fixture", str(out),
                           "--size", "tiny"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "config.json").is_file()
