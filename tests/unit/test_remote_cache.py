"""Issue 26, parts 1 and 7: the remote cache is addressed by full keys and pulled only by the digest a release's
cache index names; a build stages the bytes its key hashed; a local wheel packs exactly the files its key covers.

On the main this issue started from, an image served under a key tag was taken as the build of that key (the
registry chose the bytes), a key tag in a registry had 80 bits, and a file edited between planning and staging
went into the image under the old key."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from hubforge.errors import HubforgeError
from hubforge.imagebuild import remote_cache, wheels
from hubforge.imagebuild.builder import KEY_LABEL, TARGET_LABEL, Builder, Settings, Step, input_digests
from hubforge.imagebuild.keys import KEY_LENGTH, Manifest
from hubforge.imagebuild.remote_cache import Entry
from hubforge.imagebuild.targets import Graph, Target
from hubforge.release import plan as rel

ROOT = Path(__file__).resolve().parents[2]
EPOCH = 1767225600
TARGET = Target(name="probe", repository="hubforge/probe", template=None, inputs=("img/run.sh",))
CACHE = "registry.test:5000/ns"
BUILT_ID, OTHER_ID = "sha256:" + "b" * 64, "sha256:" + "e" * 64
DIGEST, OTHER_DIGEST = "sha256:" + "d" * 64, "sha256:" + "f" * 64
LAYERS = ("sha256:" + "1" * 64, "sha256:" + "2" * 64)


def step_of(inputs: dict[str, str] | None = None) -> Step:
    return Step(TARGET, Manifest("probe", "FROM scratch\n", inputs or {}, {}, None), exists=False)


def built_image(step: Step, image_id: str = BUILT_ID, layers: tuple[str, ...] = LAYERS) -> dict:
    """What `docker image inspect` says of a build of `step`'s key."""
    return {
        "Id": image_id,
        "RootFS": {"Layers": list(layers)},
        "Config": {"Labels": {KEY_LABEL: step.key, TARGET_LABEL: "probe"}},
    }


class RegistryAndStore:
    """A Docker daemon with its local image store, and one registry behind it that serves what a test puts there:
    `served` maps a reference (name:tag or name@digest) to the image a pull of it gives."""

    def __init__(self, served: dict[str, dict]) -> None:
        self.served, self.local, self.pulls = served, {}, []

    def try_pull(self, reference: str) -> bool:
        self.pulls.append(reference)
        if reference in self.served:
            self.local[reference] = self.served[reference]
        return reference in self.served

    def remote_digest(self, reference: str) -> str:
        for ref, image in self.served.items():
            if ref == reference:
                return next((r.split("@")[1] for r, i in self.served.items() if "@" in r and i is image), OTHER_DIGEST)
        raise HubforgeError(f"cannot read {reference} back from its registry")

    def image(self, ref: str) -> dict | None:
        return self.local.get(ref)

    def image_id(self, ref: str) -> str | None:
        return (self.local.get(ref) or {}).get("Id")

    def tag(self, ref: str, repository: str, tag: str) -> None:
        self.local[f"{repository}:{tag}"] = self.local[ref]

    def remove_image(self, ref: str) -> bool:
        return self.local.pop(ref, None) is not None


def index_file(tmp_path: Path, step: Step, entry: Entry) -> Path:
    path = tmp_path / "cache-index-1.0.0.json"
    path.write_text(json.dumps(remote_cache.dump({"probe": {step.remote_key: entry}})))
    return path


def pull(tmp_path: Path, step: Step, served: dict[str, dict], entry: Entry = Entry(DIGEST, BUILT_ID, LAYERS)):
    """pull_from_cache as `invoke build --cache-from CACHE --cache-index FILE` runs it: (pulled?, docker, lines)."""
    docker, lines = RegistryAndStore(served), []
    settings = Settings(
        root=tmp_path, cache_dir=tmp_path / "cache", cache_from=CACHE, cache_index=index_file(tmp_path, step, entry)
    )
    builder = Builder(settings, docker, Graph({"probe": TARGET}), say=lines.append)  # type: ignore[arg-type]
    builder.remember = lambda step: None  # type: ignore[method-assign]  # the build state is not what is tested
    builder.ensure_friendly_tag = lambda step: None  # type: ignore[method-assign]
    return builder.pull_from_cache(step, lambda message: None), docker, lines


