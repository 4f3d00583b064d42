"""The documentation site builds with ``mkdocs build --strict``: a broken link, a missing
anchor, a page left out of the navigation or any other warning fails the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_build_without_warnings(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-5000:]
    reference = (tmp_path / "site" / "configuration" / "index.html").read_text()
    assert "store_url" in reference and "previous_store_urls" in reference  # generated from the provider


def test_the_provider_and_the_package_point_at_the_documentation() -> None:
    from importlib.metadata import metadata

    urls = metadata("xcomstash").get_all("Project-URL") or []
    assert any(u.startswith("Documentation, https://") for u in urls), urls
