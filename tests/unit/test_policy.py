"""Group policies as data (issue 28, part 1): a policy is read from a group's properties field by field, a bad
value is one line naming the group and the field, and a user in several groups gets the most generous value of
each. Nothing here is applied to a lab yet (see the module's docstring)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hub_ext.labs.policy import Policy, PolicyError, effective_policy, merge, parse_policy, size_bytes

DEFAULT = Policy(
    mem_limit="4G", cpu_limit=2.0, pids_limit=1024, gpus=0, images=("default",), default_image="default",
    idle_timeout=3600, max_session=0, home_quota="10G", workspace_quota="20G",
)  # fmt: skip
STUDENTS = {"hubforge": {"mem_limit": "2G", "images": ["default"], "idle_timeout": 1800, "home_quota": "2G"}}
RESEARCH = {
    "hubforge": {
        "mem_limit": "16G", "cpu_limit": 4, "gpus": 1, "images": ["default", "datascience"],
        "default_image": "datascience", "environment": {"DATA": "/mnt/groups/research"}, "folder": "rw",
        "idle_timeout": 0, "workspace_quota": "200G",
    }
}  # fmt: skip


def test_a_group_policy_is_read_from_its_properties():
    policy = parse_policy("research", RESEARCH)
    assert policy.mem_limit == "16G" and policy.cpu_limit == 4.0 and policy.gpus == 1
    assert policy.images == ("default", "datascience") and policy.default_image == "datascience"
    assert policy.folder == "rw" and policy.environment == {"DATA": "/mnt/groups/research"}
    assert policy.pids_limit is None  # not set: the default policy's applies


def test_a_group_without_a_policy_keeps_its_builtin_meaning():
    assert parse_policy("docker-sock", {}) == Policy(docker_sock=True)
    assert parse_policy("docker-privileged", None) == Policy(docker_privileged=True)
    assert parse_policy("students", {"other": 1}) == Policy()
    # an admin's own policy for a built-in group replaces its meaning
    assert parse_policy("docker-sock", {"hubforge": {"mem_limit": "8G"}}).docker_sock is False


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mem_limit": "lots"}, "policy of group 'g': mem_limit='lots' is not a size"),
        ({"mem_limt": "4G"}, "policy of group 'g': 'mem_limt' is not a policy field"),
        ({"cpu_limit": 0}, "cpu_limit=0 is not a number of CPUs greater than 0"),
        ({"pids_limit": 8}, "pids_limit=8 is not a whole number >= 16"),
        ({"gpus": "some"}, "gpus='some' is not a whole number >= 0"),
        ({"gpus": True}, "gpus=True is not a whole number >= 0"),
        ({"images": ["Data Science"]}, "images=['Data Science'] is not a list of lab image names"),
        ({"images": ["default"], "default_image": "datascience"}, "default_image='datascience' is not one of"),
        ({"environment": {"1BAD": "x"}}, "environment={'1BAD': 'x'} is not an object of NAME"),
        ({"folder": "yes"}, 'folder=\'yes\' is not valid; use "rw", "ro" or null'),
        ({"docker_sock": "true"}, "docker_sock='true' is not true or false"),
        ({"home_quota": True}, "home_quota=True is not a size"),
    ],
)
def test_a_bad_value_is_refused_in_one_line_naming_the_field(fields, message):
    with pytest.raises(PolicyError) as refused:
        parse_policy("g", {"hubforge": fields})
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_policy_that_is_not_an_object_is_refused():
    with pytest.raises(PolicyError, match=r"properties\['hubforge'\] is not an object"):
        parse_policy("g", {"hubforge": ["mem_limit", "4G"]})


def test_a_user_in_no_group_gets_the_default_policy():
    effective = merge(DEFAULT, {})
    assert effective.policy == DEFAULT and effective.folders == {} and effective.groups == ()


def test_a_user_in_one_group_gets_its_values_and_the_default_for_the_rest():
    effective = merge(DEFAULT, {"students": parse_policy("students", STUDENTS)})
    assert effective.policy.mem_limit == "2G"  # a group may give less than the default
    assert effective.policy.pids_limit == 1024 and effective.policy.workspace_quota == "20G"
    assert effective.policy.idle_timeout == 1800


def test_a_user_in_several_groups_gets_the_most_generous_of_each_value():
    """The docs' example: a student who is also in research."""
    effective = merge(
        DEFAULT,
        {
            "students": parse_policy("students", STUDENTS),
            "research": parse_policy("research", RESEARCH),
            "docker-sock": parse_policy("docker-sock", {}),
        },
    )
    policy = effective.policy
    assert policy.mem_limit == "16G" and policy.cpu_limit == 4.0 and policy.gpus == 1
    assert policy.images == ("datascience", "default")  # every image any group allows
    assert policy.default_image == "datascience"  # the first group by name that sets one: research
    assert policy.idle_timeout == 0  # never culled beats any timeout
    assert policy.home_quota == "2G" and policy.workspace_quota == "200G"  # the largest each group sets
    assert policy.docker_sock is True and policy.docker_privileged is False
    assert effective.folders == {"research": "rw"} and effective.groups == ("docker-sock", "research", "students")


def test_all_gpus_beat_a_count_and_sizes_compare_by_bytes():
    effective = merge(
        DEFAULT,
        {
            "a": Policy(gpus=2, mem_limit="1536M"),
            "b": Policy(gpus="all", mem_limit="1.5G"),
            "c": Policy(mem_limit="1G"),
        },
    )
    assert effective.policy.gpus == "all"
    assert size_bytes(effective.policy.mem_limit) == 1536 * 1024**2
    assert size_bytes("512M") < size_bytes("1G") < size_bytes("1073741825")


def test_environment_of_a_later_group_wins_a_clash_and_keeps_the_rest():
    effective = merge(
        Policy(environment={"A": "default", "B": "default"}),
        {"x": Policy(environment={"A": "x"}), "y": Policy(environment={"A": "y", "C": "y"})},
    )
    assert effective.policy.environment == {"A": "y", "B": "default", "C": "y"}


def test_the_effective_policy_of_a_hub_user_reads_their_groups():
    groups = [SimpleNamespace(name="research", properties=RESEARCH), SimpleNamespace(name="lab", properties={})]
    effective = effective_policy(DEFAULT, groups)
    assert effective.policy.mem_limit == "16G" and effective.folders == {"research": "rw"}
    with pytest.raises(PolicyError, match="policy of group 'bad'"):
        effective_policy(DEFAULT, [SimpleNamespace(name="bad", properties={"hubforge": {"gpus": -1}})])
