"""`./dev up`'s last step: the chat Service forwarded to a loopback port for the web client."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypersend_devenv import up

pytestmark = pytest.mark.unit


def test_the_forward_listens_on_loopback_only_and_targets_the_chat_service() -> None:
    argv = up.forward_argv(Path("/k/config"), "default", "dev", 41234)
    assert argv[1:] == [
        "--kubeconfig", "/k/config",
        "port-forward", "--address", "127.0.0.1", "-n", "default",
        "svc/dev-chat", f"41234:{up.CHAT_PORT}",
    ]  # fmt: skip
    assert argv[0].endswith("kubectl")


def test_the_dev_example_turns_the_web_client_on() -> None:
    # `./dev up` ends with the web client's URL, so the example it applies must serve it.
    assert up._example()["spec"]["chat"]["webClient"] is True
