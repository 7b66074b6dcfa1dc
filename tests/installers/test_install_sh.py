"""installers/install.sh: shellcheck-clean, and it installs from this checkout into a fresh HOME and venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from sidecar.testing.requirements import require_tool

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "installers" / "install.sh"


def test_install_sh_is_shellcheck_clean() -> None:
    require_tool("shellcheck", "./scripts/test installs Debian's shellcheck")
    res = subprocess.run(["shellcheck", "--shell=sh", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout


def _setuptools_major() -> int:
    try:
        import setuptools
    except ImportError:
        return 0
    return int(setuptools.__version__.split(".")[0])


def _deps_only(tmp_path: Path) -> Path:
    """This interpreter's installed packages without claude-sidecar itself: the fresh venv sees
    its dependencies through a .pth (no multi-GB download of torch) but must install the project."""
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if name.startswith(("claude_sidecar", "__editable__", "_claude_sidecar")) or name.endswith(".pth"):
            continue
        (deps / entry.name).symlink_to(entry)
    return deps


def test_install_sh_installs_into_a_fresh_home_and_venv(tmp_path: Path) -> None:
    home = tmp_path / "home"
    src = tmp_path / "src"  # a clean copy of the checkout (pip builds in place)
    for part in ("sidecar", "tui", "tray", "pyproject.toml", "README.md"):
        (shutil.copytree if (ROOT / part).is_dir() else shutil.copy)(
            ROOT / part, src / part, **({"ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / part).is_dir() else {})
        )
    venv = home / ".local" / "share" / "claude-sidecar" / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "deps.pth").write_text(str(_deps_only(tmp_path)) + "\n")
    env = {
        "HOME": str(home),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "CLAUDE_SIDECAR_HOME": str(home / "sidecar"),
        # setuptools comes from the linked packages when it is new enough for pyproject.toml
        **({"PIP_NO_BUILD_ISOLATION": "1"} if _setuptools_major() >= 77 else {}),
        "PIP_NO_DEPS": "1",  # they are linked in already; resolving them only costs time
        **{k: v for k, v in os.environ.items() if k.startswith("PIP_")},
    }
    res = subprocess.run(["sh", str(SCRIPT), "--source", str(src), "--method", "venv", "--no-enable"],
                         capture_output=True, text=True, env=env, timeout=240, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    exe = venv / "bin" / "claude-sidecar"
    assert "installed: claude-sidecar, version" in res.stdout and str(exe) in res.stdout
    # The installed copy, not this checkout, is what runs.
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import sidecar; print(sidecar.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert where.startswith(str(site))
    unit = home / ".config" / "systemd" / "user" / "claude-sidecar.service"
    assert f"ExecStart={exe} start --foreground" in unit.read_text()
    assert (venv / "lib").exists() and "not enabled (--no-enable)" in res.stdout
