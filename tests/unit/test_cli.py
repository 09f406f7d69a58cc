from __future__ import annotations

import pytest

from tmiot.cli import EXIT_USAGE, main


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["db"],
        ["db", "init"],
        ["services"],
        ["ingest"],
        ["stream"],
        ["triggers"],
        ["simulate"],
        ["demo"],
        ["evaluate"],
        ["record"],
        ["replay"],
    ],
)
def test_help_of_every_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    assert "usage: tmiot" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == EXIT_USAGE


def test_invalid_configuration_exits_2_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TMIOT_MQTT__PORT", "0")
    assert main(["services", "status"]) == EXIT_USAGE
    assert "mqtt.port (env TMIOT_MQTT__PORT)" in capsys.readouterr().err
