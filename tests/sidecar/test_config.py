"""The TOML config: defaults, strict validation that names file:line, key and reason, env overrides."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from sidecar import paths
from sidecar.cli import cli
from sidecar.config import DEFAULT_CONFIG, Config, load, parse
from sidecar.errors import ConfigError
from sidecar.ledger.config import PriceOverride
from sidecar.proxy.config import DEFAULT_PORT

CFG = Path("/etc/sidecar/config.toml")
ANTHROPIC = '[[providers]]\nname = "anthropic"\ntype = "anthropic"\n'


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        parse(text, CFG, {} if env is None else env)
    return e.value.message


def without_source(cfg: Config) -> Config:
    return dataclasses.replace(cfg, source=None)


# ------------------------------------------------------------------ defaults


def test_no_file_means_every_default(tmp_path: Path) -> None:
    cfg = load(tmp_path / "absent.toml", env={})

    assert cfg == Config()
    assert cfg.server.host == "127.0.0.1"
    assert cfg.server.port == DEFAULT_PORT == 8787
    assert cfg.server.unix_socket is None
    assert cfg.server.require_token is False
    assert [(p.name, p.type, p.base_url, p.keys) for p in cfg.providers] == [
        ("anthropic", "anthropic", "https://api.anthropic.com", ())
    ]
    assert cfg.pricing == {}
    assert cfg.usage.timezone is None


def test_the_commented_default_config_is_valid_and_means_the_defaults() -> None:
    cfg = parse(DEFAULT_CONFIG, CFG, {})

    assert without_source(cfg) == Config()
    assert cfg.source == CFG


def test_a_full_config_is_read() -> None:
    cfg = parse(
        """
[server]
host = "::1"
port = 9100
unix_socket = true
require_token = true
shutdown_grace_seconds = 2

[[providers]]
name = "anthropic"
type = "anthropic"
base_url = "http://127.0.0.1:9999/"
keys = ["keyring:work", "env:MY_KEY"]
connect_timeout = 3
read_timeout = 60.5

[pricing."claude-opus-4-8"]
input = 5
output = 25.0
cache_read = 0.5

