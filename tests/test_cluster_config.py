"""[database] url and [cluster] node: parsed, checked, defaulted."""

from __future__ import annotations

import socket

import pytest

from b2bua.config import ConfigError, parse_config, parse_redis_url


def test_url_and_node_are_read() -> None:
    config = parse_config({"database": {"url": "redis://10.0.0.5:6380/3"},
                           "cluster": {"node": "a-1"}}, "/etc/b2bua/b.toml")
    assert config.database.url == "redis://10.0.0.5:6380/3"
    assert config.cluster.node == "a-1"


def test_embedded_default_has_no_url() -> None:
    config = parse_config({}, "/etc/b2bua/b.toml")
    assert config.database.url == "" and config.cluster.node == ""


def test_node_defaults_to_the_host_name_in_cluster_mode() -> None:
    config = parse_config({"database": {"url": "redis://127.0.0.1"}}, "/etc/b2bua/b.toml")
    assert config.cluster.node == socket.gethostname().split(".")[0]


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://", "redis://h:99999/0",
                                 "redis://h:6379/x"])
def test_bad_url_names_the_key(url: str) -> None:
    with pytest.raises(ConfigError, match="database.url"):
        parse_config({"database": {"url": url}}, "/etc/b2bua/b.toml")


def test_bad_node_name_names_the_key() -> None:
    with pytest.raises(ConfigError, match="cluster.node"):
        parse_config({"database": {"url": "redis://h"}, "cluster": {"node": "a b"}}, "/x.toml")


def test_parse_redis_url() -> None:
    assert parse_redis_url("redis://127.0.0.1") == ("127.0.0.1", 6379, 0)
    assert parse_redis_url("redis://[::1]:7000/2") == ("::1", 7000, 2)
