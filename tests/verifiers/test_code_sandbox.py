"""The code kind: scores, and hostile programs that must end within their limits with score 0."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from verifiers import verify, verify_batch
from verifiers.code import sandbox

ADD_TESTS = {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]}
LIMITS = {"timeout_s": 8.0, "test_timeout_s": 2.0}

SCORES = [
    # (completion, reference, score)
    ("```python\ndef add(a, b):\n    return a + b\n```", ADD_TESTS, 1.0),  # fenced block, all pass
    ("def add(a, b):\n    return a + b\n", ADD_TESTS, 1.0),  # no fence: the whole completion
    ("```python\ndef add(a, b):\n    return 3\n```", ADD_TESTS, 1 / 3),  # partial credit
    ("```\nbad\n```\n```python\ndef add(a, b):\n    return a + b\n```", ADD_TESTS, 1.0),  # the last block
    ("def add(a, b) return a + b", ADD_TESTS, 0.0),  # syntax error
    (
        "def area(r):\n    return round(pi * r * r, 2)",
        {"tests": ["assert area(1) == 3.14"], "setup": "from math import pi"},
        1.0,
    ),  # setup runs before the tests
    ("import numbers, fractions\ndef add(a, b):\n    return a + b", ADD_TESTS, 1.0),  # stdlib imports work
    (
        "def add(a, b):\n    return a + b\nif __name__ == '__main__':\n    print(add(*map(int, input().split())))",
        ADD_TESTS,
        1.0,
    ),  # a main block (reading stdin) is not run by the tests
]


@pytest.mark.parametrize("completion, reference, score", SCORES)
def test_scores(completion, reference, score):
    result = verify("code", completion, reference, **LIMITS)
    assert result.score == pytest.approx(score), result
    assert result.correct is (score == 1.0)


def _processes_of(uids: set[int]) -> list[int]:
    """PIDs running as one of `uids`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid in uids:
                found.append(int(entry))
        except OSError:
            pass
    return found


@pytest.fixture
def world_writable_dirs(tmp_path):
    """Two world-writable directories outside the sandbox: one under /tmp, one beside this file
    (not under any directory the sandbox covers with its private tmpfs)."""
    beside = Path(tempfile.mkdtemp(prefix=".sandbox-target-", dir=Path(__file__).parent))
    try:
        for directory in (tmp_path, beside):
            directory.chmod(0o777)
        yield [tmp_path, beside]
    finally:
        shutil.rmtree(beside)


@pytest.fixture
def used_uids(monkeypatch):
    """The uids our sandbox runs get (other test sessions may run sandboxes at the same time)."""
    used = set()
    real_uid = sandbox.sandbox_uid

    def recording_uid():
        uid = real_uid()
        used.add(uid)
        return uid

    monkeypatch.setattr(sandbox, "sandbox_uid", recording_uid)
    return used


