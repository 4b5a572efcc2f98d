"""Releases: the tag table, version validation, dirty-tree refusal, workflows, and hidden secrets."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from hubforge.errors import HubforgeError
from hubforge.proc import redact
from hubforge.release.plan import Version, check_tree, parse_version, repository, tags_for

from ..support.helpers import rootfs_tar

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("version", "flavor", "tags"),
    [
        ("1.2.3", None, ["1.2.3", "1.2", "1", "latest", "sha-abcdef123456"]),
        ("0.4.0", None, ["0.4.0", "0.4", "0", "latest", "sha-abcdef123456"]),
        ("2.0.0-rc.1", None, ["2.0.0-rc.1", "sha-abcdef123456"]),
        (
            "1.2.3",
            "datascience",
            [
                "1.2.3-datascience",
                "1.2-datascience",
                "1-datascience",
                "latest-datascience",
                "sha-abcdef123456-datascience",
            ],
        ),
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
    [
        ("docker.io", "team/hub"),
        ("", "team/hub"),
        ("127.0.0.1:5000", "127.0.0.1:5000/team/hub"),
        ("ghcr.io/", "ghcr.io/team/hub"),
    ],
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
    assert step["env"] == {
        "DOCKERHUB_USERNAME": "${{ secrets.DOCKERHUB_USERNAME }}",
        "DOCKERHUB_TOKEN": "${{ secrets.DOCKERHUB_TOKEN }}",
        "SIGNING_KEY_PEM": "${{ secrets.HUBFORGE_SIGNING_KEY_PEM }}",
        "HUBFORGE_SIGNING_KEY_PASSWORD": "${{ secrets.HUBFORGE_SIGNING_KEY_PASSWORD }}",
    }
    assert 'export HUBFORGE_SIGNING_KEY="$RUNNER_TEMP/hubforge.key"' in step["run"]  # what `invoke release` signs with
    attach = next(s for s in release["jobs"]["release"]["steps"] if "action-gh-release" in s.get("uses", ""))
    assert attach["with"]["files"].split() == ["dist/*.json", "dist/*.sig"]  # the cache index's signature too


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

    npm = [
        ("@hubforge/notify", "0.1.0", ""),
        ("css-loader", "6.8.1", "jupyterlab_pygments"),
        ("css-loader", "6.8.1", "another-extension"),
    ]
    doc = cyclonedx("hubforge/lab:abc", "lab", "1.2.3", [], [], npm)
    assert sorted(c["purl"] for c in doc["components"]) == [
        "pkg:npm/%40hubforge/notify@0.1.0",
        "pkg:npm/css-loader@6.8.1",
    ]


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
    assert parse_dpkg_status(text) == [
        ("busybox-static", "1:1.35.0-4+deb12u1+b1", "amd64"),
        ("libc6", "2.36-9+deb12u13", "amd64"),
    ]
    assert parse_dpkg_status("") == []


# -- SBOMs read from the image's filesystem, from outside --------------------------------------------------------
STATUS = b"""Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u13

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""


def test_python_and_debian_packages_are_read_from_metadata_files():
    from hubforge.release.sbom import read_inventory

    site = "usr/local/lib/python3.11/site-packages"
    found = read_inventory(
        rootfs_tar(
            {
                "var/lib/dpkg/status": STATUS,
                f"{site}/Jinja2-3.1.4.dist-info/METADATA": b"Metadata-Version: 2.1\nName: Jinja2\nVersion: 3.1.4\n\nName: body\n",
                f"{site}/Jinja2-3.1.4.dist-info/RECORD": b"Name: not-metadata\nVersion: 0\n",
                "usr/lib/python3/dist-packages/six-1.16.0.egg-info": b"Name: six\nVersion: 1.16.0\n",
                "opt/venv/lib/python3.11/site-packages/attrs-23.1.0.egg-info/PKG-INFO": b"Name: attrs\nVersion: 23.1.0\n",
                "usr/share/doc/fake.dist-info/METADATA": b"Name: not-on-a-path\nVersion: 1\n",
            },
            links={
                "root/.local/lib/python3.11/site-packages/Jinja2-3.1.4.dist-info/METADATA": f"{site}/Jinja2-3.1.4.dist-info/METADATA"
            },
        )
    )
    assert found.python == [("Jinja2", "3.1.4"), ("attrs", "23.1.0"), ("six", "1.16.0")]
    assert found.debian == [("libc6", "2.36-9+deb12u13", "amd64")] and found.npm == []


