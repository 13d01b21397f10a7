"""Hostile verifier kinds for the pool tests: each misbehaves inside a worker process.

Registered on import; the workers import this module by name (they share our sys.path).
"""
import os
import signal
import time

from verifiers import register_verifier
from verifiers.result import full


@register_verifier("test_echo", isolation="worker")
def echo(completion, reference):
    return full(completion)


@register_verifier("test_hang", isolation="worker")
def hang(completion, reference):
    if completion == "hang":
        while True:
            time.sleep(0.01)
    return full(completion)


@register_verifier("test_crash", isolation="worker")
def crash(completion, reference):
    if completion == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if completion == "exit":
        os._exit(3)
    return full(completion)


@register_verifier("test_oom", isolation="worker")
def oom(completion, reference):
    if completion == "oom":
        # 8 GiB in one allocation: refused at once under the workers' RLIMIT_AS (4 GiB).
        block = bytearray(8 * 1024**3)
        return full(str(len(block)))
    return full(completion)
