"""`paths.replace_file`: a file is written whole or not at all, whoever reads or writes it
at the same time (other processes: a CLI command, the daemon, an editor's watcher)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.paths import replace_file

# Writes its own content (a marker repeated to 64 KB) N times; the reader checks every
# read is one writer's whole content. Three such processes run at once.
WRITER = """
import sys
from pathlib import Path
from sidecar.paths import replace_file
path, marker, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for _ in range(n):
    replace_file(path, marker * (65536 // len(marker)))
"""
READER = """
import sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
wholes = {m * (65536 // len(m)) for m in sys.argv[3:]}
end, reads = time.monotonic() + seconds, 0
while time.monotonic() < end:
    with open(path) as f:
        data = f.read()
    reads += 1
    if data not in wholes:
        print(f"torn read of {len(data)} chars: {data[:20]!r}...{data[-20:]!r}")
        sys.exit(1)
print(reads)
"""


def test_concurrent_writers_and_a_reader_never_see_a_torn_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    markers = ["alpha-", "bravo!", "charlie"]
    replace_file(path, markers[0] * (65536 // len(markers[0])))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path), "4", *markers], stdout=subprocess.PIPE, text=True, env=env)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), m, "300"], env=env) for m in markers]
    assert [w.wait(120) for w in writers] == [0, 0, 0]
    out, _ = reader.communicate(timeout=120)
    assert reader.returncode == 0, out
    assert int(out) > 10  # it did read while they wrote
    assert path.read_text() in {m * (65536 // len(m)) for m in markers}
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]  # no temporary file left


def test_a_symlink_is_followed_and_kept(tmp_path: Path) -> None:
    """A config kept in a dotfiles repository and linked into place stays linked."""
    target = tmp_path / "dotfiles" / "config.toml"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "config.toml"
    link.symlink_to(target)
    replace_file(link, "new", mode=None)
    assert link.is_symlink() and target.read_text() == "new"


def test_modes(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    replace_file(fresh, b"x")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    mine = tmp_path / "mine"
    mine.write_text("x")
    mine.chmod(0o640)
    replace_file(mine, "y", mode=None)  # an existing file keeps its mode
    assert stat.S_IMODE(mine.stat().st_mode) == 0o640
    replace_file(mine, "z", mode=0o644)
    assert stat.S_IMODE(mine.stat().st_mode) == 0o644


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    replace_file(path, '{"ok": 1}')
    with pytest.raises(UnicodeEncodeError):
        replace_file(path, "\udcff")  # cannot be written as UTF-8
    assert path.read_text() == '{"ok": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
