"""Content keys: a key changes when, and only when, one of its inputs changes; parents propagate."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubforge.imagebuild.keys import Manifest, digest_bytes, explain
from hubforge.imagebuild.targets import DEFAULT_SET, Graph

ALL = list(DEFAULT_SET) + ["lab-datascience"]


def keys_of(builder) -> dict[str, str]:
    graph = Graph()
    return {step.target.name: step.key for step in builder.plan(graph.closure(ALL))}


def append(root: Path, rel: str, text: str = "\n# changed\n") -> None:
    with (root / rel).open("a") as handle:
        handle.write(text)


@pytest.mark.parametrize(
    ("edit", "changed"),
    [
        (
            "images/base/bootstrap.json",
            {"base", "hub", "proxy", "lab", "lab-datascience", "gpu-probe", "registry", "backup", "monitoring"},
        ),
        ("images/monitoring/apt.lock", {"monitoring"}),
        ("images/hub/Dockerfile.j2", {"hub"}),
        ("images/hub/requirements.lock", {"hub"}),
        ("images/hub/apt.lock", {"hub"}),
        ("images/proxy/package-lock.json", {"hub", "proxy"}),
        ("images/proxy/start.cjs", {"proxy"}),
        ("hub_ext/__init__.py", {"hub"}),
        ("images/lab/requirements.lock", {"lab"}),
        ("images/lab/datascience.lock", {"lab-datascience"}),
        ("images/lab/apt.lock", {"lab", "lab-datascience"}),
        ("images/lab/overrides.json", {"lab", "lab-datascience"}),
        ("images/gpu-probe/probe.sh", {"gpu-probe"}),
        ("images/registry/config.yml", {"registry"}),
        ("images/backup/apt.lock", {"backup"}),
        ("images/_shared/harden.j2", {"hub", "proxy", "lab", "lab-datascience", "gpu-probe"}),
        ("images/_shared/venv.j2", {"hub", "lab", "lab-datascience"}),
        ("images/_shared/build-apt.lock", {"hub", "lab", "lab-datascience"}),
        ("images/lab/hubforge-notify/src/index.ts", {"lab", "lab-datascience"}),
        ("images/hub/requirements.in", set()),  # not an input: the lock is
    ],
)
def test_exactly_the_dependent_keys_change(source_tree, make_builder, edit, changed):
    before = keys_of(make_builder(source_tree))
    append(source_tree, edit, " \n" if edit.endswith(".json") else "\n# changed\n")  # JSON stays valid
    after = keys_of(make_builder(source_tree))
    assert {name for name in before if before[name] != after[name]} == changed


def test_keys_are_stable_across_runs(source_tree, make_builder):
    assert keys_of(make_builder(source_tree)) == keys_of(make_builder(source_tree))


def test_build_outputs_in_a_declared_folder_are_not_inputs(source_tree, make_builder):
    before = keys_of(make_builder(source_tree))
    for generated in ("node_modules/x/index.js", "lib/index.js", "hubforge_notify/__pycache__/a.pyc"):
        path = source_tree / "images/lab/hubforge-notify" / generated
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("generated")
    assert keys_of(make_builder(source_tree)) == before


def test_new_file_in_a_declared_folder_changes_the_key(source_tree, make_builder):
    before = keys_of(make_builder(source_tree))
    (source_tree / "hub_ext" / "extra.py").write_text("X = 1\n")
    after = keys_of(make_builder(source_tree))
    assert before["hub"] != after["hub"] and before["lab"] == after["lab"]


def test_pull_and_bootstrap_bases_have_different_keys(source_tree, make_builder):
    assert keys_of(make_builder(source_tree, "pull"))["base"] != keys_of(make_builder(source_tree, "bootstrap"))["base"]


def test_the_upstream_digest_is_the_pull_key(source_tree, make_builder, tmp_path):
    from hubforge.imagebuild.builder import Builder, Settings

    from .conftest import EmptyImageStore

    def base_key(upstream: str) -> str:
        settings = Settings(root=source_tree, cache_dir=tmp_path / "c", base_mode="pull", upstream=upstream)
        return Builder(settings, EmptyImageStore(), say=lambda m: None).plan(Graph().closure(["base"]))[0].key

    assert base_key("debian@sha256:" + "a" * 64) != base_key("debian@sha256:" + "b" * 64)


def manifest(**overrides) -> Manifest:
    fields = dict(
        target="hub", dockerfile="FROM x\n", inputs={"a": "1", "b": "2"}, build_args={"X": "1"}, parent_key="p"
    )
    fields.update(overrides)
    return Manifest(**fields)


@pytest.mark.parametrize(
    "change",
    [
        {"dockerfile": "FROM y\n"},
        {"inputs": {"a": "1", "b": "3"}},
        {"inputs": {"a": "1"}},
        {"build_args": {"X": "2"}},
        {"parent_key": "q"},
    ],
)
def test_manifest_key_changes_with_each_field(change):
    assert manifest().key() != manifest(**change).key()


def test_manifest_key_ignores_dict_order():
    assert manifest(inputs={"b": "2", "a": "1"}).key() == manifest().key()


def test_explain_names_the_changed_input():
    previous = manifest().to_json()
    assert explain(previous, manifest(inputs={"a": "1", "b": "9"})) == ["b changed"]
    assert explain(previous, manifest(build_args={"X": "2"})) == ["build arg X changed ('1' -> '2')"]
    assert explain(None, manifest()) == ["never built here before"]
    assert "a is no longer an input" in explain(previous, manifest(inputs={"b": "2"}))


def test_the_plan_cache_hashes_a_file_again_when_it_changes(tmp_path):
    """The no-op build's cache trusts size and modification time only for files older than a clock tick or two."""
    import os

    from hubforge.imagebuild.builder import RACY_SECONDS, PlanCache

    state, source = tmp_path / "plan-cache.json", tmp_path / "input.txt"
    source.write_text("one")
    first = PlanCache(state)
    assert first.digest(source) == digest_bytes(b"one")
    source.write_text("two")  # same size, most likely the same coarse time stamp: a fresh file is never cached
    assert first.digest(source) == digest_bytes(b"two")
    old = source.stat().st_mtime - RACY_SECONDS - 10
    os.utime(source, (old, old))
    first.digest(source)
    first.save()
    second = PlanCache(state)
    assert second.data["files"][str(source)][2] == digest_bytes(b"two") and not second.changed
    source.write_text("six")
    os.utime(source, (old + 1, old + 1))  # another time: hashed again
    assert second.digest(source) == digest_bytes(b"six")
    (tmp_path / "plan-cache.json").write_text("{not json")
    assert PlanCache(state).digest(source) == digest_bytes(b"six")  # a damaged cache is only a slower plan


def test_the_plan_cache_renders_once_per_template_and_variables(tmp_path):
    from hubforge.imagebuild.builder import PlanCache

    cache = PlanCache(tmp_path / "plan-cache.json")
    assert cache.render({"t.j2": "FROM {{ parent }}\n"}, "t.j2", {"parent": "a"}) == "FROM a\n"
    assert cache.render({"t.j2": "FROM {{ parent }}\n"}, "t.j2", {"parent": "b"}) == "FROM b\n"
    assert cache.render({"t.j2": "FROM {{ parent }} AS x\n"}, "t.j2", {"parent": "a"}) == "FROM a AS x\n"
    assert len(cache.data["renders"]) == 3
