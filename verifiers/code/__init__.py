"""The `code` kind: run a candidate Python program against test cases in a sandbox."""
from verifiers.code.sandbox import SandboxLimits, SandboxReport, run_tests
from verifiers.code.verifier import verify_code

__all__ = ["SandboxLimits", "SandboxReport", "run_tests", "verify_code"]
