"""Serve the dashboard without internet access: put Solara's front-end assets into its local CDN cache.

A Solara page loads its JavaScript/CSS (the Vuetify app bundle, require.js, Font Awesome, the grid layout
SolaraViz uses) through the server's CDN proxy (``/_solara/cdn/...``), which downloads each file from a public
CDN on first use and caches it under ``solara.server.settings.assets.proxy_cache_dir``. On a machine that
reaches package registries but not CDNs, the page stays blank. These are npm packages, so
:func:`ensure_assets` fetches the exact versions this Solara release asks for with ``npm pack`` (the npm
registry) and unpacks them into that cache; the proxy then serves them locally. Run it once per environment::

    python -m recourse_sim.viz.assets          # or: recourse-sim dashboard does it on start when npm exists

The package list is read from the installed Solara (its page template and Vue widgets), so it follows Solara
upgrades. Already-present packages are skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

_EXACT = re.compile(r"/((?:@[\w.-]+/)?[\w.-]+@\d+\.\d+\.\d+(?:-[\w.]+)?)/")


def _solara_root() -> Path:
    import solara

    return Path(solara.__file__).parent


def cache_dir() -> Path:
    """Where Solara's CDN proxy looks for (and caches) asset files."""
    from solara.server import settings

    return Path(settings.assets.proxy_cache_dir)


def required_packages() -> list[str]:
    """``name@version`` of every npm package the installed Solara's pages load from its CDN proxy."""
    import ipyvue

    root = _solara_root()
    sources = [root / "server" / "templates" / "solara.html.j2", *sorted((root / "widgets" / "vue").glob("*.vue"))]
    found: set[str] = set()
    for source in sources:
        if source.exists():
            found.update(_EXACT.findall(source.read_text(encoding="utf-8", errors="replace")))
    from solara.server import settings

    found.update(_EXACT.findall(settings.assets.fontawesome_path + "/"))
    vue3 = ipyvue.__version__.startswith("3")
    unused_app = "@widgetti/solara-vuetify-app@" if vue3 else "@widgetti/solara-vuetify3-app@"
    return sorted(p for p in found if not p.startswith(unused_app))


def missing_packages(directory: Path | None = None) -> list[str]:
    directory = directory or cache_dir()
    return [p for p in required_packages() if not (directory / p / "package.json").exists()]


def ensure_assets(directory: Path | None = None, npm: str | None = None, quiet: bool = False) -> list[str]:
    """Fetch every missing package with ``npm pack`` into the proxy cache; returns the packages installed.

    Raises ``RuntimeError`` when packages are missing and npm is unavailable or fails.
    """
    directory = directory or cache_dir()
    missing = missing_packages(directory)
    if not missing:
        return []
    npm = npm or shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            f"Solara's front-end assets {missing} are not in {directory} and npm is not installed to fetch them; "
            "install Node.js/npm, or run the dashboard on a machine with internet access"
        )
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([npm, "pack", "--silent", *missing], cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"npm pack {' '.join(missing)} failed: {done.stderr.strip()[-2000:]}")
        tarballs = [Path(tmp) / line.strip() for line in done.stdout.splitlines() if line.strip().endswith(".tgz")]
        if len(tarballs) != len(missing):
            raise RuntimeError(f"npm pack returned {len(tarballs)} tarballs for {len(missing)} packages: {done.stdout}")
        for package, tarball in zip(missing, tarballs):
            staging = Path(tmp) / "unpacked" / package
            with tarfile.open(tarball) as archive:
                archive.extractall(staging, filter="data")
            inner = next(staging.iterdir())  # npm tarballs hold one top folder, usually "package/"
            target = directory / package
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(inner), str(target))
            if not quiet:
                print(f"installed {package} -> {target}")
    return missing


def main() -> int:
    try:
        installed = ensure_assets()
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Solara assets in {cache_dir()}: {len(installed)} installed, {len(required_packages())} required")
    return 0


if __name__ == "__main__":
    sys.exit(main())