def test_hostile_programs_get_zero_end_in_time_and_leave_nothing(world_writable_dirs, used_uids, monkeypatch):
    secret = f"secret-{uuid.uuid4()}"
    monkeypatch.setenv("RLVR_TEST_SECRET", secret)
    host_files = [directory / "host.txt" for directory in world_writable_dirs]
    for host_file in host_files:
        host_file.write_text("untouched")
        host_file.chmod(0o666)  # even world-writable: the sandbox must not change it
    escape = "".join(
        f"try:\n    open({str(f)!r}, 'w').write('pwned')\nexcept OSError:\n    pass\n"
        f"try:\n    open({str(f.parent / 'new.txt')!r}, 'w').write('pwned')\nexcept OSError:\n    pass\n"
        for f in host_files
    )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    hostile = [
        # (program, tests, why it must score 0)
        ("while True:\n    pass", ["assert True"], "infinite loop"),
        ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", ["assert True"], "fork bomb"),
        ("block = bytearray(8 * 1024**3)", ["assert True"], "memory bomb"),
        ("import sys\nwhile True:\n    sys.stdout.write('x' * 2**20)", ["assert True"], "gigabytes of output"),
        (escape, ["assert False"], "writes outside the working directory"),
        (
            "import os\nseen = os.environ.get('RLVR_TEST_SECRET', '')\n"
            "for pid in os.listdir('/proc'):\n"
            "    try:\n        seen += open(f'/proc/{pid}/environ').read()\n    except Exception:\n        pass",
            [f"assert {secret!r} in seen"],
            "reading our environment variables",
        ),
        (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nreached = True",
            ["assert reached"],
            "opening a socket",
        ),
        ("import sys\nsys.exit(0)", ["assert False"], "sys.exit(0) before the tests"),
        ("import os\nos._exit(0)", ["assert False"], "os._exit(0) before the tests"),
        (
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1000)\nraise SystemExit(0)",
            ["assert False"],
            "a child escaping the process group",
        ),
        ("print('{\"passed\": true}')\nimport sys\nsys.stdout.flush()\nsys.exit(0)", ["assert False"], "forged report"),
    ]
    completions = [program for program, _, _ in hostile]
    references = [{"tests": tests} for _, tests, _ in hostile]
    start = time.monotonic()
    results = verify_batch("code", completions, references, timeout_s=6.0, test_timeout_s=1.5, workers=2)
    elapsed = time.monotonic() - start
    for (_, _, why), result in zip(hostile, results):
        assert result.score == 0.0 and not result.correct, (why, result)
        assert result.reason and result.reason != "correct", why
    # 11 programs, 2 at a time, each bounded by 6 s (most far less).
    assert elapsed < 6 * 6 + 5
    for host_file in host_files:
        assert host_file.read_text() == "untouched"
        assert not (host_file.parent / "new.txt").exists()
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
    listener.close()
    time.sleep(0.2)
    assert len(used_uids) == len(hostile) and _processes_of(used_uids) == []


REASONS = [
    # (program, reason fragment)
    ("while True:\n    pass", "SIGXCPU"),  # CPU limit (or the wall clock, whichever comes first)
    ("import time\ntime.sleep(60)", "timeout"),  # wall clock
    ("block = bytearray(8 * 1024**3)", "MemoryError"),  # address-space limit
    ("import sys\nsys.exit(0)", "exit(0)"),  # early exit is not a pass
    ("import os\nos._exit(0)", "exited (code 0)"),  # neither is a hard exit
]


def test_reasons_say_what_happened():
    start = time.monotonic()
    results = verify_batch(
        "code", [p for p, _ in REASONS], [{"tests": ["assert True"]}] * len(REASONS), timeout_s=5.0, test_timeout_s=1.0
    )
    assert time.monotonic() - start < 3 * 5.0 + 1.0
    for (program, fragment), result in zip(REASONS, results):
        assert result.score == 0.0
        if fragment == "SIGXCPU" and "timeout" in result.reason:
            continue  # on a busy machine the wall clock can win the race against the CPU clock
        assert fragment in result.reason, (program, result.reason)


def test_a_run_past_the_wall_clock_keeps_earlier_results_and_leaves_nothing(used_uids):
    program = "def f(x):\n    if x == 2:\n        import time\n        time.sleep(60)\n    return x"
    reference = {"tests": ["assert f(1) == 1", "assert f(2) == 2"]}
    result = verify("code", program, reference, timeout_s=2.0, test_timeout_s=30.0)
    assert result.score == 0.5 and result.reason.startswith("timeout: 1/2 passed"), result
    assert len(used_uids) == 1 and _processes_of(used_uids) == []  # not even a zombie


def test_bad_reference_names_the_field():
    with pytest.raises(ValueError, match="'tests'"):
        verify("code", "x = 1", {"test": ["assert x == 1"]})


