"""CycloneDX SBOMs of built images: the Python and Debian packages really installed in each one."""

from __future__ import annotations

import json
from typing import Any

from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from packageurl import PackageURL

from ..docker_io import Docker
from ..errors import HubforgeError

PYTHON_INVENTORY = (
    "import importlib.metadata as m, json; "
    "print(json.dumps(sorted({(d.metadata['Name'], d.version) for d in m.distributions() if d.metadata['Name']})))"
)
DPKG_INVENTORY = ["dpkg-query", "-W", "-f", "${Package}\\t${Version}\\t${Architecture}\\t${db:Status-Abbrev}\\n"]


def inventory(docker: Docker, image: str) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(Python distributions, installed Debian packages) found inside `image`; empty when it has neither tool."""
    python: list[tuple[str, str]] = []
    debian: list[tuple[str, str, str]] = []
    try:
        output = docker.run_output(image, ["python3", "-c", PYTHON_INVENTORY], entrypoint=[], user="0")
        python = [tuple(p) for p in json.loads(output.strip().splitlines()[-1])]
    except (HubforgeError, ValueError, IndexError):
        pass  # no Python in this image (gpu-probe)
    try:
        output = docker.run_output(image, DPKG_INVENTORY, entrypoint=[], user="0")
        for line in output.splitlines():
            fields = line.split("\t")
            if len(fields) == 4 and fields[3].strip().startswith("ii"):
                debian.append((fields[0], fields[1], fields[2]))
    except HubforgeError:
        pass  # no dpkg database in this image (gpu-probe): the caller adds what the build copied in
    return python, debian


def cyclonedx(image: str, name: str, version: str, python: list[tuple[str, str]],
              debian: list[tuple[str, str, str]]) -> dict[str, Any]:
    """A CycloneDX 1.5 JSON document with one component per package, each with its purl."""
    bom = Bom()
    bom.metadata.component = Component(name=name, version=version, type=ComponentType.CONTAINER,
                                       bom_ref=f"image:{image}", description=image)
    for package, package_version in sorted(python):
        purl = PackageURL(type="pypi", name=package.lower(), version=package_version)
        bom.components.add(Component(name=package, version=package_version, type=ComponentType.LIBRARY,
                                     purl=purl, bom_ref=str(purl)))
    for package, package_version, arch in sorted(debian):
        purl = PackageURL(type="deb", namespace="debian", name=package, version=package_version,
                          qualifiers={"arch": arch, "distro": "debian-12"})
        bom.components.add(Component(name=package, version=package_version, type=ComponentType.LIBRARY,
                                     purl=purl, bom_ref=str(purl)))
    text = make_outputter(bom, OutputFormat.JSON, SchemaVersion.V1_5).output_as_string()
    return json.loads(text)
