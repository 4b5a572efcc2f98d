"""Lab networks as data: names, subnet allocation, settings and the network guard's rules."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from hub_ext.helpers.netguard import parse_args
from hub_ext.labs.networks import (
    chain_names,
    free_subnet,
    guard_rules,
    network_spec,
    pool_capacity,
    upstream_resolvers,
    used_subnets,
)
from hub_ext.labs.policy import Policy
from hub_ext.labs.runtime import lab_runtime
from hub_ext.naming import lab_network_name, user_names
from hub_ext.settings.hub import ConfigError, from_environ

POOL = ip_network("10.213.0.0/16")


def test_the_first_free_slash_29_is_taken():
    assert free_subnet(POOL, []) == ip_network("10.213.0.0/29")
    assert free_subnet(POOL, [ip_network("10.213.0.0/29")]) == ip_network("10.213.0.8/29")
    # a network that is not hubforge's but overlaps the pool is skipped too, whatever its size
    assert free_subnet(POOL, [ip_network("10.213.0.0/24")]) == ip_network("10.213.1.0/29")
    assert free_subnet(POOL, [ip_network("172.17.0.0/16")]) == ip_network("10.213.0.0/29")
    assert free_subnet(POOL, [], skip=[ip_network("10.213.0.0/29")]) == ip_network("10.213.0.8/29")


def test_a_full_pool_says_so():
    small = ip_network("10.9.0.0/28")
    assert pool_capacity(small) == 2 and pool_capacity(POOL) == 8192
    assert free_subnet(small, list(small.subnets(new_prefix=29))) is None


def test_used_subnets_reads_docker_listings_and_skips_ipv6():
    listing = [
        {"Name": "bridge", "IPAM": {"Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]}},
        {"Name": "host", "IPAM": {"Config": []}},
        {"Name": "v6", "IPAM": {"Config": [{"Subnet": "fd00::/64"}, {"Subnet": "10.213.0.8/29"}]}},
        {"Name": "none", "IPAM": None},
    ]
    assert used_subnets(listing) == [ip_network("172.17.0.0/16"), ip_network("10.213.0.8/29")]


def test_network_spec_puts_the_gateway_first():
    assert network_spec(ip_network("10.213.0.8/29")) == {"subnet": "10.213.0.8/29", "gateway": "10.213.0.9"}


@pytest.mark.parametrize("project", ["hubforge", "staging", "a", "team-1", "x_y"])
@pytest.mark.parametrize("user", ["alice", "first.last", "zoë", "a-b", "0"])
def test_lab_networks_sort_after_the_stack_network(project, user):
    """Docker routes a multi-network container through the network whose name sorts first: the hub's own."""
    stack = f"{project}_net"
    lab = lab_network_name(stack, user)
    assert sorted([lab, stack])[0] == stack
    assert lab != lab_network_name(stack, user + "x")


def test_distinct_users_get_distinct_networks():
    names = {lab_network_name("hubforge_net", u) for u in ("alice", "Alice".lower() + "-", "a.lice", "alice_net")}
    assert len(names) == 4


