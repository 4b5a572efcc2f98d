"""Lab subdomains as settings and checks: the hub host, the certificate's names, and the DNS check of `invoke up`."""

from __future__ import annotations

import pytest

from hub_ext.settings.hub import ConfigError, certificate_names, from_environ, hub_host
from hubforge.deploy.settings import subdomain_dns_problem


def test_defaults_put_labs_under_hub_localhost():
    hub = from_environ({})
    assert hub.lab_subdomains and hub_host(hub) == "hub.localhost"
    assert certificate_names(hub) == ["hub.localhost", "*.hub.localhost", "localhost", "127.0.0.1"]


def test_a_public_host_is_normalised_and_checked():
    assert from_environ({"HUBFORGE_PUBLIC_HOST": "Hub.Example.ORG."}).public_host == "hub.example.org"
    for bad in ("https://hub.example.org", "hub.example.org:443", "hub_example.org", "hub example.org", "-a.org"):
        with pytest.raises(ConfigError, match="is not a host name"):
            from_environ({"HUBFORGE_PUBLIC_HOST": bad})


@pytest.mark.parametrize(
    ("host", "rule"),
    [
        ("localhost", "single label: browsers accept no wildcard certificate \\*.localhost"),
        ("myhub", "single label"),
        ("10.0.0.5", "is an IP address"),
    ],
)
def test_hosts_that_cannot_have_lab_subdomains_are_refused_with_both_choices(host, rule):
    with pytest.raises(ConfigError, match=rule) as refused:
        from_environ({"HUBFORGE_PUBLIC_HOST": host})
    assert "LAB_SUBDOMAINS=0" in str(refused.value)
    hub = from_environ({"HUBFORGE_PUBLIC_HOST": host, "LAB_SUBDOMAINS": "0"})  # the opt-out takes them
    assert "*." + host not in certificate_names(hub) and host in certificate_names(hub)


def test_dns_check_accepts_localhost_names_without_asking():
    asked = []
    assert subdomain_dns_problem("hub.localhost", lambda name: asked.append(name) or set()) is None
    assert asked == []


def test_dns_check_needs_the_wildcard_to_reach_the_hub():
    records = {"hub.example.org": {"192.0.2.7"}}
    problem = subdomain_dns_problem("hub.example.org", lambda name: records.get(name, set()))
    assert problem and "hubforge-dns-check.hub.example.org resolves to nothing" in problem
    assert "add a wildcard DNS record *.hub.example.org" in problem and "LAB_SUBDOMAINS=0" in problem
    records["hubforge-dns-check.hub.example.org"] = {"198.51.100.1"}
    assert "resolves to 198.51.100.1, not to hub.example.org (192.0.2.7)" in subdomain_dns_problem(
        "hub.example.org", lambda name: records.get(name, set())
    )
    records["hubforge-dns-check.hub.example.org"] = {"192.0.2.7"}
    assert subdomain_dns_problem("hub.example.org", lambda name: records.get(name, set())) is None


def test_dns_check_names_an_unresolvable_host():
    assert "does not resolve" in subdomain_dns_problem("hub.example.org", lambda name: set())