[usage]
timezone = "Europe/Berlin"
""",
        CFG,
        {},
    )

    assert cfg.server.host == "::1"
    assert cfg.server.port == 9100
    assert cfg.server.unix_socket == ""  # true: the default path in the state dir
    assert cfg.server.require_token is True
    assert cfg.server.shutdown_grace_seconds == 2.0
    p = cfg.provider("anthropic")
    assert p.base_url == "http://127.0.0.1:9999"  # trailing slash dropped
    assert p.keys == ("keyring:work", "env:MY_KEY")
    assert (p.connect_timeout, p.read_timeout) == (3.0, 60.5)
    assert cfg.pricing == {"claude-opus-4-8": PriceOverride(5.0, 25.0, cache_read=0.5)}
    assert cfg.usage.timezone == "Europe/Berlin"


# ------------------------------------------------------------------ validation errors

ERRORS = [
    pytest.param(
        "[server]\nport = 8787\n\n[serverr]\nport = 1\n",
        4, "serverr", "unknown key (expected one of: budget, cache, claude_code, guardrails, limits, mcp, observability, policy, pricing, providers, routes, routing, server, sync, tools, usage)",
        id="unknown-top-level-section",
    ),
    pytest.param(
        "[server]\nport = 8787\nprot = 8788\n",
        3, "server.prot", "unknown key (expected one of: body_timeout_seconds, fast_path, header_timeout_seconds, host,",
        id="unknown-server-key",
    ),
    pytest.param("[server]\nport = true\n", 2, "server.port", "must be an integer, not a boolean", id="boolean-port"),
    pytest.param('[server]\nport = "8787"\n', 2, "server.port", "must be an integer, not a string", id="string-port"),
    pytest.param("[server]\nport = 87.87\n", 2, "server.port", "must be an integer, not a number", id="float-port"),
    pytest.param(
        '[server]\nhost = "127.0.0.1"\nrequire_token = "yes"\n',
        3, "server.require_token", "must be a boolean, not a string", id="string-bool",
    ),
    pytest.param("server = 1\n", 1, "server", "must be a table, not an integer", id="server-not-a-table"),
    pytest.param("[server]\nport = 70000\n", 2, "server.port", "70000 is not a port (0-65535)", id="port-too-big"),
    pytest.param("[server]\nport = -1\n", 2, "server.port", "-1 is not a port (0-65535)", id="port-negative"),
    pytest.param(
        "[server]\nshutdown_grace_seconds = -1\n",
        2, "server.shutdown_grace_seconds", "must not be negative", id="negative-grace",
    ),
    pytest.param(
        ANTHROPIC + '\n[[providers]]\nname = "work"\ntype = "anthropic"\n\n[[providers]]\nname = "work"\ntype = "anthropic"\n',
        10, "providers[2].name", "provider 'work' is defined twice", id="duplicate-provider",
    ),
    pytest.param(
        ANTHROPIC + '\n[[providers]]\nname = "azure"\ntype = "azure"\n',
        7, "providers[1].type", "'azure' is not supported (supported: anthropic, openai, openai-compatible, gemini, bedrock, vertex)", id="unsupported-type",
    ),
    pytest.param(
        ANTHROPIC + 'base_url = "ftp://example.com"\n',
        4, "providers[0].base_url", "'ftp://example.com' must be an http(s) URL", id="bad-base-url",
    ),
    pytest.param(
        ANTHROPIC + 'base_url = "api.anthropic.com"\n',
        4, "providers[0].base_url", "must be an http(s) URL", id="base-url-without-scheme",
    ),
    pytest.param(
        ANTHROPIC + 'keys = ["env:OK", "sk-ant-pasted-by-mistake"]\n',
        4, "providers[0].keys", "entry 1 ('sk-ant-pasted-by-mistake') must be 'keyring:NAME' or 'env:VAR'",
        id="bad-keys-entry",
    ),
    pytest.param(
        ANTHROPIC + 'keys = "keyring:anthropic"\n',
        4, "providers[0].keys", "must be an array, not a string", id="keys-not-an-array",
    ),
    pytest.param(
        '[[providers]]\ntype = "anthropic"\n', 1, "providers[0]", "missing required key 'name'", id="provider-without-name",
    ),
    pytest.param(
        ANTHROPIC + '\n[[providers]]\nname = "Work Account"\ntype = "anthropic"\n',
        6, "providers[1].name", "'Work Account' must be lower-case letters, digits", id="bad-provider-name",
    ),
    pytest.param(
        ANTHROPIC + "read_timeout = 0\n", 4, "providers[0].read_timeout", "must be a positive number of seconds",
        id="zero-timeout",
    ),
    pytest.param("providers = []\n", 1, "providers", "at least one provider is needed", id="no-providers"),
    pytest.param(
        '[pricing."claude-opus-4-8"]\ninput = 5.0\n',
        1, "pricing.claude-opus-4-8", "needs both 'input' and 'output'", id="pricing-missing-output",
    ),
    pytest.param(
        '[pricing."claude-a"]\ninput = 1\noutput = 2\n\n[pricing."claude-b"]\ninput = 1\noutput = -2\n',
        7, "pricing.claude-b.output", "a price must not be negative", id="negative-price-in-second-model",
    ),
    pytest.param(
        '[pricing."gpt-4.1"]\ninput = 2\noutput = 8\ncache_write = -0.5\n',
        4, 'pricing."gpt-4.1".cache_write', "a price must not be negative", id="negative-price-dotted-model",
    ),
    pytest.param(
        '[pricing."claude-x"]\ninput = 1\noutput = 2\ncache = 3\n',
        4, "pricing.claude-x.cache", "unknown key", id="unknown-pricing-key",
    ),
    pytest.param(
        '[usage]\ntimezone = "Mars/Olympus_Mons"\n',
        2, "usage.timezone", "'Mars/Olympus_Mons' is not an IANA time zone", id="bad-timezone",
    ),
    pytest.param("[server]\nport = 1\n\n[usage]\nport = 2\n", 5, "usage.port", "unknown key", id="key-in-wrong-table"),
]


@pytest.mark.parametrize(("text", "line", "key", "reason"), ERRORS)
def test_every_error_names_file_line_key_and_reason(text: str, line: int, key: str, reason: str) -> None:
    msg = error_of(text)

    assert msg.startswith(f"{CFG}:{line}: {key}: "), msg
    assert reason in msg
    assert "\n" not in msg


def test_invalid_toml_names_the_line() -> None:
    msg = error_of('[server]\nport = 8787\nhost = \n')

    assert msg.startswith(f"{CFG}:3: not valid TOML: ")
    assert "line 3" in msg


def test_without_a_file_name_the_error_says_config() -> None:
    with pytest.raises(ConfigError, match=r"^<config>:2: server\.port: "):
        parse("[server]\nport = false\n", None, {})


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_bytes(b"\xff\xfe[server]\n")

    with pytest.raises(ConfigError, match=rf"^{bad}: cannot read"):
        load(bad, env={})


# ------------------------------------------------------------------ environment


def test_claude_sidecar_port_overrides_the_file() -> None:
    cfg = parse("[server]\nport = 9000\n", CFG, {"CLAUDE_SIDECAR_PORT": "9123"})

    assert cfg.server.port == 9123


def test_claude_sidecar_port_zero_means_any_port_and_empty_means_unset() -> None:
    assert parse("", CFG, {"CLAUDE_SIDECAR_PORT": "0"}).server.port == 0
    assert parse("[server]\nport = 9000\n", CFG, {"CLAUDE_SIDECAR_PORT": ""}).server.port == 9000


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("http", "must be a port number, not 'http'"),
        ("80.5", "must be a port number, not '80.5'"),
        ("65536", "65536 is not a port (0-65535)"),
        ("-1", "-1 is not a port (0-65535)"),
    ],
)
def test_bad_claude_sidecar_port_is_named(value: str, reason: str) -> None:
    assert error_of("", {"CLAUDE_SIDECAR_PORT": value}) == f"CLAUDE_SIDECAR_PORT: {reason}"


def test_the_environment_is_read_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_SIDECAR_PORT", "9444")

    assert parse("").server.port == 9444


def test_home_puts_every_path_under_it(tmp_path: Path) -> None:
    p = paths.resolve({"CLAUDE_SIDECAR_HOME": str(tmp_path)})

    for f in (p.config_file, p.db_file, p.state_file, p.token_file, p.socket_file, p.log_file, p.cache_dir):
        assert f.is_relative_to(tmp_path), f
    assert len({p.config_dir, p.data_dir, p.state_dir, p.log_dir, p.cache_dir}) == 5


def test_claude_sidecar_config_names_the_file(tmp_path: Path) -> None:
    cfg_file = tmp_path / "elsewhere" / "my.toml"

    p = paths.resolve({"CLAUDE_SIDECAR_HOME": str(tmp_path / "home"), "CLAUDE_SIDECAR_CONFIG": str(cfg_file)})

    assert p.config_file == cfg_file
    assert p.state_file.is_relative_to(tmp_path / "home")


# ------------------------------------------------------------------ config show


RICH = """
[server]
port = 9100
unix_socket = true
require_token = true
shutdown_grace_seconds = 2.5