# -- part 1: pulled by the digest the index names, and checked ------------------------------------------------------
def test_an_other_image_under_the_key_tag_is_refused_in_one_line_and_built_here(tmp_path):
    step = step_of()
    impostor = built_image(step, OTHER_ID)  # it even carries the right labels
    pulled, docker, lines = pull(tmp_path, step, {f"{CACHE}/probe:{step.remote_key}": impostor})
    assert not pulled
    assert docker.pulls == [f"{CACHE}/probe@{DIGEST}"]  # never the tag
    assert f"hubforge/probe:{step.key}" not in docker.local
    assert len(lines) == 1 and "refused" in lines[0] and f"{CACHE}/probe:{step.remote_key}" in lines[0]
    assert DIGEST in lines[0] and f"building {step.ref} here" in lines[0]


def test_the_image_the_index_names_is_pulled_by_digest_and_tagged_under_the_key(tmp_path):
    step = step_of()
    image = built_image(step)
    pulled, docker, lines = pull(
        tmp_path, step, {f"{CACHE}/probe@{DIGEST}": image, f"{CACHE}/probe:{step.remote_key}": image}
    )
    assert pulled and lines == []
    assert docker.pulls == [f"{CACHE}/probe@{DIGEST}"]
    assert docker.local[f"hubforge/probe:{step.key}"] is image


def test_a_pulled_image_that_is_not_the_indexed_build_is_removed_and_refused(tmp_path):
    step = step_of()
    pulled, docker, lines = pull(tmp_path, step, {f"{CACHE}/probe@{DIGEST}": built_image(step, OTHER_ID)})
    assert (
        not pulled
        and f"{CACHE}/probe@{DIGEST}" not in docker.local
        and f"hubforge/probe:{step.key}" not in docker.local
    )
    assert len(lines) == 1 and f"its image id is {OTHER_ID}" in lines[0]


def test_a_key_the_index_does_not_name_is_not_even_asked_for(tmp_path):
    step, other = step_of(), step_of({"img/run.sh": "0" * 64})
    docker, lines = RegistryAndStore({f"{CACHE}/probe:{other.remote_key}": built_image(other)}), []
    settings = Settings(
        root=tmp_path,
        cache_dir=tmp_path / "c",
        cache_from=CACHE,
        cache_index=index_file(tmp_path, step, Entry(DIGEST, BUILT_ID, LAYERS)),
    )
    assert not Builder(settings, docker, Graph({"probe": TARGET}), say=lines.append).pull_from_cache(
        other, lambda m: None
    )  # type: ignore[arg-type]
    assert docker.pulls == [] and lines == []


def test_a_key_tag_the_registry_lacks_is_a_quiet_miss(tmp_path):
    pulled, docker, lines = pull(tmp_path, step_of(), {})
    assert not pulled and lines == []


def test_cache_from_without_an_index_is_one_line():
    with pytest.raises(HubforgeError, match=r"^--cache-from needs --cache-index FILE") as error:
        Settings(root=ROOT, cache_dir=ROOT / "cache", cache_from=CACHE)
    assert "\n" not in str(error.value)


ENTRY = Entry(DIGEST, BUILT_ID, LAYERS)
LABELS = {KEY_LABEL: "k" * KEY_LENGTH, TARGET_LABEL: "probe"}


def inspected(image_id: str = BUILT_ID, layers=LAYERS, labels=LABELS) -> dict:
    return {"Id": image_id, "RootFS": {"Layers": list(layers)}, "Config": {"Labels": dict(labels)}}


@pytest.mark.parametrize(
    "found, why",
    [
        (inspected(), ""),
        (inspected(DIGEST), ""),  # the containerd image store names an image by its manifest digest
        (None, "the pull left no image in the local store"),
        (inspected(OTHER_ID), f"its image id is {OTHER_ID}, the cache index names {BUILT_ID}"),
        (inspected(layers=LAYERS[:1]), "its layers are not those the cache index names"),
        (inspected(labels={**LABELS, KEY_LABEL: "0" * KEY_LENGTH}), f"its label {KEY_LABEL} is '{'0' * KEY_LENGTH}'"),
        (inspected(labels={}), f"its label {KEY_LABEL} is None"),
    ],
)
def test_refusal(found, why):
    result = remote_cache.refusal(ENTRY, found, LABELS)
    assert result.startswith(why) and bool(result) == bool(why)