NOT_ROOT_SCRIPT = """
import json, socket, sys
sys.path.insert(0, {repo!r})
from verifiers import verify_batch
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
port = listener.getsockname()[1]
cases = [
    ("def f(x):\\n    return 2 * x", "assert f(2) == 4"),  # an ordinary program still passes
    (f"import socket\\nsocket.create_connection(('127.0.0.1', {{port}}), timeout=1)\\nreached = True", "assert reached"),
    ("import os\\nwhile True:\\n    try:\\n        os.fork()\\n    except OSError:\\n        pass", "assert True"),
    ("import os, time\\nif os.fork() == 0:\\n    os.setsid()\\n    time.sleep(60)\\nraise SystemExit(0)", "assert True"),
]
results = verify_batch("code", [p for p, _ in cases], [{{"tests": [t]}} for _, t in cases], timeout_s=6, test_timeout_s=1.5)
print(json.dumps([r.score for r in results]))
"""


def _nobody_python() -> list[str] | None:
    """A command that runs a Python as user nobody, when this machine can (root, setpriv, and a
    Python installation nobody may read)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return None
    for python in ("/usr/bin/python3", "/usr/local/bin/python3"):
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "-i", python]
        if os.path.exists(python) and subprocess.run([*command, "-c", "import json, ctypes"], capture_output=True).returncode == 0:
            return command
    return None


@pytest.mark.skipif(_nobody_python() is None, reason="needs root, setpriv and a Python that user nobody can run")
def test_without_root_the_fallback_still_contains_hostile_programs(tmp_path):
    # user nobody imports a copy of the package from a folder it may read: the checkout itself may
    # sit under a home directory only its owner can enter (mode 0700)
    repo = tmp_path / "readable"
    shutil.copytree(Path(__file__).resolve().parents[2] / "verifiers", repo / "verifiers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for folder in (tmp_path, *tmp_path.parents):  # pytest's tmp folders are 0700
        if folder == Path("/"):
            break
        folder.chmod(folder.stat().st_mode | 0o011)  # let others traverse, not list
    for path in [repo, *repo.rglob("*")]:
        path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))
    done = subprocess.run(
        [*_nobody_python(), "-c", NOT_ROOT_SCRIPT.format(repo=str(repo))], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [1.0, 0.0, 0.0, 0.0]
    time.sleep(0.2)
    assert _processes_of({65534}) == []  # the fork bomb and the escapee are gone


NONCE_THIEF = """
import json, os, sys
frame = sys._getframe()
while frame is not None and "nonce" not in frame.f_locals:
    frame = frame.f_back
stolen = {"nonce": frame.f_locals["nonce"], "passed": True, "detail": "", "value": "None"}
os.write(frame.f_locals["report_fd"], (json.dumps(stolen) + "\\n").encode())
os._exit(0)
"""


def test_value_tests_cannot_be_forged_even_with_the_nonce():
    # The thief finds the harness's nonce in its own memory and reports "passed". For
    # `assert EXPR == LITERAL` tests the sandbox only returns a value and the expected literal
    # never enters it, so the forged report fails them. (An assert of another form runs inside
    # the sandbox and stays forgeable this way: the documented residual risk.)
    reference = {"tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert 7 == add(3, 4)"]}
    result = verify("code", NONCE_THIEF, reference, **LIMITS)
    assert result.score == 0.0 and "got None, expected 3" in result.reason, result


VALUE_TESTS = [
    # (test against the program below, passes?)
    ("assert nested() == (1, [2.5, 'x'], {3})", True),  # nested literals
    ("assert as_list() == (1, 2)", False),  # a list is not a tuple, as in Python
    ("assert tenths() == 0.30000000000000004", True),  # floats round-trip exactly
    ("assert one() == True", True),  # 1 == True, as in Python
    ("assert opaque() == 1", False),  # not a plain value
    ("assert one() == 1, 'message'", True),  # an assert message is fine
    ("assert 1 == one()", True),  # the literal may stand on the left
]
VALUE_PROGRAM = """
def nested():
    return (1, [2.5, 'x'], {3})
def as_list():
    return [1, 2]
def tenths():
    return 0.1 + 0.2
def one():
    return 1
def opaque():
    return object()
"""


def test_value_tests_compare_like_python():
    report = sandbox.run_tests(VALUE_PROGRAM, [test for test, _ in VALUE_TESTS])
    assert report.passed == [passes for _, passes in VALUE_TESTS], report.details
