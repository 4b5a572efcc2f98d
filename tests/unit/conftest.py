"""Unit-test fixtures: a throwaway copy of the image sources, and an image store that holds nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hubforge.imagebuild.builder import Builder, Settings

from ..support.fakedaemon import db  # noqa: F401 -- a fixture: an in-memory hub database

ROOT = Path(__file__).resolve().parents[2]


class EmptyImageStore:
    """Stands in for the Docker daemon where a test is about keys, not images: no image exists."""

    def image(self, ref: str) -> None:
        return None

    def image_id(self, ref: str) -> None:
        return None

    def registry_problem(self, reference: str, timeout: float = 8.0) -> str:
        return f"did not answer within {timeout:g} s"


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    """A copy of images/ and hub_ext/ that a test may edit."""
    for folder in ("images", "hub_ext"):
        shutil.copytree(
            ROOT / folder,
            tmp_path / folder,
            ignore=shutil.ignore_patterns("__pycache__", "node_modules", "lib", "labextension", ".yarn"),
        )
    return tmp_path


@pytest.fixture
def make_builder(tmp_path: Path):
    def make(root: Path, base_mode: str = "bootstrap") -> Builder:
        settings = Settings(root=root, cache_dir=tmp_path / "cache", base_mode=base_mode)
        return Builder(settings, EmptyImageStore(), say=lambda message: None)  # type: ignore[arg-type]

    return make