@pytest.mark.parametrize("served, refused", [(None, False), (DIGEST, False), (OTHER_DIGEST, True)])
def test_a_key_tag_is_refused_only_when_it_serves_another_digest(served, refused):
    assert bool(remote_cache.tag_refusal("r/ns/probe:k", served, ENTRY)) == refused


def test_the_index_round_trips_and_names_full_keys_only(tmp_path):
    key = "a" * 64
    assert remote_cache.parse(remote_cache.dump({"hub": {key: ENTRY}}), "x").entry("hub", key) == ENTRY
    for bad in (
        {"schema": "other", "images": {}},
        {"schema": remote_cache.SCHEMA, "images": {"hub": {key[:KEY_LENGTH]: ENTRY.to_json()}}},
        {"schema": remote_cache.SCHEMA, "images": {"hub": {key: {**ENTRY.to_json(), "digest": "latest"}}}},
        {"schema": remote_cache.SCHEMA, "images": {"hub": {key: {"digest": DIGEST}}}},
    ):
        with pytest.raises(HubforgeError) as error:
            remote_cache.parse(bad, "idx.json")
        assert str(error.value).startswith("idx.json") and "\n" not in str(error.value)


# -- part 7: full keys in registries -------------------------------------------------------------------------------
def test_a_registry_key_tag_is_the_full_sha256_and_the_local_tag_its_prefix():
    step = step_of()
    push = rel.plan([step], "registry.test:5000", "ns", rel.parse_version("1.0.0"), "a" * 12)[0]
    assert push.tags == (step.remote_key,) and re.fullmatch(r"[0-9a-f]{64}", push.tags[0])
    assert step.key == step.remote_key[:KEY_LENGTH] and len(step.key) == 20  # local tags as before


# -- part 7: stage what was hashed ---------------------------------------------------------------------------------
def planned_step(root: Path) -> Step:
    return step_of(input_digests(root, TARGET.all_inputs()))


def stage(root: Path, step: Step) -> Path:
    builder = Builder(
        Settings(root=root, cache_dir=root / "cache"),
        RegistryAndStore({}),
        Graph({"probe": TARGET}),  # type: ignore[arg-type]
        say=lambda message: None,
    )
    return builder.stage_context(step, lambda message: None)


def test_an_input_changed_between_plan_and_staging_is_refused_in_one_line(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "run.sh").write_text("echo planned\n")
    step = planned_step(tmp_path)
    (tmp_path / "img" / "run.sh").write_text("echo checked out later\n")  # a `git checkout` while the parents build
    with pytest.raises(HubforgeError, match=r"^img/run.sh changed after its image's key was computed") as error:
        stage(tmp_path, step)
    assert "\n" not in str(error.value)


def test_the_planned_bytes_are_staged_with_their_mode(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "run.sh").write_text("echo planned\n")
    (tmp_path / "img" / "run.sh").chmod(0o755)
    context = stage(tmp_path, planned_step(tmp_path))
    assert (context / "img" / "run.sh").read_text() == "echo planned\n"
    assert (context / "img" / "run.sh").stat().st_mode & 0o777 == 0o755


def test_a_file_added_to_a_declared_folder_after_the_plan_is_refused(tmp_path):
    from hubforge.imagebuild.builder import planned_files

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("a = 1\n")
    planned = input_digests(tmp_path, ("pkg",))
    assert planned_files(tmp_path, ["pkg"], planned) == {"pkg/a.py": b"a = 1\n"}
    (tmp_path / "pkg" / "b.py").write_text("b = 2\n")
    with pytest.raises(HubforgeError, match=r"^pkg changed after"):
        planned_files(tmp_path, ["pkg"], planned)


