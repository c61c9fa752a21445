"""The four pinned npm packages the emoji dataset is built from: find, check, or install them.

Pinned exactly, because the concept list, the split and every image depend on the packages' content:
the same pins give byte-identical output. Without `--packages`, `npm install --ignore-scripts` fetches
them once into a per-pin cache folder (`$XDG_CACHE_HOME/clipscale/npm/<pin-hash>`, else
`~/.cache/...`), installed into a temporary sibling and renamed into place, so a killed install never
leaves a cache folder that looks complete. npm itself is run as a subprocess: nothing in Python reads
npm's registry, and `--ignore-scripts` keeps package install scripts from running.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from clipscale.errors import ClipscaleError

# package name -> exact version
PINS: dict[str, str] = {
    "emoji-datasource-google": "16.0.0",
    "emoji-datasource-twitter": "16.0.0",
    "openmoji": "17.0.0",
    "emojibase-data": "17.0.0",
}
NAMES_PACKAGE = "emojibase-data"
COMPLETE_MARKER = ".clipscale-complete"
NPM_TIMEOUT_S = 900


@dataclass(frozen=True)
class Packages:
    """A node_modules folder holding (at least) the packages a build needs, versions checked."""

    root: Path
    versions: dict[str, str]  # package -> version read from its package.json

    def dir(self, package: str) -> Path:
        return self.root / package


def pin_specs() -> list[str]:
    return [f"{name}@{version}" for name, version in PINS.items()]


def _install_hint() -> str:
    return (f"npm install --ignore-scripts {' '.join(pin_specs())}, then pass --packages "
            f"<that folder>/node_modules")


def read_version(root: Path, package: str) -> str:
    """The `version` of root/package/package.json; a one-line error naming what is wrong or missing."""
    expected = f"{package}@{PINS[package]}"
    pkg_dir = root / package
    if not pkg_dir.is_dir():
        raise ClipscaleError(f"{pkg_dir}: package not found; expected {expected} ({_install_hint()})")
    manifest = pkg_dir / "package.json"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClipscaleError(f"{manifest}: not found; expected {expected}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClipscaleError(f"{manifest}: not readable JSON ({exc}); expected {expected}") from None
    version = data.get("version") if isinstance(data, dict) else None
    if version != PINS[package]:
        raise ClipscaleError(f"{manifest}: {package} version {version!r}, expected {PINS[package]} "
                             f"(npm install --ignore-scripts {expected})")
    return version


def check_packages(root: str | os.PathLike, needed: list[str]) -> Packages:
    """Check that `root` (a node_modules folder) holds each needed package at its pinned version."""
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        raise ClipscaleError(f"{path}: --packages folder not found (expected a node_modules folder with "
                             f"{', '.join(pin_specs())})")
    return Packages(path, {name: read_version(path, name) for name in needed})


def pin_hash() -> str:
    text = "\n".join(pin_specs())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """Where installed pins are kept: one folder per set of pins, so new pins never reuse old files."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "clipscale" / "npm" / pin_hash()


def _complete(folder: Path) -> bool:
    if not (folder / COMPLETE_MARKER).is_file():
        return False
    try:
        for name in PINS:
            read_version(folder / "node_modules", name)
    except ClipscaleError:
        return False
    return True


def _run_npm(npm: str, prefix: Path) -> None:
    cmd = [npm, "install", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix", str(prefix),
           *pin_specs()]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClipscaleError(f"npm install of the emoji packages failed ({exc}); "
                             f"or {_install_hint()}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        last = lines[-1] if lines else "no output"
        raise ClipscaleError(f"npm install of the emoji packages failed (exit {proc.returncode}: {last}); "
                             f"or {_install_hint()}")


def install_packages() -> Packages:
    """The pinned packages from the cache, installed there with npm first if needed."""
    final = cache_dir()
    if not _complete(final):
        npm = shutil.which("npm")
        if npm is None:
            raise ClipscaleError(f"npm not found on PATH: install npm (Debian: apt-get install npm), or "
                                 f"{_install_hint()}")
        _install_into(npm, final)
    return check_packages(final / "node_modules", list(PINS))


def _install_into(npm: str, final: Path) -> None:
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir(parents=True)
        # an own package.json keeps npm from walking up to some enclosing project
        (tmp / "package.json").write_text('{"name": "clipscale-emoji-packages", "private": true}\n')
        _run_npm(npm, tmp)
        for name in PINS:
            read_version(tmp / "node_modules", name)
        (tmp / COMPLETE_MARKER).write_text("\n".join(pin_specs()) + "\n")
        if final.exists():  # an incomplete leftover, or another process finished first
            if _complete(final):
                shutil.rmtree(tmp, ignore_errors=True)
                return
            shutil.rmtree(final)
        tmp.rename(final)
    except OSError as exc:
        raise ClipscaleError(f"{final}: cannot install the emoji packages there ({exc})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def find_packages(packages: str | os.PathLike | None, needed: list[str]) -> Packages:
    """`--packages NODE_MODULES` when given, else the npm-installed cache."""
    if packages is not None:
        return check_packages(packages, needed)
    return install_packages()
