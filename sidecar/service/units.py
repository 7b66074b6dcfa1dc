"""Render the service definitions for this platform from the templates, with absolute paths.

Pure functions: what goes where, and which binary an existing definition names. Writing
and registering them is `sidecar.service.manager`'s job.
"""

from __future__ import annotations

import getpass
import os
import plistlib
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Literal
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from sidecar.errors import SidecarError
from sidecar.paths import Paths

Platform = Literal["linux", "macos", "windows"]
PLATFORMS: tuple[Platform, ...] = ("linux", "macos", "windows")
UNIT = "claude-sidecar.service"
TRAY_UNIT = "claude-sidecar-tray.service"
LABEL = "dev.claude-sidecar.daemon"
TASK = "claude-sidecar"
TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"


@dataclass(frozen=True)
class ServiceFile:
    """One rendered definition: what it is, where it goes, and its bytes."""

    role: str  # "daemon" | "tray"
    path: Path
    content: bytes


def current_platform() -> Platform:
    """This machine's service family."""
    if sys.platform == "darwin":
        return "macos"
    return "windows" if sys.platform == "win32" else "linux"


def executable(platform: Platform) -> Path:
    """The absolute path of the installed `claude-sidecar` (on Windows the windowless
    `claude-sidecarw.exe`), found beside this interpreter first, then on PATH."""
    name = "claude-sidecarw.exe" if platform == "windows" else "claude-sidecar"
    # Not resolved: a venv's python is a symlink to the base interpreter, its scripts are not.
    beside = Path(sys.executable).parent / name
    if beside.is_file() or platform != current_platform():  # rendering for another machine: its layout
        return beside.absolute()
    found = shutil.which(name)
    if found:
        return Path(found).absolute()
    raise SidecarError(
        f"cannot find the installed {name} beside {sys.executable} or on PATH; "
        "install claude-sidecar first (installers/install.sh, `uv tool install`, or `pipx install`)"
    )


def _template(name: str) -> str:
    return (resources.files("sidecar.service") / "templates" / name).read_text(encoding="utf-8")


def _search_path(exe: Path, environ: dict[str, str]) -> str:
    """PATH for the service: the executable's directory first, then the caller's PATH (so
    ambient credential helpers such as gcloud or aws are found), without duplicates."""
    parts = [str(exe.parent), *environ.get("PATH", "").split(os.pathsep)]
    out: list[str] = []
    for p in parts:
        if p and p not in out:
            out.append(p)
    return os.pathsep.join(out)


def _systemd_value(value: str) -> str:
    """A value for ExecStart=/Environment=: `%` escaped, quoted when it holds spaces or quotes."""
    value = value.replace("%", "%%")
    if re.search(r'[\s"\'\\]', value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def systemd_dir(environ: dict[str, str], home: Path) -> Path:
    """Where per-user units go: $XDG_CONFIG_HOME/systemd/user."""
    base = environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(base) / "systemd" / "user"


def render(
    platform: Platform, exe: Path, paths: Paths, environ: dict[str, str], home: Path, tray: bool = True
) -> list[ServiceFile]:
    """The service definitions for `platform`, naming `exe` (absolute)."""
    search = _search_path(exe, environ)
    if platform == "linux":
        d = systemd_dir(environ, home)
        env_line = _systemd_value(f"PATH={search}")
        subst = {"exec": _systemd_value(str(exe)), "path": search}
        out = [ServiceFile("daemon", d / UNIT, _unit(_template(UNIT), subst, env_line))]
        if tray:
            out.append(ServiceFile("tray", d / TRAY_UNIT, _unit(_template(TRAY_UNIT), subst, env_line)))
        return out
    if platform == "macos":
        text = Template(_template("launchd.plist")).substitute(
            label=escape(LABEL), exec=escape(str(exe)), path=escape(search), log_dir=escape(str(paths.log_dir))
        )
        return [ServiceFile("daemon", home / "Library" / "LaunchAgents" / f"{LABEL}.plist", text.encode("utf-8"))]
    user = environ.get("USERNAME") or getpass.getuser()
    domain = environ.get("USERDOMAIN")
    text = Template(_template("windows-task.xml")).substitute(
        task=escape(TASK), exec=escape(str(exe)), user=escape(f"{domain}\\{user}" if domain else user)
    )
    # Task Scheduler imports UTF-16 (with its byte-order mark), as the XML declaration says.
    return [ServiceFile("daemon", paths.config_dir / "claude-sidecar-task.xml", text.encode("utf-16"))]


def _unit(template: str, subst: dict[str, str], env_line: str) -> bytes:
    text = Template(template).substitute(subst)
    # The PATH line needs systemd's quoting as a whole assignment.
    text = text.replace(f"Environment=PATH={subst['path']}", f"Environment={env_line}")
    return text.encode("utf-8")


def registered_exec(platform: Platform, content: bytes) -> str | None:
    """The executable an existing definition runs (None when it names none or is unreadable)."""
    try:
        if platform == "linux":
            m = re.search(r"^ExecStart=(.+)$", content.decode("utf-8"), re.M)
            return shlex.split(m.group(1).replace("%%", "%"))[0] if m else None
        if platform == "macos":
            args = plistlib.loads(content).get("ProgramArguments") or []
            return str(args[0]) if args else None
        root = ElementTree.fromstring(content)  # expat reads the UTF-16 byte-order mark
        return root.findtext(f".//{{{TASK_NS}}}Command")
    except (ValueError, IndexError, ElementTree.ParseError, plistlib.InvalidFileException, UnicodeDecodeError):
        return None
