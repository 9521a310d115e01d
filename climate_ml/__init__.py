"""climate-ml: spatiotemporal climate forecasting (see README.md and DESIGN.md)."""

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"


def git_version(root: str | Path) -> str:
    """``__version__+<short commit>`` of the git work tree at ``root``, with ``.dirty`` when a
    tracked file differs from that commit (the code that ran is then not the commit's);
    ``__version__`` alone outside a git work tree."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()

    try:
        sha = git("rev-parse", "--short", "HEAD")
        dirty = bool(sha) and bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+{sha}{'.dirty' if dirty else ''}" if sha else __version__


@functools.cache
def code_version() -> str:
    """The version of the code this process runs, as it was when first asked (the modules are
    loaded by then): what every record and archived forecast carries as ``code_version``."""
    return git_version(Path(__file__).resolve().parents[1])
