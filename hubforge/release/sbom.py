"""CycloneDX SBOMs of built images: the Python, Debian and npm packages really installed in each one."""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from email.parser import HeaderParser
from typing import IO, Any

from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from packageurl import PackageURL

from ..docker_io import Docker

# What the SBOM reads, by path in the image's filesystem (as `docker export` gives it: no leading /).
DPKG_STATUS = "var/lib/dpkg/status"
# An image without dpkg (gpu-probe: busybox and files copied from .debs) records the packages it copied as one dpkg
# status paragraph each, in the folder that distroless images use and that SBOM scanners read (syft, trivy).
STATUS_D = re.compile(r"var/lib/dpkg/status\.d/[^/]+")
# Python distributions: what importlib.metadata finds on an interpreter's path, read from every site- or
# dist-packages folder (a venv's too). Metadata files, not a run of the image's own python3, which could lie.
PYTHON_METADATA = re.compile(r"(?:.+/)?(?:site|dist)-packages/[^/]+\.(?:dist-info/METADATA|egg-info/PKG-INFO|egg-info)")
# npm packages shipped in a lab: every prebuilt JupyterLab extension in a Jupyter data folder (its package.json) and
# what its bundle holds (static/third-party-licenses.json, written by the extension builder), and the bundle of
# JupyterLab itself. Shared packages an extension takes from JupyterLab at run time are in JupyterLab's bundle.
JUPYTER = r"(?:.+/)?share/jupyter/"
LAB_BUNDLE = re.compile(JUPYTER + r"lab/static/third-party-licenses\.json")
EXTENSION = re.compile(JUPYTER + r"labextensions/(?:@[^/]+/)?[^/@]+/package\.json")
EXTENSION_BUNDLE = re.compile(JUPYTER + r"labextensions/(?:@[^/]+/)?[^/@]+/static/third-party-licenses\.json")
MAX_READ = 64 << 20  # the largest metadata file read; anything bigger is not one


@dataclass(frozen=True)
class Inventory:
    """The packages found in an image's filesystem, each list sorted and without repeats."""

    python: list[tuple[str, str]]  # (distribution, version)
    debian: list[tuple[str, str, str]]  # (package, version, architecture)
    npm: list[tuple[str, str, str]]  # (package, version, bundled by: "" for an extension itself)


def image_inventory(docker: Docker, image: str) -> Inventory:
    """What `image` holds, read from its filesystem by the host, never by running anything inside it."""
    return docker.read_filesystem(image, read_inventory)


def read_inventory(stream: IO[bytes]) -> Inventory:
    """The packages in a root filesystem tar (`docker export`), read in one pass: only metadata files are kept."""
    wanted: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream, mode="r|*") as archive:
        for member in archive:
            name = _path(member.name)
            if not _wanted(name):
                continue
            if member.isfile() and member.size <= MAX_READ:
                wanted[name] = archive.extractfile(member).read()
            elif member.islnk() and _path(member.linkname) in wanted:  # a hard link to a file read before
                wanted[name] = wanted[_path(member.linkname)]
    return Inventory(python_packages(wanted), debian_packages(wanted), npm_packages(wanted))


def _path(name: str) -> str:
    return name.removeprefix("./").lstrip("/")


def _wanted(name: str) -> bool:
    return name == DPKG_STATUS or any(
        p.fullmatch(name) for p in (STATUS_D, PYTHON_METADATA, LAB_BUNDLE, EXTENSION, EXTENSION_BUNDLE)
    )


def python_packages(files: Mapping[str, bytes]) -> list[tuple[str, str]]:
    """(Name, Version) from each distribution's metadata headers, as importlib.metadata reports them."""
    found = set()
    for name, data in files.items():
        if PYTHON_METADATA.fullmatch(name):
            headers = HeaderParser().parsestr(data.decode("utf-8", errors="replace"), headersonly=True)
            if headers.get("Name") and headers.get("Version"):
                found.add((str(headers["Name"]).strip(), str(headers["Version"]).strip()))
    return sorted(found)