def test_an_image_without_dpkg_lists_its_status_d_paragraphs():
    """The gpu-probe: busybox and files copied from .debs, one status paragraph each in /var/lib/dpkg/status.d/."""
    from hubforge.release.sbom import read_inventory

    found = read_inventory(
        rootfs_tar(
            {
                "var/lib/dpkg/status.d/libc6": STATUS.split(b"\n\n")[0],
                "var/lib/dpkg/status.d/busybox-static": b"Package: busybox-static\nStatus: install ok installed\n"
                b"Architecture: amd64\nVersion: 1:1.35.0-4+deb12u1+b1\n",
            }
        )
    )
    assert found.debian == [("busybox-static", "1:1.35.0-4+deb12u1+b1", "amd64"), ("libc6", "2.36-9+deb12u13", "amd64")]
    assert found.python == [] and found.npm == []


def test_npm_packages_are_read_from_the_lab_extensions_and_their_bundles():
    from hubforge.release.sbom import read_inventory

    share = "usr/local/share/jupyter"
    licenses = json.dumps(
        {"packages": [{"name": "css-loader", "versionInfo": "6.8.1"}, {"name": "no-version"}]}
    ).encode()
    found = read_inventory(
        rootfs_tar(
            {
                f"{share}/lab/static/third-party-licenses.json": json.dumps(
                    {"packages": [{"name": "@lumino/widgets", "versionInfo": "2.3.0"}]}
                ).encode(),
                f"{share}/labextensions/jupyterlab_pygments/package.json": b'{"name": "jupyterlab_pygments", "version": "0.3.0"}',
                f"{share}/labextensions/jupyterlab_pygments/static/third-party-licenses.json": licenses,
                f"{share}/labextensions/@hubforge/notify/package.json": b'{"name": "@hubforge/notify", "version": "0.1.0"}',
                f"{share}/labextensions/broken/package.json": b"{not json",
                f"{share}/labextensions/jupyterlab_pygments/static/node_modules/x/package.json": b'{"name": "x", "version": "1"}',
            }
        )
    )
    assert found.npm == [
        ("@hubforge/notify", "0.1.0", ""),
        ("@lumino/widgets", "2.3.0", "jupyterlab"),
        ("css-loader", "6.8.1", "jupyterlab_pygments"),
        ("jupyterlab_pygments", "0.3.0", ""),
    ]


class LyingImage:
    """An image whose own python3 and dpkg-query report packages that are not on its disk; its filesystem is the
    truth."""

    def run_output(self, image, command, **kwargs):
        return '[["requests", "9.9.9"]]' if command[0] == "python3" else "libc6\t9.9\tamd64\tii \n"

    def read_filesystem(self, image, read):
        return read(
            rootfs_tar(
                {
                    "var/lib/dpkg/status": STATUS,
                    "usr/lib/python3.11/site-packages/requests-2.31.0.dist-info/METADATA": b"Name: requests\nVersion: 2.31.0\n",
                }
            )
        )


def test_the_sbom_is_what_the_filesystem_holds_not_what_the_image_says():
    """It ran the image's own python3 and dpkg-query: the SBOM listed requests 9.9.9, the lie."""
    from hubforge.release.sbom import image_inventory

    found = image_inventory(LyingImage(), "hubforge/hub:k1")
    assert found.python == [("requests", "2.31.0")] and found.debian == [("libc6", "2.36-9+deb12u13", "amd64")]
