"""The exit-code contract: a finished analysis exits 0 or 1, every other ending exits 2 with one message.

Each case runs graphcheck the way CI does, in a subprocess (`python -m graphcheck`), on a model from
tests/hostile_models.py whose code exits, crashes, hangs, reads stdin or writes to file descriptors.
The user's code runs in a worker process: it cannot end graphcheck, take its exit code or corrupt
its stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).with_name("hostile_models.py")
ROOT = Path(__file__).resolve().parent.parent


def _env(**extra) -> dict:
    """The environment of a user's CI: no test-only preloading of transformers."""
    env = {key: value for key, value in os.environ.items() if key != "GRAPHCHECK_PRELOAD"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _graphcheck(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = _env()
    return subprocess.run([sys.executable, "-m", "graphcheck", *args, "--no-config"], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or ROOT, env=env, stdin=subprocess.PIPE)


# factory -> (words the message must hold, the user's line it must name or None)
FAULTS = {
    "sys_exit_0_in_forward": (["sys.exit(0)", "running forward"], None),
    "sys_exit_3_in_forward": (["sys.exit(3)", "running forward"], None),
    "os_exit_0_in_factory": (["exit status 0", "running the factory"], None),
    "os_exit_5_in_forward": (["exit status 5", "running forward"], None),
    "keyboard_interrupt_in_factory": (["KeyboardInterrupt"], None),
    "segfault_in_forward": (["segmentation fault", "running forward"], "hostile_models.py:22"),
    "hangs_in_forward": (["timed out after 3 s", "running forward"], "hostile_models.py"),
    "memory_error_in_forward": (["memory"], None),
}


@pytest.mark.parametrize("factory", sorted(FAULTS))
def test_every_fault_exits_2_with_one_message_and_no_traceback(factory):
    words, line = FAULTS[factory]
    run = _graphcheck(f"{MODELS}:{factory}", "--timeout", "3", "--format", "json")
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    report = json.loads(run.stdout)   # stdout is the report, and it parses
    target = report["targets"][0]
    assert target["status"] == "error"
    for word in words:
        assert word in target["error"], target["error"]
    if line:
        assert line in target["error"], target["error"]
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout
    assert run.stderr.count("graphcheck: error:") == 1, run.stderr


def test_input_in_forward_reads_end_of_file_instead_of_hanging():
    run = _graphcheck(f"{MODELS}:reads_stdin_in_forward", "--timeout", "60")
    assert run.returncode == 2
    assert "EOFError" in run.stdout + run.stderr


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_noise_at_the_file_descriptor_level_never_reaches_the_report(fmt):
    """A non-daemon thread, os.write(1, ...), print(): the report parses, the exit code is the verdict."""
    run = _graphcheck(f"{MODELS}:thread_and_fd_noise", "--format", fmt, timeout=60)
    assert run.returncode == 0, run.stderr
    json.loads(run.stdout)
    for noise in ("noise on fd 1", "noise on fd 2", "print() noise"):
        assert noise not in run.stdout and noise not in run.stderr


def test_debug_shows_what_the_model_printed_on_stderr():
    run = _graphcheck(f"{MODELS}:thread_and_fd_noise", "--debug", timeout=60)
    assert run.returncode == 0
    for noise in ("noise on fd 1", "noise on fd 2", "print() noise"):
        assert noise in run.stderr and noise not in run.stdout


def test_a_child_process_the_model_starts_is_ended_with_the_worker():
    run = _graphcheck(f"{MODELS}:child_process_noise", "--format", "json", timeout=60)
    assert run.returncode == 0, run.stderr
    json.loads(run.stdout)
    alive = subprocess.run(["pgrep", "-f", "child noise"], capture_output=True, text=True)
    assert alive.stdout.strip() == "", "the model's child process outlived graphcheck"


def test_timeout_zero_turns_it_off_and_a_config_timeout_applies(tmp_path):
    config = tmp_path / "pyproject.toml"
    config.write_text(f'[tool.graphcheck]\ntimeout = 2\ntargets = ["{MODELS}:hangs_in_forward"]\n')
    env = _env()
    run = subprocess.run([sys.executable, "-m", "graphcheck"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=env)
    assert run.returncode == 2 and "timed out after 2 s" in run.stdout, run.stdout + run.stderr


def test_no_bytecode_cache_is_left_next_to_the_target(tmp_path):
    model = tmp_path / "net.py"
    model.write_text("import torch\n\ndef build_model():\n    return torch.nn.Linear(2, 2), (torch.randn(1, 2),)\n")
    run = _graphcheck(f"{model}", timeout=60)
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "__pycache__").exists()


def test_jobs_keep_the_order_given_and_mix_verdicts():
    targets = [f"{MODELS}:os_exit_5_in_forward", f"{MODELS}:thread_and_fd_noise", f"{MODELS}:sys_exit_3_in_forward"]
    run = _graphcheck(*targets, "-j", "2", "--format", "json", timeout=120)
    report = json.loads(run.stdout)
    assert [t["target"] for t in report["targets"]] == targets
    assert [t["status"] for t in report["targets"]] == ["error", "ok", "error"]
    assert run.returncode == 2


def test_output_into_a_missing_folder_is_refused_before_the_analysis(tmp_path):
    run = _graphcheck(f"{MODELS}:hangs_in_forward", "-o", str(tmp_path / "missing" / "report.json"), timeout=30)
    assert run.returncode == 2 and "does not exist" in run.stderr


def test_a_finished_analysis_exits_0_or_1():
    assert _graphcheck(f"{MODELS}:thread_and_fd_noise", timeout=60).returncode == 0
    bad = ROOT / "fixtures" / "params" / "detached-parameter" / "bad.py"
    assert _graphcheck(str(bad), timeout=60).returncode == 1


def test_help_imports_no_torch_and_the_parent_never_does():
    code = ("import sys, runpy\nsys.argv = ['graphcheck', " + repr(f"{MODELS}:thread_and_fd_noise") + ", '--no-config']\n"
            "from graphcheck import cli\n"
            "try:\n    cli.cli(prog_name='graphcheck')\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if any(m == 'torch' for m in sys.modules) else 'NO-TORCH', file=sys.stderr)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_env(), cwd=ROOT)
    assert "NO-TORCH" in run.stderr, run.stderr


def test_ctrl_c_stops_the_workers_and_exits_2_interrupted(tmp_path):
    import signal
    import time
    pid_file = tmp_path / "worker.pid"
    env = _env(HOSTILE_PID_FILE=str(pid_file))
    process = subprocess.Popen([sys.executable, "-m", "graphcheck", f"{MODELS}:hangs_in_forward", "--timeout", "0",
                                "--no-config"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=ROOT)
    for _ in range(120):   # until the worker is in forward's endless loop
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, (stdout, stderr)
    assert "interrupted" in stderr and "Traceback" not in stderr and "Aborted" not in stderr
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):   # the worker is gone with graphcheck
        os.kill(int(pid_file.read_text()), 0)


def test_an_output_without_tensors_is_said_as_such():
    run = _graphcheck(f"{MODELS}:no_tensor_output", timeout=60)
    assert run.returncode == 2
    assert "output holds no tensor" in run.stdout + run.stderr and "GC102" not in run.stdout


def test_a_nan_loss_is_reported_as_a_warning():
    run = _graphcheck(f"{MODELS}:nan_loss", "--format", "json", timeout=60)
    assert run.returncode == 0, run.stderr
    target = json.loads(run.stdout)["targets"][0]
    assert any("the loss is nan" in w for w in target["warnings"])
    assert "graphcheck: warning:" in run.stderr and "the loss is nan" in run.stderr


def test_a_target_file_without_the_py_suffix_is_read_as_python_and_a_folder_is_refused(tmp_path):
    script = tmp_path / "train"
    script.write_text("import torch\n\ndef build_model():\n    return torch.nn.Linear(2, 2), (torch.randn(1, 2),)\n")
    assert _graphcheck(f"{script}:build_model", timeout=60).returncode == 0
    folder = _graphcheck(str(tmp_path), timeout=60)
    assert folder.returncode == 2 and "is a folder" in folder.stderr + folder.stdout
