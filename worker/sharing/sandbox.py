"""Share calls for suspect chat-days, one at a time, in a separate process.

With the threads pool a task that crashes its process (a segfault, an OOM kill) takes every
other in-flight task down with it, and each of those chat-days loses a claim. Retrying them
all together would let one poison chat keep killing the others until they all hit the poison
limit. So a chat-day that has lost a claim is retried through this sandbox: a long-lived child
process that makes one share call at a time. If it dies, the chat it was calling is the only
suspect, the worker survives, and the crash is charged to that chat alone.

Protocol: JSON lines. Parent writes {"chat_id": ...}; child answers {"status", "trace_id"} or
{"error": {...LinqCallError fields}}. EOF from the child means it died during that call.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import uuid
from typing import IO, TYPE_CHECKING, Any

from worker.config import Settings
from worker.logs import register_secret
from worker.rules.classify import Transport
from worker.sharing import drill_hooks

if TYPE_CHECKING:
    from worker.linq import LinqResponse


class SandboxCrashed(Exception):
    """The sandbox process died during the call: the chat it was sharing crashed it."""

    def __init__(self, exit_code: int | None, *, timed_out: bool = False) -> None:
        self.exit_code = exit_code
        self.timed_out = timed_out
        super().__init__(f"the sandbox process making the share call {describe_exit(exit_code, timed_out)}")


def describe_exit(exit_code: int | None, timed_out: bool = False) -> str:
    """What happened to a child process, in words: 'was killed by SIGKILL', 'exited with code 1'."""
    if timed_out:
        return f"gave no answer in time and was killed (exit {exit_code})"
    if exit_code is None:
        return "died"
    if exit_code < 0:
        try:
            return f"was killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"was killed by signal {-exit_code}"
    return f"exited with code {exit_code}"


class Sandbox:
    """One child process per worker process, started on first use, restarted after a crash."""

    def __init__(self, env: dict[str, str] | None = None, *, answer_timeout_s: float = 60.0) -> None:
        self._env = env
        self._timeout = answer_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None

    def _ensure(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "worker.sharing.sandbox"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=self._env if self._env is not None else dict(os.environ),
            )
        return self._proc

    def share(self, chat_id: uuid.UUID) -> LinqResponse:
        # Here, not at the top: every command builds a Sandbox (threads are the default pool),
        # few share through it, and worker.linq brings httpx (~0.1 s to import).
        from worker.linq import LinqCallError, LinqResponse

        with self._lock:
            proc = self._ensure()
            assert proc.stdin is not None
            assert proc.stdout is not None
            try:
                proc.stdin.write(json.dumps({"chat_id": str(chat_id)}) + "\n")
                proc.stdin.flush()
                line = _readline(proc.stdout, self._timeout)
            except BrokenPipeError:
                line = ""
                timed_out = False
            except TimeoutError:
                line = ""
                timed_out = True
            else:
                timed_out = False
            if not line:
                code = _reap(proc)
                self._proc = None
                raise SandboxCrashed(code, timed_out=timed_out)
        answer = json.loads(line)
        if "error" in answer:
            err = answer["error"]
            transport = Transport(err["transport"]) if err.get("transport") else None
            raise LinqCallError(
                status=err.get("status"),
                code=err.get("code"),
                message=err.get("message") or "",
                trace_id=err.get("trace_id"),
                retry_after_s=err.get("retry_after_s"),
                transport=transport,
            )
        return LinqResponse(status=int(answer["status"]), trace_id=answer.get("trace_id"))

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                _reap(self._proc)
            self._proc = None


def _reap(proc: subprocess.Popen[str]) -> int:
    """Kill (if needed), wait, and close the pipes; the exit code."""
    if proc.poll() is None:
        proc.kill()
    code = proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(BrokenPipeError):
                stream.close()
    return code


def _readline(stream: IO[str], timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise TimeoutError
    return stream.readline()


def main() -> None:
    """Child side: answer share requests until stdin closes. Its settings come from the
    environment the parent handed it (`Settings.to_env()`)."""
    from worker.linq import LinqCallError, LinqGateway

    settings = Settings.from_env()
    register_secret(settings.linq_api_key.get())
    gateway = LinqGateway.create(settings)
    try:
        for line in sys.stdin:
            chat_id = uuid.UUID(json.loads(line)["chat_id"])
            drill_hooks.before_share_call(chat_id)
            answer: dict[str, Any]
            try:
                response = gateway.share_contact_card(str(chat_id))
                answer = {"status": response.status, "trace_id": response.trace_id}
            except LinqCallError as exc:
                answer = {
                    "error": {
                        "status": exc.status,
                        "code": exc.code,
                        "message": exc.message,
                        "trace_id": exc.trace_id,
                        "retry_after_s": exc.retry_after_s,
                        "transport": exc.transport.value if exc.transport else None,
                    }
                }
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        gateway.close()


if __name__ == "__main__":
    main()