def debian_packages(files: Mapping[str, bytes]) -> list[tuple[str, str, str]]:
    """The installed packages of dpkg's database and of the status.d/ paragraphs (an image without dpkg)."""
    paragraphs = [
        files[name].decode("utf-8", errors="replace")
        for name in sorted(files)
        if name == DPKG_STATUS or STATUS_D.fullmatch(name)
    ]
    return parse_dpkg_status("\n\n".join(paragraphs))


def npm_packages(files: Mapping[str, bytes]) -> list[tuple[str, str, str]]:
    """(name, version, bundled by) of every prebuilt JupyterLab extension and of what each bundle holds."""
    found = set()
    for name, data in files.items():
        if LAB_BUNDLE.fullmatch(name):
            found.update(_bundled(data, "jupyterlab"))
        elif EXTENSION.fullmatch(name):
            package = _json(data)
            if package.get("name") and package.get("version"):
                found.add((package["name"], package["version"], ""))
                bundle = name.removesuffix("package.json") + "static/third-party-licenses.json"
                found.update(_bundled(files.get(bundle, b""), package["name"]))
    return sorted(found)


def _bundled(data: bytes, by: str) -> set[tuple[str, str, str]]:
    packages = _json(data).get("packages", [])
    return {
        (p["name"], p["versionInfo"], by)
        for p in packages
        if isinstance(p, dict) and p.get("name") and p.get("versionInfo")
    }


def _json(data: bytes) -> dict[str, Any]:
    try:
        loaded = json.loads(data)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def parse_dpkg_status(text: str) -> list[tuple[str, str, str]]:
    """(package, version, architecture) of each installed package in dpkg status paragraphs (`dpkg-query -s`)."""
    found = []
    # A new paragraph starts at each Package line too: files catenated from status.d/ have no blank line between them
    for paragraph in re.split(r"\n\s*\n|\n(?=Package: )", text):
        fields = dict(
            line.split(": ", 1) for line in paragraph.splitlines() if ": " in line and not line.startswith(" ")
        )
        if fields.get("Package") and fields.get("Version") and fields.get("Status", "").endswith(" installed"):
            found.append((fields["Package"], fields["Version"], fields.get("Architecture", "all")))
    return sorted(set(found))


def npm_purl(package: str, version: str) -> PackageURL:
    scope, _, bare = package.rpartition("/")  # @jupyterlab/apputils: namespace @jupyterlab (purl encodes the @)
    return PackageURL(type="npm", namespace=scope or None, name=bare, version=version)


def cyclonedx(
    image: str,
    name: str,
    version: str,
    python: list[tuple[str, str]],
    debian: list[tuple[str, str, str]],
    npm: list[tuple[str, str, str]] = (),
) -> dict[str, Any]:
    """A CycloneDX 1.5 JSON document with one component per package, each with its purl."""
    bom = Bom()
    bom.metadata.component = Component(
        name=name, version=version, type=ComponentType.CONTAINER, bom_ref=f"image:{image}", description=image
    )
    for package, package_version in sorted(python):
        purl = PackageURL(type="pypi", name=package.lower(), version=package_version)
        bom.components.add(
            Component(name=package, version=package_version, type=ComponentType.LIBRARY, purl=purl, bom_ref=str(purl))
        )
    for package, package_version, arch in sorted(debian):
        purl = PackageURL(
            type="deb",
            namespace="debian",
            name=package,
            version=package_version,
            qualifiers={"arch": arch, "distro": "debian-12"},
        )
        bom.components.add(
            Component(name=package, version=package_version, type=ComponentType.LIBRARY, purl=purl, bom_ref=str(purl))
        )
    for package, package_version in sorted({(p, v) for p, v, _ in npm}):  # one component, however many bundle it
        purl = npm_purl(package, package_version)
        bom.components.add(
            Component(name=package, version=package_version, type=ComponentType.LIBRARY, purl=purl, bom_ref=str(purl))
        )
    text = make_outputter(bom, OutputFormat.JSON, SchemaVersion.V1_5).output_as_string()
    return json.loads(text)