[[providers]]
name = "anthropic"
type = "anthropic"
base_url = "http://127.0.0.1:9999"
keys = ["env:WORK_KEY"]
read_timeout = 30

[[providers]]
name = "backup"
type = "anthropic"

[pricing."claude-opus-4-8"]
input = 5
output = 25
cache_write = 6.25

[pricing."gpt-4.1"]
input = 2
output = 8

[usage]
timezone = "America/New_York"
"""


@pytest.mark.parametrize("text", [pytest.param("", id="defaults"), pytest.param(RICH, id="rich")])
def test_config_show_round_trips(text: str, hermetic_env: Path) -> None:
    cfg_file = paths.resolve().config_file
    cfg_file.parent.mkdir(parents=True)
    cfg_file.write_text(text)

    result = CliRunner().invoke(cli, ["config", "show"])

    assert result.exit_code == 0, result.output
    shown = parse(result.stdout, None, {})
    assert shown == without_source(load(cfg_file, env={}))
    as_json = CliRunner().invoke(cli, ["config", "show", "--json"])
    assert json.loads(as_json.stdout) == tomllib.loads(result.stdout)


def test_config_show_is_the_effective_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_SIDECAR_PORT", "9555")

    result = CliRunner().invoke(cli, ["config", "show"])

    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.stdout)
    assert shown["server"]["port"] == 9555
    assert shown["providers"][0]["base_url"] == "https://api.anthropic.com"


def test_the_sync_section_names_its_keys_and_ranges(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[server]\nport = 9000\n\n[sync]\nurl = "https://central.example"\n')
    with pytest.raises(ConfigError) as e:
        load(path, env={})
    assert str(e.value).startswith(f"{path}:5: sync.url: unknown key (expected one of: enabled, poll_wait_seconds"), str(e.value)
    assert error_of("[sync]\nupload_batch = 5000\n").endswith("sync.upload_batch: must be between 1 and 1000 (the server takes at most 1000 records a call)")
    path.write_text("[sync]\npoll_wait_seconds = 5\nenabled = false\n")
    cfg = load(path, env={})
    assert (cfg.sync.poll_wait_seconds, cfg.sync.enabled, cfg.sync.upload_batch) == (5.0, False, 500)


def test_provider_options_are_checked_per_type() -> None:
    msg = error_of('[[providers]]\nname = "b"\ntype = "bedrock"\nregion = "us-east-1"\napi = "x"\n')
    assert msg.endswith(":5: providers[0].api: 'x' is not one of: auto, invoke, converse"), msg
    msg = error_of('[[providers]]\nname = "o"\ntype = "openai"\nregion = "us-east-1"\n')
    assert "providers[0].region: unknown key" in msg, msg
    msg = error_of('[[providers]]\nname = "b"\ntype = "bedrock"\n')
    assert msg.endswith("providers[0]: a provider of type 'bedrock' needs 'base_url' or 'region'"), msg


def test_routes_are_checked_against_the_providers() -> None:
    base = '[[providers]]\nname = "anthropic"\ntype = "anthropic"\n[[providers]]\nname = "o"\ntype = "openai"\n'
    msg = error_of(base + '[[routes]]\nname = "r"\ntargets = [{ provider = "nope" }]\n')
    assert "routes[0].targets[0].provider: no provider named 'nope' (defined: anthropic, o)" in msg, msg
    msg = error_of(base + '[[routes]]\nname = "r"\ntargets = [{ provider = "o" }]\n')
    assert "needs 'model': it cannot serve Claude model names" in msg, msg
    msg = error_of(base + '[[routes]]\nname = "r"\nmatch = { scenario = "bg" }\ntargets = [{ provider = "anthropic" }]\n')
    assert "routes[0].match.scenario: 'bg' is not a scenario" in msg, msg
    msg = error_of(base + '[[routes]]\nname = "r"\ntargets = []\n')
    assert "routes[0]: needs at least one entry in 'targets'" in msg, msg
    msg = error_of(base + '[routing.breaker]\nfailure_rate = 2\n')
    assert "routing.breaker.failure_rate: is a share of requests" in msg, msg
