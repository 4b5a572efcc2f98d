"""What an upgrade moves between, pulls and records (hubforge.upgrade.plan), and the spawner's word on labs that run a
lab image the stack no longer has."""

from __future__ import annotations

import fnmatch
import json
from types import SimpleNamespace

import pytest

from hub_ext.naming import VOLUME_LABEL
from hub_ext.spawn.spawner import HubforgeSpawner, image_of
from hub_ext.spawn.swarm import HubforgeSwarmSpawner
from hubforge.deploy.swarm import stack_registry_name
from hubforge.errors import HubforgeError
from hubforge.release.plan import parse_version
from hubforge.upgrade import plan
from hubforge.upgrade.runner import Upgrade

CURRENT = plan.ImageSet(
    {"hub": "hubforge/hub:aaa", "lab": "hubforge/lab:bbb", "gpu-probe": "hubforge/gpu-probe:ccc", "backup": "b:1"},
    {"default": "hubforge/lab:bbb", "datascience": "hubforge/lab:ddd"},
    "the images of its last `invoke up`",
)
DIGEST = "sha256:" + "1" * 64


def test_a_release_names_each_image_the_stack_runs_by_its_version_tag():
    release = plan.Release("127.0.0.1:5000", "team", parse_version("1.4.2"))
    assert release.wanted(CURRENT.lab_images) == {
        "hub": "127.0.0.1:5000/team/hub:1.4.2",
        "proxy": "127.0.0.1:5000/team/proxy:1.4.2",
        "lab": "127.0.0.1:5000/team/lab:1.4.2",
        "gpu-probe": "127.0.0.1:5000/team/gpu-probe:1.4.2",
        "lab:datascience": "127.0.0.1:5000/team/lab:1.4.2-datascience",
    }
    assert plan.Release("docker.io", "hubforge", parse_version("2.0.0")).reference("hub") == "hubforge/hub:2.0.0"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("127.0.0.1:5000/team/hub:1.4.2", f"127.0.0.1:5000/team/hub@{DIGEST}"),
        ("hubforge/hub:2.0.0", f"hubforge/hub@{DIGEST}"),
        ("registry:5000/hub", f"registry:5000/hub@{DIGEST}"),  # a port is no tag
        (f"hubforge/hub@{'sha256:' + '2' * 64}", f"hubforge/hub@{DIGEST}"),
    ],
)
def test_an_image_is_pinned_by_digest_whatever_its_tag(reference, expected):
    assert plan.pinned(reference, DIGEST) == expected


def test_a_release_set_pins_every_released_image_and_keeps_the_others():
    release = plan.Release("127.0.0.1:5000", "team", parse_version("1.4.2"))
    digests = {key: DIGEST for key in release.wanted(CURRENT.lab_images)}
    target = plan.release_set(CURRENT, release, digests)
    assert target.images["hub"] == f"127.0.0.1:5000/team/hub@{DIGEST}"
    assert target.images["backup"] == "b:1"  # released by no one: the checkout's
    assert target.lab_images == {
        "default": f"127.0.0.1:5000/team/lab@{DIGEST}",
        "datascience": f"127.0.0.1:5000/team/lab@{DIGEST}",
    }
    assert target.version == "1.4.2"
    changes = CURRENT.changes(target)
    assert f"hub: hubforge/hub:aaa -> 127.0.0.1:5000/team/hub@{DIGEST}" in changes
    assert not any(line.startswith("backup") for line in changes)
    assert CURRENT.changes(CURRENT) == []


def test_the_record_round_trips_and_a_damaged_one_is_one_line(tmp_path):
    after = plan.ImageSet({"hub": "x"}, {"default": "y"}, "1.0.0")
    record = plan.Record(CURRENT, after, "abcdef0123", migrated=True)
    record.save(tmp_path)
    again = plan.load_record(tmp_path)
    assert (again.before, again.after, again.snapshot, again.state, again.migrated) == (
        CURRENT,
        after,
        "abcdef0123",
        "upgrading",
        True,
    )
    assert plan.load_record(tmp_path / "nowhere") is None
    (tmp_path / plan.RECORD_FILE).write_text('{"from": {}}')
    with pytest.raises(HubforgeError, match="is not an upgrade record"):
        plan.load_record(tmp_path)


def test_the_running_version_comes_from_the_last_upgrade_that_ran_these_images():
    state = {"images": {"hub": "x"}, "lab_images": {"default": "y"}}
    done = {"state": "done", "to": {"images": {"hub": "x"}, "version": "1.0.0"}, "from": {"images": {"hub": "w"}}}
    assert plan.running_set(state, done).version == "1.0.0"
    back = {"state": "rolled back", "to": {"images": {"hub": "z"}}, "from": {"images": {"hub": "x"}, "version": "0.9"}}
    assert plan.running_set(state, back).version == "0.9"
    assert "invoke up" in plan.running_set(state, None).version
    assert json.dumps(plan.running_set(state, None).to_json())


def test_a_migration_runs_only_when_the_schema_moves():
    assert not plan.needs_migration("4621fec11365\n", "4621fec11365")
    assert plan.needs_migration("0eee8c825d24", "4621fec11365")


def test_the_lab_image_of_a_container_or_a_swarm_service():
    assert image_of({"Config": {"Image": "hubforge/lab:bbb"}}) == "hubforge/lab:bbb"
    service = {"Spec": {"TaskTemplate": {"ContainerSpec": {"Image": "reg/lab:bbb@" + DIGEST}}}}
    assert image_of(service) == "reg/lab:bbb@" + DIGEST
    assert image_of(None) == ""


