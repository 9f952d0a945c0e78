import ipaddress

import pytest

from webhooks.target_policy import TargetPolicy, TargetRefused

STRICT = TargetPolicy.create([], production=False)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://10.1.2.3/", "http://192.168.0.1/", "http://169.254.169.254/",
    "http://[::1]/", "http://[fd00:ec2::254]/", "http://0.0.0.0/", "http://224.0.0.1/",
    "http://[::ffff:127.0.0.1]/", "http://100.100.100.200/",
])
def test_private_literals_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        STRICT.check_url(url)


@pytest.mark.parametrize("url", [
    "ftp://example.com/", "http://user:pw@example.com/", "http:///nohost", "example.com",
    "http://example.com:0/", "http://example.com:99999/",
])
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        STRICT.check_url(url)


def test_localhost_resolves_to_loopback_and_is_refused() -> None:
    with pytest.raises(TargetRefused):
        STRICT.resolve("http://localhost:8080/hook")


def test_allow_list_admits_a_network() -> None:
    policy = TargetPolicy.create(["127.0.0.0/8"], production=False)
    assert policy.resolve("http://127.0.0.1:9/") == [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(TargetRefused):
        policy.check_url("http://10.0.0.1/")


def test_production_requires_https() -> None:
    policy = TargetPolicy.create([], production=True)
    with pytest.raises(TargetRefused, match="https"):
        policy.check_url("http://93.184.216.34/")
    assert policy.check_url("https://93.184.216.34/") == "93.184.216.34"
