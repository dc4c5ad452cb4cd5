"""``PROCESSHUB_*`` variables fill the options not given as flags (``hub.cli.apply_env``)."""

from __future__ import annotations

import argparse

import pytest

from hub.cli import CliError, apply_env, build_parser
from hub.cluster.messages import Address


def parsed(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    apply_env(args, env)
    return args


def test_a_node_takes_every_setting_from_the_environment() -> None:
    env = {
        "PROCESSHUB_NAME": "n1",
        "PROCESSHUB_HOST": "127.0.0.2",
        "PROCESSHUB_PORT": "7001",
        "PROCESSHUB_SEEDS": "127.0.0.1:7002,127.0.0.1:7003",
        "PROCESSHUB_HUBS": "orders, billing",
        "PROCESSHUB_APPS": "myapp.procs,myapp.more",
        "PROCESSHUB_PRESET": "local",
        "PROCESSHUB_CLUSTER": "prod",
        "PROCESSHUB_DASHBOARD": "off",
        "PROCESSHUB_LOG_LEVEL": "debug",
        "PROCESSHUB_COOKIE": " s3cret-s3cret-s3cret \n",
    }
    args = parsed(["node"], env)
    assert (args.name, args.host, args.port) == ("n1", "127.0.0.2", 7001)
    assert args.seeds == [[Address("127.0.0.1", 7002), Address("127.0.0.1", 7003)]]
    assert (args.hubs, args.apps) == (["orders", "billing"], ["myapp.procs", "myapp.more"])
    assert (args.preset, args.cluster, args.dashboard, args.log_level) == (
        "local",
        "prod",
        False,
        "DEBUG",
    )
    assert (args.cookie_file, args.cookie) == (None, "s3cret-s3cret-s3cret")


def test_flags_win_and_defaults_fill_the_rest() -> None:
    env = {"PROCESSHUB_PORT": "7001", "PROCESSHUB_HUBS": "x", "PROCESSHUB_COOKIE": "c" * 20}
    args = parsed(["node", "--port", "7005", "--hub", "y", "--cookie-file", "/c"], env)
    assert (args.port, args.hubs, args.cookie_file, args.cookie) == (7005, ["y"], "/c", None)
    args = parsed(["node"], {})
    assert (args.host, args.port, args.seeds, args.hubs, args.apps) == ("127.0.0.1", 0, [], [], [])
    assert (args.preset, args.cluster, args.dashboard, args.log_level) == (
        "lan",
        "processhub",
        True,
        "INFO",
    )


def test_the_queries_find_the_cluster_through_the_environment() -> None:
    args = parsed(["status"], {"PROCESSHUB_SEEDS": "127.0.0.1:7002,127.0.0.1:7003"})
    assert (args.node, args.timeout, args.log_level) == (Address("127.0.0.1", 7002), 5.0, "ERROR")
    env = {"PROCESSHUB_NODE": "127.0.0.1:7009", "PROCESSHUB_SEEDS": "127.0.0.1:7002"}
    env |= {"PROCESSHUB_TIMEOUT": "2.5", "PROCESSHUB_COOKIE_FILE": "/etc/cookie"}
    args = parsed(["children", "--tag", "vip"], env)
    assert (args.node, args.timeout, args.cookie_file) == (
        Address("127.0.0.1", 7009),
        2.5,
        "/etc/cookie",
    )
    args = parsed(["drain", "127.0.0.1:7004"], {})
    assert (args.node, args.timeout) == (Address("127.0.0.1", 7004), 60.0)
    args = parsed(["drain", "b", "--node", "127.0.0.1:7001"], {"PROCESSHUB_NODE": "127.0.0.1:1"})
    assert args.node == Address("127.0.0.1", 7001)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["node"], {"PROCESSHUB_TIMEOUT": "x"}, None),  # not an option of node: ignored
        (["status"], {"PROCESSHUB_TIMEOUT": "-1"}, "PROCESSHUB_TIMEOUT='-1': expected a positive"),
        (["node"], {"PROCESSHUB_PRESET": "wan"}, "PROCESSHUB_PRESET='wan': unknown preset"),
        (["status"], {"PROCESSHUB_NODE": "nowhere"}, "PROCESSHUB_NODE: expected HOST:PORT"),
        (["status", "--node", "127.0.0.1:9"], {"PROCESSHUB_LOG_LEVEL": "loud"}, "unknown log"),
    ],
)
def test_a_malformed_variable_is_named(
    argv: list[str], env: dict[str, str], message: str | None
) -> None:
    if message is None:
        parsed(argv, env)
        return
    with pytest.raises(CliError, match=message.replace("(", r"\(")) as caught:
        parsed(argv, env)
    assert caught.value.code == 2
