"""config.py: defaults, the TOML file over them, and flags over that."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from collectord.config import CONFIG_ENV, SECTIONS, STREAM_FORMATS, Config, from_mapping, load
from collectord.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "collectord.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collectord.toml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def no_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)


# -- the documented defaults ---------------------------------------------------------


def test_repo_config_file_is_exactly_the_defaults() -> None:
    assert load(REPO_CONFIG) == Config()


def test_repo_config_file_documents_every_key_in_its_section() -> None:
    document = tomllib.loads(REPO_CONFIG.read_text())
    assert {section: tuple(table) for section, table in document.items()} == SECTIONS
    every_key = {key for keys in SECTIONS.values() for key in keys}
    assert every_key == {field.name for field in dataclasses.fields(Config)}


def test_no_file_means_defaults() -> None:
    assert load() == Config()


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, "")) == Config()


# -- a file over the defaults --------------------------------------------------------


def test_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            '[storage]\noutput = "/data/rig"\n[limits]\nreceive_queue = 5\n'
            "[stop]\nbarrier_timeout = 0.5\n",
        )
    )
    assert config == Config(output="/data/rig", receive_queue=5, barrier_timeout=0.5)


def test_integer_timeout_becomes_a_float(tmp_path: Path) -> None:
    config = load(write(tmp_path, "[stop]\nbarrier_timeout = 2\n"))
    assert config.barrier_timeout == 2.0
    assert isinstance(config.barrier_timeout, float)


def test_load_accepts_str_paths(tmp_path: Path) -> None:
    path = write(tmp_path, '[endpoints]\ndata = "ipc:///tmp/x"\n')
    assert load(str(path)).data == "ipc:///tmp/x"


# -- refused files ---------------------------------------------------------------------


def test_unknown_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown section \[endpoint\]"):
        load(write(tmp_path, '[endpoint]\ndata = "tcp://*:1"\n'))


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'ouput' in \[storage\]"):
        load(write(tmp_path, '[storage]\nouput = "/data"\n'))


def test_key_in_the_wrong_section_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'output' in \[endpoints\]"):
        load(write(tmp_path, '[endpoints]\noutput = "/data"\n'))


def test_top_level_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a table"):
        load(write(tmp_path, 'storage = "/data"\n'))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[endpoints]\ndata = 5555\n", "data"),
        ("[storage]\nlast_config = false\n", "last_config"),
        ('[limits]\nmax_message_bytes = "64M"\n', "max_message_bytes"),
        ("[limits]\nmax_message_bytes = 1.5\n", "max_message_bytes"),
        ("[limits]\nreceive_queue = true\n", "receive_queue"),
        ('[stop]\nbarrier_timeout = "3"\n', "barrier_timeout"),
        ("[stop]\nbarrier_timeout = true\n", "barrier_timeout"),
        ("[stop]\nbarrier_timeout = nan\n", "barrier_timeout"),
    ],
)
def test_wrong_type_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key} must be"):
        load(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[limits]\nmax_message_bytes = 0\n", "max_message_bytes"),
        ("[limits]\nreceive_queue = -1\n", "receive_queue"),
        ("[stop]\nbarrier_timeout = 0.0\n", "barrier_timeout"),
        ("[stop]\nbarrier_timeout = -2\n", "barrier_timeout"),
    ],
)
def test_non_positive_number_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key} must be .*positive"):
        load(write(tmp_path, text))


def test_a_message_size_too_small_for_a_header_is_refused(tmp_path: Path) -> None:
    """Below 1024 bytes a client could publish nothing at all (it keeps that
    much of each message for the header), and only said so at every call."""
    with pytest.raises(ConfigError, match=r"max_message_bytes must be at least 4096.*not 1000"):
        load(write(tmp_path, "[limits]\nmax_message_bytes = 1000\n"))
    assert load(write(tmp_path, "[limits]\nmax_message_bytes = 4096\n")).max_message_bytes == 4096


def test_unknown_stream_format_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stream_format must be one of .*'xlsx'"):
        load(write(tmp_path, '[streams]\nstream_format = "xlsx"\n'))


def test_every_stream_format_is_accepted(tmp_path: Path) -> None:
    for name in STREAM_FORMATS:
        config = load(write(tmp_path, f'[streams]\nstream_format = "{name}"\n'))
        assert config.stream_format == name


def test_text_keys_may_be_empty(tmp_path: Path) -> None:
    config = load(write(tmp_path, '[security]\nserver_key = ""\n[storage]\nlast_config = ""\n'))
    assert config == Config()


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[storage\noutput = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(path)


def test_a_config_file_not_in_utf8_is_named_not_a_traceback(tmp_path: Path) -> None:
    # An editor that saved a Windows path as Latin-1 ("C:\\Données").
    path = tmp_path / "latin1.toml"
    path.write_bytes('[storage]\noutput = "C:/Donn\u00e9es"\n'.encode("latin-1"))
    result = run_cli("run", "--config", str(path), "--output", str(tmp_path / "out"))
    assert result.returncode == 1
    assert f"collectord run: configuration {path} is not UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[limits]\nreceive_queue = 3000000000\n", "receive_queue must be at most 2147483647"),
        (
            "[limits]\nmax_message_bytes = 10000000000000000000\n",
            "max_message_bytes must be at most 9223372036854775807",
        ),
    ],
)
def test_a_limit_zeromq_cannot_take_is_named_not_a_traceback(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    result = run_cli("run", "--config", str(path), "--output", str(tmp_path / "out"),
                     "--data", "tcp://127.0.0.1:*", "--control", "tcp://127.0.0.1:*")  # fmt: skip
    assert result.returncode == 1
    assert f"collectord run: {path}: {message}, not " in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load(missing)
    assert str(missing) in str(caught.value)


def test_from_mapping_names_its_origin() -> None:
    with pytest.raises(ConfigError, match=r"^flags: unknown section \[x\]"):
        from_mapping({"x": {}}, origin="flags")


# -- $COLLECTORD_CONFIG ----------------------------------------------------------------


def test_environment_variable_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(write(tmp_path, '[storage]\noutput = "/from/env"\n')))
    assert load().output == "/from/env"


def test_explicit_path_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(write(tmp_path, '[storage]\noutput = "/from/env"\n')))
    explicit = tmp_path / "explicit.toml"
    explicit.write_text('[storage]\noutput = "/explicit"\n')
    assert load(explicit).output == "/explicit"


def test_environment_file_errors_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load()


def test_empty_environment_variable_means_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, "")
    assert load() == Config()


# -- Config itself --------------------------------------------------------------------


def test_replace_applies_changes_and_ignores_none() -> None:
    base = Config(output="/data")
    changed = base.replace(output=None, data="tcp://127.0.0.1:7000", last_config=None)
    assert changed == Config(output="/data", data="tcp://127.0.0.1:7000")
    assert base == Config(output="/data")  # frozen: the original is untouched


def test_replace_with_nothing_gives_an_equal_config() -> None:
    assert Config().replace() == Config()
    assert Config().replace(control=None) == Config()


def test_last_config_file_defaults_to_the_output_folder() -> None:
    assert Config(output="/data/rig").last_config_file == Path("/data/rig/last_config.json")


def test_last_config_file_can_be_elsewhere() -> None:
    config = Config(output="/data/rig", last_config="/etc/collectord/last.json")
    assert config.last_config_file == Path("/etc/collectord/last.json")


def test_home_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Config().output_dir == tmp_path / "collectord-data"
    assert Config().last_config_file == tmp_path / "collectord-data" / "last_config.json"
    assert Config(last_config="~/lc.json").last_config_file == tmp_path / "lc.json"


# -- the default ports -----------------------------------------------------------------

#: Ports of the ZeroMQ guide's examples and of the tools that copy them (stytra's
#: ZeroMQ trigger binds 5555 on every interface; Open Ephys' ZMQ interface uses
#: 5556): a default there fails with "Address already in use" beside them.
ZEROMQ_EXAMPLE_PORTS = range(5555, 5561)
#: Where systems take ports for outgoing connections (Linux 32768-60999, IANA,
#: Windows and macOS 49152-65535): a default there can be taken at random.
EPHEMERAL_PORTS = range(32768, 65536)


def default_ports() -> list[int]:
    return [int(endpoint.rsplit(":", 1)[1]) for endpoint in (Config().data, Config().control)]


def test_default_ports_stay_clear_of_zeromq_examples_and_ephemeral_ports() -> None:
    data, control = default_ports()
    assert data != control
    for port in (data, control):
        assert port not in ZEROMQ_EXAMPLE_PORTS
        assert port not in EPHEMERAL_PORTS
        assert port >= 1024


def test_the_readme_states_the_default_endpoints() -> None:
    readme = (REPO_CONFIG.parents[1] / "README.md").read_text()
    assert f"| `endpoints.data` | `{Config().data}` |" in readme
    assert f"| `endpoints.control` | `{Config().control}` |" in readme


def test_no_document_offers_the_old_default_ports() -> None:
    """Examples copied from the docs must not land on 5555 and 5556 either."""
    root = REPO_CONFIG.parents[1]
    for path in [root / "README.md", REPO_CONFIG, *sorted((root / "docs").glob("*.md"))]:
        for port in ZEROMQ_EXAMPLE_PORTS:
            assert f":{port}" not in path.read_text(), f"{path.name} uses port {port}"


# -- start_daemon (the stytra drop-in) -------------------------------------------------


def test_start_daemon_is_on_by_default_and_a_boolean(tmp_path: Path) -> None:
    assert Config().start_daemon is True
    assert load(write(tmp_path, "[stytra]\nstart_daemon = false\n")).start_daemon is False
    with pytest.raises(ConfigError, match=r"^start_daemon must be true or false"):
        load(write(tmp_path, '[stytra]\nstart_daemon = "no"\n'))


def test_required_sources_are_a_list_of_client_names(tmp_path: Path) -> None:
    assert Config().required == ()
    config = load(write(tmp_path, '[sources]\nrequired = ["camera", "tracking+tail"]\n'))
    assert config.required == ("camera", "tracking+tail")
    assert load(write(tmp_path, "[sources]\nrequired = []\n")).required == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"camera"', 'required must be a list of client names, e.g. ["camera", "tracking"], '),
        ("true", "required must be a list of client names"),
        ('["camera", 3]', "a name in required must be a string, not int"),
        ('["camera", ""]', "a name in required is empty"),
        ('["rig/camera"]', "a name in required 'rig/camera' contains a path separator"),
        ('["camera", "camera"]', "required names 'camera' twice"),
    ],
)
def test_bad_required_sources_are_refused_by_name(
    tmp_path: Path, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load(write(tmp_path, f"[sources]\nrequired = {value}\n"))
    assert message in str(refused.value)
