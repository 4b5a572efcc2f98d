"""Releases: the tag table, version validation, dirty-tree refusal, workflows, and hidden secrets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from hubforge.errors import HubforgeError
from hubforge.proc import redact
from hubforge.release.plan import Version, check_tree, parse_version, repository, tags_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("version", "flavor", "tags"),
    [
        ("1.2.3", None, ["1.2.3", "1.2", "1", "latest", "sha-abcdef123456"]),
        ("0.4.0", None, ["0.4.0", "0.4", "0", "latest", "sha-abcdef123456"]),
        ("2.0.0-rc.1", None, ["2.0.0-rc.1", "sha-abcdef123456"]),
        ("1.2.3", "datascience", ["1.2.3-datascience", "1.2-datascience", "1-datascience", "latest-datascience",
                                  "sha-abcdef123456-datascience"]),
        ("2.0.0-beta", "datascience", ["2.0.0-beta-datascience", "sha-abcdef123456-datascience"]),
    ],
)
def test_tag_table(version, flavor, tags):
    assert tags_for(parse_version(version), "abcdef123456", flavor) == tags


@pytest.mark.parametrize("text", ["1.2", "1.2.3.4", "01.2.3", "1.2.3-", "latest", "1.2.3+build", ""])
def test_bad_versions_are_one_line(text):
    with pytest.raises(HubforgeError, match="is not a semantic version"):
        parse_version(text)


def test_versions_parse():
    assert parse_version("v1.2.3-rc.1") == Version(1, 2, 3, "rc.1")
    assert not parse_version("1.2.3-rc.1").stable and parse_version("1.2.3").stable


@pytest.mark.parametrize(
    ("registry", "expected"),
    [("docker.io", "team/hub"), ("", "team/hub"), ("127.0.0.1:5000", "127.0.0.1:5000/team/hub"), ("ghcr.io/", "ghcr.io/team/hub")],
)
def test_repositories(registry, expected):
    assert repository(registry, "team", "hub") == expected
    with pytest.raises(HubforgeError, match="--namespace"):
        repository(registry, "Team Name", "hub")


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path) -> Path:
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.org")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / "f.txt").write_text("1")
    git(tmp_path, "add", "f.txt")
    git(tmp_path, "commit", "-qm", "one")
    return tmp_path


def test_dirty_tree_and_untagged_head_are_refused(repo):
    version = parse_version("1.0.0")
    with pytest.raises(HubforgeError, match="HEAD is not tagged v1.0.0"):
        check_tree(repo, version, allow_dirty=False)
    git(repo, "tag", "v1.0.0")
    assert len(check_tree(repo, version, allow_dirty=False)) == 40
    (repo / "f.txt").write_text("2")
    with pytest.raises(HubforgeError, match="uncommitted changes"):
        check_tree(repo, version, allow_dirty=False)
    assert len(check_tree(repo, version, allow_dirty=True)) == 40


def test_secrets_are_redacted_from_echoed_commands():
    shown = redact(["docker", "login", "-u", "ci", "-p", "s3cr3t-t0ken"], secrets=["s3cr3t-t0ken"])
    assert "s3cr3t-t0ken" not in shown and "***" in shown


def test_workflows_are_valid_and_do_what_they_say():
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    release = yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text())
    ci_steps = [step.get("run", "") for step in ci["jobs"]["test"]["steps"]]
    assert any("invoke test" in run for run in ci_steps)
    on = release[True] if True in release else release["on"]  # YAML 1.1 reads a bare `on` as true
    assert on["push"]["tags"] == ["v*.*.*"]
    step = next(s for s in release["jobs"]["release"]["steps"] if "invoke release" in s.get("run", ""))
    assert "--push" in step["run"]
    assert step["env"] == {"DOCKERHUB_USERNAME": "${{ secrets.DOCKERHUB_USERNAME }}",
                           "DOCKERHUB_TOKEN": "${{ secrets.DOCKERHUB_TOKEN }}"}


def test_sbom_document_lists_each_package_with_its_purl():
    """`invoke sbom` and `invoke release` build this document; it failed with ModuleNotFoundError on fresh installs."""
    from hubforge.release.sbom import cyclonedx

    doc = cyclonedx("hubforge/hub:abc", "hub", "1.2.3", [("Jinja2", "3.1.4")], [("libc6", "2.36-9", "amd64")])
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.5"
    assert doc["metadata"]["component"]["name"] == "hub" and doc["metadata"]["component"]["version"] == "1.2.3"
    purls = sorted(c["purl"] for c in doc["components"])
    assert purls == ["pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12", "pkg:pypi/jinja2@3.1.4"]


def test_npm_packages_get_npm_purls_once_each_however_many_bundle_them():
    from hubforge.release.sbom import cyclonedx

    npm = [("@hubforge/notify", "0.1.0", ""), ("css-loader", "6.8.1", "jupyterlab_pygments"),
           ("css-loader", "6.8.1", "another-extension")]
    doc = cyclonedx("hubforge/lab:abc", "lab", "1.2.3", [], [], npm)
    assert sorted(c["purl"] for c in doc["components"]) == ["pkg:npm/%40hubforge/notify@0.1.0", "pkg:npm/css-loader@6.8.1"]


def test_dpkg_status_paragraphs_give_the_installed_packages():
    """What an image without dpkg (gpu-probe) keeps in /var/lib/dpkg/status.d/: `dpkg-query -s` of each package,
    catenated (no blank line between files), or separated by blank lines."""
    from hubforge.release.sbom import parse_dpkg_status

    text = """Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u13
Description: GNU C Library: Shared libraries
 Contains the standard libraries: Version: not a field
Package: busybox-static
Status: install ok installed
Architecture: amd64
Version: 1:1.35.0-4+deb12u1+b1

Package: removed
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""
    assert parse_dpkg_status(text) == [("busybox-static", "1:1.35.0-4+deb12u1+b1", "amd64"), ("libc6", "2.36-9+deb12u13", "amd64")]
    assert parse_dpkg_status("") == []
