"""graphcheck opens no network connection: every socket connect raises during these runs."""

from __future__ import annotations

import json
import pathlib
import socket
import textwrap

import pytest
from click.testing import CliRunner

from graphcheck.cli import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to connect (or resolve a name) raises, and is recorded."""
    attempts: list[str] = []

    def refuse(what):
        def raiser(*args, **kwargs):
            attempts.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
            raise NetworkUsed(f"graphcheck tried to use the network: {what}")
        return raiser

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket.socket, "sendto", refuse("socket.sendto"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    yield attempts
    assert not attempts, attempts


def test_the_guard_works(no_network):
    with pytest.raises(NetworkUsed):
        socket.create_connection(("127.0.0.1", 9))
    with pytest.raises(NetworkUsed):
        socket.socket().connect(("127.0.0.1", 9))
    no_network.clear()


def test_fixture_without_network(no_network):
    target = str(ROOT / "fixtures" / "params" / "detached-parameter" / "bad.py")
    outcome = CliRunner().invoke(cli, [target, "--no-config", "--format", "json", "--verify"])
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), outcome.output
    assert outcome.exit_code == 1, outcome.output
    assert json.loads(outcome.stdout)["targets"][0]["status"] == "ok"


def test_transformers_model_without_network(no_network, tmp_path):
    pytest.importorskip("transformers")
    path = tmp_path / "tiny_bert.py"
    path.write_text(textwrap.dedent("""
        import torch
        from transformers import BertConfig, BertModel

        def build_model():
            config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=16)
            model = BertModel(config)
            return model, (torch.randint(0, 64, (2, 8)),)

        def loss(out):
            return out.last_hidden_state.pow(2).mean()
        """))
    outcome = CliRunner().invoke(cli, [f"{path}:build_model", "--loss", f"{path}:loss", "--no-config",
                                       "--format", "json", "--exit-zero"])
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), outcome.output
    assert outcome.exit_code == 0, outcome.output
    target = json.loads(outcome.stdout)["targets"][0]
    assert target["status"] == "ok", target.get("error")
    flagged = {p for f in target["findings"] if f["code"].startswith("GC1") for p in f["parameters"]}
    # The loss ignores the pooler output.
    assert flagged == {"pooler.dense.weight", "pooler.dense.bias"}