# -- part 7: a local wheel packs exactly the files its key hashes --------------------------------------------------
def test_a_local_wheel_packs_exactly_the_files_the_key_covers(tmp_path):
    package = tmp_path / "hub_ext"
    for rel_path in (
        "__init__.py",
        "templates/page.html",
        "build/lib/stale.py",
        "dist/old.whl",
        "lib/index.js",
        "node_modules/x/index.js",
        "__pycache__/a.cpython-311.pyc",
        "x.tsbuildinfo",
        ".pytest_cache/v",
    ):
        (package / rel_path).parent.mkdir(parents=True, exist_ok=True)
        (package / rel_path).write_text(rel_path)
    keyed = {name.split("/", 1)[1] for name in input_digests(tmp_path, ("hub_ext",))}
    wheel = wheels.build_local_wheel(package, "hub-ext", "1.0", tmp_path / "wheels", EPOCH)
    with zipfile.ZipFile(wheel) as archive:
        packed = {n.split("/", 1)[1] for n in archive.namelist() if n.startswith("hub_ext/")}
    assert packed == keyed == {"__init__.py", "templates/page.html"}


def test_the_hub_ext_wheel_packs_the_key_s_files_of_the_repository(tmp_path):
    keyed = {name.split("/", 1)[1] for name in input_digests(ROOT, ("hub_ext",))}
    wheel = wheels.build_local_wheel(ROOT / "hub_ext", "hub-ext", "1.0", tmp_path, EPOCH)
    with zipfile.ZipFile(wheel) as archive:
        assert {n.split("/", 1)[1] for n in archive.namelist() if n.startswith("hub_ext/")} == keyed


# -- part 7: CI runs third-party actions by commit ----------------------------------------------------------------
def test_every_workflow_action_is_pinned_by_commit():
    uses = [
        (path.name, line.split("uses:", 1)[1].split("#")[0].strip())
        for path in sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
        for line in path.read_text().splitlines()
        if line.strip().lstrip("- ").startswith("uses:")
    ]
    assert uses, "no workflow uses an action: this test has nothing to check"
    loose = [
        (name, ref) for name, ref in uses if not ref.startswith("./") and not re.fullmatch(r"[^@]+@[0-9a-f]{40}", ref)
    ]
    assert not loose, f"actions pinned by tag, not by commit: {loose}"


# -- the index's own signature ----------------------------------------------------------------------------------------
def signed_index(tmp_path: Path, step: Step, entry: Entry):
    from cryptography.hazmat.primitives.asymmetric import ec

    from hubforge.release import sign

    release_key = ec.generate_private_key(ec.SECP256R1())
    index = index_file(tmp_path, step, entry)
    remote_cache.signature_path(index).write_text(sign.sign(release_key, index.read_bytes()) + "\n")
    public = tmp_path / "release.pub.pem"
    public.write_bytes(sign.public_pem(release_key))
    return index, public


def test_an_index_rewritten_to_vouch_for_an_other_image_is_refused_with_the_release_key(tmp_path):
    step = step_of()
    index, public = signed_index(tmp_path, step, Entry(DIGEST, BUILT_ID, LAYERS))
    assert remote_cache.load(index).entry("probe", step.remote_key).digest == DIGEST  # unsigned use: trusted as given
    index.write_text(index.read_text().replace(DIGEST, OTHER_DIGEST))  # the attacker's image, and its digest
    assert remote_cache.load(index).entry("probe", step.remote_key).digest == OTHER_DIGEST  # what --cache-key stops
    with pytest.raises(HubforgeError) as refused:
        Builder(
            Settings(
                root=tmp_path, cache_dir=tmp_path / "cache", cache_from=CACHE, cache_index=index, cache_key=public
            ),
            None,
            Graph({"probe": TARGET}),
            say=lambda line: None,
        )  # type: ignore[arg-type]
    assert "signature does not match" in str(refused.value) and "\n" not in str(refused.value)


def test_a_missing_signature_or_a_key_without_an_index_is_one_line(tmp_path):
    step = step_of()
    index, public = signed_index(tmp_path, step, Entry(DIGEST, BUILT_ID, LAYERS))
    remote_cache.signature_path(index).unlink()
    with pytest.raises(HubforgeError, match=r"has no signature beside it \(cache-index-1.0.0.json.sig\)"):
        remote_cache.load(index, public)
    with pytest.raises(HubforgeError, match="--cache-key checks the signature of the --cache-index"):
        Settings(root=tmp_path, cache_dir=tmp_path / "cache", cache_key=public)
