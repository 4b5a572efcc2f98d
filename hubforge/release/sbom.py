"""CycloneDX SBOMs of built images: the Python, Debian and npm packages really installed in each one."""

from __future__ import annotations

import json
import re
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
# An image without dpkg (gpu-probe: busybox and files copied from .debs) records the packages it copied as one dpkg
# status paragraph each, in the folder that distroless images use and that SBOM scanners read (syft, trivy).
STATUS_D = "/var/lib/dpkg/status.d"
STATUS_D_INVENTORY = ["/bin/sh", "-c", f"cat {STATUS_D}/*"]
# npm packages shipped in a lab: every prebuilt JupyterLab extension (its package.json) and what its bundle holds
# (static/third-party-licenses.json, written by the extension builder), and the bundle of JupyterLab itself.
# Shared packages an extension takes from JupyterLab at run time are in JupyterLab's bundle, not the extension's.
NPM_INVENTORY = """
import json, pathlib, sys
try:
    from jupyter_core.paths import jupyter_path
    roots = [pathlib.Path(p) for p in jupyter_path()]
except ImportError:
    roots = [pathlib.Path(sys.prefix, "share", "jupyter")]
found = set()
def bundled(path, by):
    try:
        packages = json.loads(path.read_text()).get("packages", [])
    except (OSError, ValueError):
        return
    found.update((p["name"], p["versionInfo"], by) for p in packages if p.get("name") and p.get("versionInfo"))
for root in roots:
    bundled(root / "lab" / "static" / "third-party-licenses.json", "jupyterlab")
    for manifest in sorted(root.glob("labextensions/*/package.json")) + sorted(root.glob("labextensions/@*/*/package.json")):
        try:
            package = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if package.get("name") and package.get("version"):
            found.add((package["name"], package["version"], ""))
            bundled(manifest.parent / "static" / "third-party-licenses.json", package["name"])
print(json.dumps(sorted(found)))
"""


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
    except HubforgeError:  # no dpkg in this image (gpu-probe): the status paragraphs of what its build copied in
        try:
            debian = parse_dpkg_status(docker.run_output(image, STATUS_D_INVENTORY, entrypoint=[], user="0"))
        except HubforgeError:
            pass  # neither: no Debian packages to list
    return python, debian


def parse_dpkg_status(text: str) -> list[tuple[str, str, str]]:
    """(package, version, architecture) of each installed package in dpkg status paragraphs (`dpkg-query -s`)."""
    found = []
    # A new paragraph starts at each Package line too: files catenated from status.d/ have no blank line between them
    for paragraph in re.split(r"\n\s*\n|\n(?=Package: )", text):
        fields = dict(line.split(": ", 1) for line in paragraph.splitlines() if ": " in line and not line.startswith(" "))
        if fields.get("Package") and fields.get("Version") and fields.get("Status", "").endswith(" installed"):
            found.append((fields["Package"], fields["Version"], fields.get("Architecture", "all")))
    return sorted(set(found))


def npm_inventory(docker: Docker, image: str) -> list[tuple[str, str, str]]:
    """(name, version, bundled by) of the npm packages a lab ships: its JupyterLab extensions and their bundles
    ("" for an extension itself); empty in an image without Python or JupyterLab."""
    try:
        output = docker.run_output(image, ["python3", "-c", NPM_INVENTORY], entrypoint=[], user="0")
        return [tuple(p) for p in json.loads(output.strip().splitlines()[-1])]
    except (HubforgeError, ValueError, IndexError):
        return []


def npm_purl(package: str, version: str) -> PackageURL:
    scope, _, bare = package.rpartition("/")  # @jupyterlab/apputils: namespace @jupyterlab (purl encodes the @)
    return PackageURL(type="npm", namespace=scope or None, name=bare, version=version)


def cyclonedx(image: str, name: str, version: str, python: list[tuple[str, str]],
              debian: list[tuple[str, str, str]], npm: list[tuple[str, str, str]] = ()) -> dict[str, Any]:
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
    for package, package_version in sorted({(p, v) for p, v, _ in npm}):  # one component, however many bundle it
        purl = npm_purl(package, package_version)
        bom.components.add(Component(name=package, version=package_version, type=ComponentType.LIBRARY,
                                     purl=purl, bom_ref=str(purl)))
    text = make_outputter(bom, OutputFormat.JSON, SchemaVersion.V1_5).output_as_string()
    return json.loads(text)
