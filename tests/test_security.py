"""Access control: loopback by default, CURVE with an allow-list beyond it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from collectord import Client, ConfigError, DaemonTimeout, load_json
from collectord.security import is_loopback, keygen


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://127.0.0.1:5555",
        "tcp://127.3.4.5:*",
        "tcp://localhost:5555",
        "tcp://[::1]:5555",
        "ipc:///tmp/x",
        "inproc://x",
    ],
)
def test_loopback_endpoints(endpoint: str) -> None:
    assert is_loopback(endpoint)


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://0.0.0.0:5555",
        "tcp://*:5555",
        "tcp://192.168.1.20:5555",
        "tcp://eth0:5555",
        "tcp://rig-pc.lab:5555",
        "udp://127.0.0.1:5",
    ],
)
def test_exposed_endpoints(endpoint: str) -> None:
    assert not is_loopback(endpoint)


def test_refuses_to_bind_beyond_loopback_without_curve(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "collectord",
            "run",
            "--output",
            str(tmp_path / "out"),
            "--data",
            "tcp://0.0.0.0:*",
            "--control",
            "tcp://127.0.0.1:*",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "refusing to bind tcp://0.0.0.0:* without authentication" in result.stderr
    assert not (tmp_path / "out").exists(), "nothing is written before refusing"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    allowed = tmp_path / "allowed"
    server_public, server_secret = keygen(tmp_path / "server", "daemon")
    client_public, client_secret = keygen(tmp_path / "client", "camera")
    _, stranger_secret = keygen(tmp_path / "stranger", "stranger")
    allowed.mkdir()
    (allowed / "camera.key").write_bytes(client_public.read_bytes())
    assert oct(server_secret.stat().st_mode & 0o777) == "0o600"
    return {
        "server_public": server_public,
        "server_secret": server_secret,
        "client_secret": client_secret,
        "stranger_secret": stranger_secret,
        "allowed": allowed,
    }


def write_config(path: Path, **security: Path) -> Path:
    lines = ["[security]"] + [f'{key} = "{value}"' for key, value in security.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_curve_lets_allowed_clients_in_and_keeps_others_out(
    make_daemon, keys, tmp_path: Path, figures
) -> None:
    server_config = write_config(
        tmp_path / "server.toml",
        server_key=keys["server_secret"],
        authorized_clients=keys["allowed"],
    )
    daemon = make_daemon(
        data="tcp://0.0.0.0:*", control="tcp://0.0.0.0:*", extra=("--config", str(server_config))
    )
    data = daemon.data.replace("0.0.0.0", "127.0.0.1")
    control = daemon.control.replace("0.0.0.0", "127.0.0.1")

    allowed = write_config(
        tmp_path / "camera.toml",
        client_key=keys["client_secret"],
        server_public_key=keys["server_public"],
    )
    stranger = write_config(
        tmp_path / "stranger.toml",
        client_key=keys["stranger_secret"],
        server_public_key=keys["server_public"],
    )

    with Client("camera", data, control, config=allowed) as client:
        client.set_params("camera/settings", exposure=4.0)
        client.sync()
        status = client.status()
        assert status["curve"] is True

        for config in (stranger, None):  # wrong key; no CURVE at all
            intruder = Client("intruder", data, control, config=config)
            intruder.set_params("camera/settings", exposure=999.0)
            with pytest.raises(DaemonTimeout):
                intruder.sync(timeout=1.0)
            with pytest.raises(DaemonTimeout):
                intruder.close(timeout=0.1)

        saved = load_json(client.stop())
    assert saved["camera"]["settings"] == {"exposure": 4.0}
    assert [s["name"] for s in saved["collectord"]["sources"]] == ["camera"]
    figures(intruders_tried=2, intruders_let_in=0, faults="a wrong key, and no key at all")

    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "collectord",
            "status",
            "--json",
            "--control",
            control,
            "--config",
            str(allowed),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr


def test_commands_without_keys_hint_that_the_daemon_may_use_curve(
    make_daemon, keys, tmp_path: Path, ipc
) -> None:
    server_config = write_config(
        tmp_path / "server.toml",
        server_key=keys["server_secret"],
        authorized_clients=keys["allowed"],
    )
    daemon = make_daemon(extra=("--config", str(server_config)))
    hint = "a daemon that uses CURVE keys needs --config FILE with [security] client_key"
    for command in (["status"], ["stop"], ["watch", "--once"]):
        result = run_cli(*command, "--control", daemon.control, "--timeout", "0.5")
        assert result.returncode == 1
        said = result.stdout + result.stderr  # watch shows it in its line
        assert "no collectord daemon answered" in said and hint in said, said

    # A command that has keys gets no hint: its keys are the daemon's, or wrong.
    client = write_config(
        tmp_path / "camera.toml",
        client_key=keys["client_secret"],
        server_public_key=keys["server_public"],
    )
    result = run_cli(
        "status", "--control", ipc("nobody"), "--timeout", "0.5", "--config", str(client)
    )
    assert result.returncode == 1
    assert "no collectord daemon answered" in result.stderr and "CURVE" not in result.stderr


def _run_exits(args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``collectord ARGS`` that must end by itself: a daemon that starts instead
    is killed after ``timeout`` and the test fails."""
    process = subprocess.Popen(
        [sys.executable, "-m", "collectord", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"collectord {args[0]} went on running: {stdout}{stderr}") from None
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def _curve_run(tmp_path: Path, config: Path) -> list[str]:
    return [
        "run",
        "--config",
        str(config),
        "--output",
        str(tmp_path / "out"),
        "--data",
        "tcp://127.0.0.1:*",
        "--control",
        "tcp://127.0.0.1:*",
    ]


def test_an_unreadable_key_in_the_allowed_folder_is_named_at_start(keys, tmp_path: Path) -> None:
    # The authenticator, given a folder with one file it cannot read, let no
    # client in at all (the allowed camera included) and only logged it.
    stray = keys["allowed"] / "notes.key"
    stray.write_text("the camera PC's key is camera.key\n")
    server_config = write_config(
        tmp_path / "server.toml",
        server_key=keys["server_secret"],
        authorized_clients=keys["allowed"],
    )
    result = _run_exits(_curve_run(tmp_path, server_config))
    assert result.returncode == 1
    assert f"cannot read authorized client key {stray}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists(), "nothing is written before refusing"


def _damaged(source: Path, target: Path) -> Path:
    """``source`` with five characters cut from its secret key."""
    text = source.read_text()
    start = text.index('secret-key = "') + len('secret-key = "')
    target.write_text(text[:start] + text[start + 5 :])
    return target


def test_a_damaged_server_key_is_named_not_a_traceback(keys, tmp_path: Path) -> None:
    damaged = _damaged(keys["server_secret"], tmp_path / "daemon.key_secret")
    server_config = write_config(
        tmp_path / "server.toml", server_key=damaged, authorized_clients=keys["allowed"]
    )
    result = _run_exits(_curve_run(tmp_path, server_config))
    assert result.returncode == 1
    assert f"server key {damaged}: its secret key is not a CURVE key" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists(), "nothing is written before refusing"


def test_a_damaged_client_key_is_named(daemon, keys, tmp_path: Path) -> None:
    damaged = _damaged(keys["client_secret"], tmp_path / "camera.key_secret")
    config = write_config(
        tmp_path / "camera.toml", client_key=damaged, server_public_key=keys["server_public"]
    )
    result = _run_exits(["status", "--control", daemon.control, "--config", str(config)])
    assert result.returncode == 1
    assert f"client key {damaged}: its secret key is not a CURVE key" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match="its secret key is not a CURVE key"):
        Client("camera", daemon.data, daemon.control, config=config)


def test_keygen_never_replaces_an_existing_key_pair(tmp_path: Path) -> None:
    # Run again (the README's steps, once more), it replaced the daemon's key:
    # every client holding the old public key was refused, silently.
    folder = tmp_path / "keys"
    first = _run_exits(["keygen", str(folder), "--name", "daemon"])
    assert first.returncode == 0, first.stderr
    pair = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert sorted(pair) == ["daemon.key", "daemon.key_secret"]
    again = _run_exits(["keygen", str(folder), "--name", "daemon"])
    assert again.returncode == 1
    assert f"collectord keygen: {folder / 'daemon.key'} exists" in again.stderr
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == pair
    outside = _run_exits(["keygen", str(folder), "--name", "../daemon"])
    assert outside.returncode == 1 and "key name" in outside.stderr
    assert not (tmp_path / "daemon.key").exists()