def test_settings_defaults_and_errors():
    hub = from_environ({})
    assert hub.lab_subnet_pool == "10.213.0.0/16" and hub.lab_allowed_ranges == () and hub.lab_network_guard
    hub = from_environ(
        {"LAB_SUBNET_POOL": "10.50.0.0/20", "LAB_ALLOWED_RANGES": "10.1.2.0/24, 192.168.5.10", "LAB_NETWORK_GUARD": "0"}
    )
    assert hub.lab_subnet_pool == "10.50.0.0/20"
    assert hub.lab_allowed_ranges == ("10.1.2.0/24", "192.168.5.10/32") and not hub.lab_network_guard
    for env, message in [
        ({"LAB_SUBNET_POOL": "10.0.0.1/16"}, "LAB_SUBNET_POOL='10.0.0.1/16' is not an IPv4 network"),
        ({"LAB_SUBNET_POOL": "10.0.0.0/29"}, "too small"),
        ({"LAB_SUBNET_POOL": "fd00::/48"}, "too small or not IPv4"),
        ({"LAB_ALLOWED_RANGES": "10.1.2.0/24,nope"}, "LAB_ALLOWED_RANGES: 'nope' is not an IPv4 network"),
        ({"LAB_ALLOWED_RANGES": "fd00::/8"}, "is IPv6"),
        ({"LAB_NETWORK_GUARD": "maybe"}, "LAB_NETWORK_GUARD='maybe' is not valid"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            from_environ(env)


def test_chain_names_fit_iptables_and_stay_unique():
    for project in ("hubforge", "a" * 60, "a" * 59 + "b"):
        for chain in chain_names(project):
            assert len(chain) <= 28
    assert chain_names("a" * 60) != chain_names("a" * 59 + "b")


def rule_index(rules, *fragment):
    return next(i for i, rule in enumerate(rules) if " ".join(fragment) in " ".join(rule))


def test_guard_rules_return_before_they_reject():
    rules = guard_rules(
        "hubforge", POOL, [ip_network("10.1.2.0/24")], published=[(443, 8443)], resolvers=["10.255.255.53"]
    )
    for chain in (rules.forward, rules.local):
        assert chain[0] == ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN")
        first_reject = rule_index(chain, "-j REJECT")
        assert rule_index(chain, "--dport 53") < first_reject  # the daemon's resolver may forward to a private address
        assert rule_index(chain, "-d 10.1.2.0/24 -j RETURN") < first_reject
        assert all("ACCEPT" not in rule for rule in chain)  # Docker's own isolation always has its say
        for blocked in ("169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"):
            assert rule_index(chain, f"-d {blocked} -j REJECT") >= first_reject
    # through the host to the lab's own network (where the hub is) and to published ports; never to the host itself
    assert rule_index(rules.forward, "-d 10.213.0.0/16 -j RETURN") < rule_index(rules.forward, "-j REJECT")
    assert rule_index(rules.forward, "--ctstate DNAT --ctorigdstport 443") < rule_index(rules.forward, "-j REJECT")
    assert not any("10.213.0.0/16 -j RETURN" in " ".join(r) for r in rules.local)
    assert not any("DNAT" in " ".join(r) for r in rules.local)


def test_a_pool_outside_the_private_ranges_is_still_kept_off_the_host():
    rules = guard_rules("hubforge", ip_network("198.18.0.0/16"))
    assert any(" ".join(r).startswith("-d 198.18.0.0/16 -j REJECT") for r in rules.local)


def test_restore_script_and_jumps():
    rules = guard_rules("staging", POOL)
    script = rules.restore_script()
    assert script.startswith("*filter\n:HF-staging-FWD - [0:0]\n:HF-staging-IN - [0:0]\n") and script.endswith(
        "COMMIT\n"
    )
    assert "-A HF-staging-FWD -d 169.254.0.0/16 -p tcp -j REJECT --reject-with tcp-reset" in script
    assert rules.jumps() == (
        ("DOCKER-USER", ("-s", "10.213.0.0/16", "-j", "HF-staging-FWD")),
        ("INPUT", ("-s", "10.213.0.0/16", "-j", "HF-staging-IN")),
    )


def test_guard_arguments_are_checked():
    args = parse_args(["--project", "p", "--pool", "10.213.0.0/16", "--allow", "10.1.0.0/16"])
    assert args.pool == ip_network("10.213.0.0/16") and args.allow == [ip_network("10.1.0.0/16")]
    with pytest.raises(SystemExit):
        parse_args(["--project", "p", "--pool", "not-a-network"])


def test_labs_get_ipv6_off_when_asked():
    names = user_names("jupyterlab", "alice")
    on = lab_runtime(names=names, policy=Policy(pids_limit=64), shared_volume="s", disable_ipv6=True)
    off = lab_runtime(names=names, policy=Policy(pids_limit=64), shared_volume="s")
    assert on.host_config["sysctls"] == {"net.ipv6.conf.all.disable_ipv6": "1"}
    assert "sysctls" not in off.host_config


def test_on_swarm_the_guard_matches_what_leaves_through_the_gateway_bridge():
    # a lab's packets off its overlay come from docker_gwbridge's own addresses, not from the pool
    rules = guard_rules("staging", ip_network("10.213.0.0/16"), interface="docker_gwbridge")
    assert rules.jumps() == (
        ("DOCKER-USER", ("-i", "docker_gwbridge", "-j", "HF-staging-FWD")),
        ("INPUT", ("-i", "docker_gwbridge", "-j", "HF-staging-IN")),
    )
    assert rules.forward == guard_rules("staging", ip_network("10.213.0.0/16")).forward  # the same decisions


def test_only_the_stacks_published_ports_pass_after_dnat():
    """Issue 25, part 9: a forward on the host (libvirt, kube-proxy, the Swarm ingress, one by hand) is no way out."""
    rules = guard_rules("hubforge", POOL, published=[(443, 8443), (80, 8080)])
    dnat = [r for r in rules.forward if "DNAT" in r]
    assert dnat == [
        (
            "-p",
            "tcp",
            "--dport",
            "8080",
            "-m",
            "conntrack",
            "--ctstate",
            "DNAT",
            "--ctorigdstport",
            "80",
            "-j",
            "RETURN",
        ),
        (
            "-p",
            "tcp",
            "--dport",
            "8443",
            "-m",
            "conntrack",
            "--ctstate",
            "DNAT",
            "--ctorigdstport",
            "443",
            "-j",
            "RETURN",
        ),
    ]
    assert not any("DNAT" in r for r in guard_rules("hubforge", POOL).forward)  # nothing published: no DNAT passes


def test_dns_goes_only_to_the_hosts_resolvers():
    rules = guard_rules("hubforge", POOL, resolvers=["10.255.255.53", "192.168.1.1"])
    for chain in (rules.forward, rules.local):
        dns = [r for r in chain if "53" in r]
        assert dns == [
            ("-d", f"{a}/32", "-p", p, "--dport", "53", "-j", "RETURN")
            for a in ("10.255.255.53", "192.168.1.1")
            for p in ("udp", "tcp")
        ]
    assert not any("53" in r for r in guard_rules("hubforge", POOL).local)  # no resolver known: no port 53 at all
    assert ("-p", "udp", "--dport", "53", "-j", "RETURN") in guard_rules("hubforge", POOL, resolvers=None).local


@pytest.mark.parametrize(
    "resolv_conf, upstream, expected",
    [
        ("nameserver 10.255.255.53\n", None, ("10.255.255.53",)),
        (
            "# comment\nnameserver 192.168.1.1\nnameserver 127.0.0.1\nnameserver fd00::1\nsearch lan\n",
            None,
            ("192.168.1.1",),
        ),
        (
            "nameserver 127.0.0.53\noptions edns0\n",
            "nameserver 192.168.1.1\nnameserver 1.1.1.1\n",
            ("192.168.1.1", "1.1.1.1"),
        ),
        ("nameserver 127.0.0.53\n", None, None),  # systemd-resolved's stub, its upstream file not mounted: unknown
        ("", None, ()),
    ],
)
def test_upstream_resolvers_are_what_dockers_embedded_dns_forwards_to(resolv_conf, upstream, expected):
    assert upstream_resolvers(resolv_conf, upstream) == expected


def test_the_guard_takes_published_ports_and_resolvers():
    args = parse_args(
        [
            "--project",
            "p",
            "--pool",
            "10.213.0.0/16",
            "--publish",
            "443:8443",
            "--publish",
            "80:8080",
            "--resolver",
            "10.0.0.2",
        ]
    )
    assert args.publish == [(443, 8443), (80, 8080)] and [str(a) for a in args.resolver] == ["10.0.0.2"]
    for bad in ("x:1", "0:8443", "443:70000"):
        with pytest.raises(SystemExit):
            parse_args(["--project", "p", "--pool", "10.213.0.0/16", "--publish", bad])


def test_the_swarm_guard_never_exempts_the_registrys_port():
    from hubforge.deploy.swarm import guard_command

    command = guard_command("p", from_environ({}), "docker_gwbridge", 443, 80)
    args = parse_args(command[3:])
    assert args.publish == [(443, 8443), (80, 8080)] and args.interface == "docker_gwbridge"
    # the registry publishes 5000 (container port 5000): a DNAT to it never matches a rule made from these pairs
    forward = guard_rules("p", args.pool, published=args.publish).forward
    assert not any("5000" in r for r in forward)