@pytest.mark.parametrize(
    ("running", "outdated"),
    [
        ("hubforge/lab:bbb", False),
        ("hubforge/lab:bbb@" + DIGEST, False),  # as Swarm pins a tag
        ("hubforge/lab:old", True),
        ("", False),  # not polled yet
    ],
)
def test_a_running_lab_is_outdated_when_its_image_is_none_of_the_stack(running, outdated):
    spawner = SimpleNamespace(active=True, running_image=running, lab_images={"default": "hubforge/lab:bbb"})
    spawner.current_lab_images = lambda: HubforgeSpawner.current_lab_images(spawner)
    assert HubforgeSpawner.outdated_image.fget(spawner) is outdated
    spawner.active = False
    assert HubforgeSpawner.outdated_image.fget(spawner) is False


def test_a_swarm_lab_running_the_registrys_copy_of_the_image_is_not_outdated():
    """A lab service runs its image as the nodes pull it, from the stack's registry by digest (images.json)."""
    pulled = "127.0.0.1:5000/hubforge/lab@" + DIGEST
    spawner = SimpleNamespace(
        active=True,
        running_image=pulled,
        lab_images={"default": "hubforge/lab:bbb"},
        registry_ref=lambda ref: pulled if ref == "hubforge/lab:bbb" else None,
    )
    spawner.current_lab_images = lambda: HubforgeSwarmSpawner.current_lab_images(spawner)
    assert HubforgeSpawner.outdated_image.fget(spawner) is False
    spawner.running_image = "127.0.0.1:5000/hubforge/lab@sha256:" + "9" * 64  # the image of before an upgrade
    assert HubforgeSpawner.outdated_image.fget(spawner) is True


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("hubforge/hub:0f77b3d190daaea8eb7d", ("hubforge/hub", "0f77b3d190daaea8eb7d")),
        (f"127.0.0.1:5000/team/hub@{DIGEST}", ("team/hub", "sha256-" + "1" * 64)),
        (f"registry.example.org/team/lab@{DIGEST}", ("team/lab", "sha256-" + "1" * 64)),
        (f"hubforge/hub@{DIGEST}", ("hubforge/hub", "sha256-" + "1" * 64)),  # Docker Hub: a namespace, no host
    ],
)
def test_an_image_has_one_name_in_the_swarms_registry_built_or_released(ref, expected):
    assert stack_registry_name(ref) == expected


def test_an_upgrades_snapshot_is_kept_by_the_retention_and_copies_never_share_a_name():
    from hub_ext.backup import plan as backup_plan

    argv = backup_plan.forget_argv("team", 7, 4, 6)
    assert argv[argv.index("--keep-tag") + 1] == backup_plan.UPGRADE_TAG
    assert backup_plan.UPGRADE_TAG in backup_plan.tags("team", "compose", "1.0.0", "", (backup_plan.UPGRADE_TAG,))
    first, second = backup_plan.database_copy_name("a1"), backup_plan.database_copy_name("b2")
    assert first != second
    assert all(fnmatch.fnmatch(name, backup_plan.DATABASE_COPY) for name in (first, second))  # what is excluded


def test_the_metrics_are_reached_beside_the_hubs_api():
    state = {"api_url": "https://127.0.0.1:9443/jhub/hub/api/"}
    assert plan.metrics_url(state) == "https://127.0.0.1:9443/jhub/hub/metrics"


class RenderingStack:
    """The calls a switch makes of the stack, recorded."""

    def __init__(self):
        self.calls = []

    def prepare(self, images, lab_images):
        self.calls.append("prepare")
        return {"images": dict(images), "api_url": "https://127.0.0.1:9443/hub/api/"}

    def start(self, rendered):
        self.calls.append(("start", rendered["images"]["hub"]))

    def distribute(self, images, lab_images, status):
        self.calls.append("distribute")


def test_a_switch_starts_the_stack_as_rendered_and_hands_that_on():
    stack = RenderingStack()
    upgrade = Upgrade(stack, None, lambda message: None, "")
    rendered = upgrade.switch(CURRENT, lambda message: None)
    assert stack.calls == ["prepare", ("start", "hubforge/hub:aaa"), "distribute"]
    assert rendered["images"] == CURRENT.images  # what the gate waits for and asks, without reading stack.json again


class VolumeDaemon:
    def __init__(self, volumes):
        self.listed, self.runs = volumes, []

    def volumes(self, labels):
        return self.listed

    def run_once(self, image, argv, host_config, labels, user, timeout):
        self.runs.append(host_config["binds"])
        return 0, ""


def test_the_migration_runs_on_the_hub_data_volume():
    volumes = [
        {"Name": "p_shared", "Labels": {VOLUME_LABEL: "shared"}},
        {"Name": "p_hub-data", "Labels": {VOLUME_LABEL: "hub-data"}},
        {"Name": "unlabelled", "Labels": None},
    ]
    daemon = VolumeDaemon(volumes)
    stack = SimpleNamespace(docker=daemon, options=SimpleNamespace(project="p"))
    Upgrade(stack, None, lambda message: None, "").migrate("hub:new", lambda message: None)
    assert daemon.runs == [[f"p_hub-data:{plan.HUB_DATA}:rw"]]
    daemon.listed = volumes[:1]
    with pytest.raises(plan.GateFailed, match="data volume was not found"):
        Upgrade(stack, None, lambda message: None, "").migrate("hub:new", lambda message: None)
