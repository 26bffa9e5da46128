"""graphcheck opens no network connection: in these runs, every internet socket connect raises.

graphcheck runs the model in worker processes, so the guard is a ``sitecustomize`` module on the
PYTHONPATH of a real `python -m graphcheck` process: the command line, the forkserver and every
worker load it. Local sockets (AF_UNIX: the worker's pipe to graphcheck) are not the network.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

GUARD = '''
import os, socket

_LOG = os.environ["NETWORK_GUARD_LOG"]


def _refuse(what):
    def raiser(*args, **kwargs):
        with open(_LOG, "a") as handle:
            handle.write(f"{os.getpid()} {what} {args[1:]!r}\\n")
        raise OSError(f"network use refused by the test: {what}")
    return raiser


def _guarded(original, what):
    def connect(self, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            return _refuse(what)(self, *args)
        return original(self, *args, **kwargs)
    return connect


socket.socket.connect = _guarded(socket.socket.connect, "socket.connect")
socket.socket.connect_ex = _guarded(socket.socket.connect_ex, "socket.connect_ex")
socket.create_connection = _refuse("create_connection")
socket.getaddrinfo = _refuse("getaddrinfo")
'''


@pytest.fixture
def guarded(tmp_path):
    """Run `python -m graphcheck ...` with the guard; returns (run, attempts)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "attempts.log"
    log.write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "NETWORK_GUARD_LOG": str(log),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "graphcheck", *args, "--no-config"], capture_output=True,
                              text=True, timeout=300, env=env, cwd=tmp_path)
        return done, log.read_text()
    return run


def test_the_guard_works(guarded, tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import socket, torch\n\ndef build_model():\n"
                     "    socket.create_connection(('127.0.0.1', 9))\n    return torch.nn.Linear(2, 2)\n")
    done, attempts = guarded(str(probe))
    assert done.returncode == 2 and "network use refused" in done.stdout + done.stderr
    assert "create_connection" in attempts   # the worker was guarded too


def test_fixture_without_network(guarded):
    target = str(ROOT / "fixtures" / "params" / "detached-parameter" / "bad.py")
    done, attempts = guarded(target, "--format", "json", "--verify")
    assert attempts == ""
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["targets"][0]["status"] == "ok"


def test_transformers_model_without_network(guarded, tmp_path):
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
    done, attempts = guarded(f"{path}:build_model", "--loss", f"{path}:loss", "--format", "json", "--exit-zero")
    assert attempts == ""
    assert done.returncode == 0, done.stderr
    target = json.loads(done.stdout)["targets"][0]
    assert target["status"] == "ok", target.get("error")
    flagged = {p for f in target["findings"] if f["code"].startswith("GC1") for p in f["parameters"]}
    # The loss ignores the pooler output.
    assert flagged == {"pooler.dense.weight", "pooler.dense.bias"}
