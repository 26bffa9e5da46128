"""Models whose code misbehaves the way real code can: it exits, crashes, hangs, starts threads, writes to
file descriptors, reads stdin. graphcheck must still end with a clear message and exit 2 (or, where the
model is fine apart from the noise, with its verdict), never a traceback or a wrong exit code."""

import ctypes
import os
import sys
import threading
import time

import torch


class _Net(torch.nn.Module):
    def __init__(self, misbehave=None):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.misbehave = misbehave

    def forward(self, x):
        if self.misbehave is not None:
            self.misbehave()   # the misbehaving line
        return self.layer(x)


def _inputs():
    return (torch.randn(3, 4),)


def sys_exit_0_in_forward():
    return _Net(lambda: sys.exit(0)), _inputs()


def sys_exit_3_in_forward():
    return _Net(lambda: sys.exit(3)), _inputs()


def os_exit_0_in_factory():
    os._exit(0)


def os_exit_5_in_forward():
    return _Net(lambda: os._exit(5)), _inputs()


def keyboard_interrupt_in_factory():
    raise KeyboardInterrupt


def segfault_in_forward():
    return _Net(lambda: ctypes.string_at(0)), _inputs()


def hangs_in_forward():
    def forever():
        if os.environ.get("HOSTILE_PID_FILE"):   # tests check that this process is gone afterwards
            with open(os.environ["HOSTILE_PID_FILE"], "w") as handle:
                handle.write(str(os.getpid()))
        while True:
            time.sleep(0.05)
    return _Net(forever), _inputs()


def reads_stdin_in_forward():
    return _Net(lambda: input("continue? ")), _inputs()


def memory_error_in_forward():
    def allocate():
        raise MemoryError()
    return _Net(allocate), _inputs()


def thread_and_fd_noise():
    """A healthy model whose factory starts a non-daemon thread and writes to fd 1 and 2 (exit 0 expected)."""
    threading.Thread(target=time.sleep, args=(600,)).start()
    os.write(1, b"noise on fd 1 {\n")
    os.write(2, b"noise on fd 2\n")
    print("print() noise")
    return _Net(), _inputs()


def child_process_noise():
    """A healthy model whose forward starts a child process that writes to stdout and lives on."""
    import subprocess
    subprocess.Popen([sys.executable, "-c", "import time; print('child noise', flush=True); time.sleep(600)"])
    return _Net(), _inputs()


def no_tensor_output():
    class Nothing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def forward(self, x):
            self.layer(x)
            return {"answer": 42}
    return Nothing(), _inputs()


def nan_loss():
    class Nan(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.layer(x) * float("nan")
    return Nan(), _inputs()
