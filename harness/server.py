"""A llama-server of the build on 127.0.0.1, for the checks that talk to it over HTTP.

``state`` saves and restores its slots; ``needle`` asks it for greedy answers over long
prompts. Token ids are those of the model's vocabulary; a context length is in tokens; the
timeouts are in seconds.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from harness import proc
from harness.cache_types import CacheConfig
from harness.errors import CommandFailed

READY_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 600.0


def cache_args(config: CacheConfig) -> list[str]:
    """Flash attention on (a quantized V needs it) and ``config``'s K and V cache types."""
    return ["-fa", "on", "-ctk", config.k, "-ctv", config.v]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A llama-server on 127.0.0.1 for the ``with`` block: one slot of ``ctx`` tokens, flash
    attention, the given cache configuration, ``extra`` arguments, ``env`` added to its
    environment. Entering raises CommandFailed when it exits or is not ready within
    ``READY_TIMEOUT_S``."""

    def __init__(
        self,
        binary: Path,
        model: Path,
        config: CacheConfig,
        ctx: int,
        log: Path,
        threads: int,
        env: dict[str, str] | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.port = _free_port()
        self.log = log
        self.env = env
        self.cmd = [
            binary,
            "-m",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "-c",
            str(ctx),
            "-np",
            "1",
            *cache_args(config),
            *extra,
            "-t",
            str(threads),
        ]

    def __enter__(self) -> Server:
        self._ctx = proc.started(self.cmd, log=self.log, what="run llama-server", env=self.env)
        self._child = self._ctx.__enter__()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._child.poll() is not None:
                raise CommandFailed(
                    f"llama-server exited ({self._child.returncode}) before it was ready",
                    hint=f"read {self.log}",
                )
            try:
                with urllib.request.urlopen(self._url("/health"), timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise CommandFailed(
            f"llama-server was not ready after {READY_TIMEOUT_S:.0f} s", hint=f"read {self.log}"
        )

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(None, None, None)

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, path: str, body: dict) -> tuple[int, dict]:
        """POST ``body`` as JSON; the HTTP status and the decoded answer (errors included)."""
        req = urllib.request.Request(
            self._url(path), json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def post(self, path: str, body: dict) -> dict:
        """POST that must succeed; raises CommandFailed naming the endpoint otherwise."""
        status, data = self.request(path, body)
        if status != 200:
            raise CommandFailed(
                f"llama-server answered {status} to {path}: {data}", hint=f"read {self.log}"
            )
        return data

    def complete(self, tokens: Sequence[int], n_predict: int) -> tuple[str, int]:
        """Greedy completion of ``tokens`` on slot 0, reusing what its cache holds: the text
        and the prompt tokens it evaluated (the rest came from the slot's cache)."""
        data = self.post(
            "/completion",
            {
                "prompt": list(tokens),
                "n_predict": n_predict,
                "temperature": 0,
                "cache_prompt": True,
                "id_slot": 0,
            },
        )
        return data["content"], int(data["timings"]["prompt_n"])

    def greedy(self, tokens: Sequence[int], n_predict: int) -> tuple[str, list[int]]:
        """Greedy completion of the whole prompt ``tokens``, evaluated afresh (nothing reused
        from an earlier request): the text and the ``n_predict`` token ids or fewer."""
        data = self.post(
            "/completion",
            {
                "prompt": list(tokens),
                "n_predict": n_predict,
                "temperature": 0,
                "cache_prompt": False,
                "return_tokens": True,
                "id_slot": 0,
            },
        )
        return data["content"], [int(t) for t in data["tokens"]]

    def slot(self, action: str, filename: str = "") -> tuple[int, dict]:
        """``save``, ``restore`` (``filename`` in the slot folder) or ``erase`` slot 0: the
        HTTP status and the answer; a refused restore is a 400, not an exception."""
        return self.request(f"/slots/0?action={action}", {"filename": filename} if filename else {})

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """The token ids of ``text``; ``special`` adds the model's BOS where it wants one."""
        return [
            int(t)
            for t in self.post("/tokenize", {"content": text, "add_special": special})["tokens"]
        ]

    def tokens(self, text: str, n: int) -> list[int]:
        """The first ``n`` tokens of ``text``; raises CommandFailed if it holds fewer."""
        toks = self.tokenize(text, special=False)
        if len(toks) < n:
            raise CommandFailed(f"the prompt text holds {len(toks)} tokens, {n} are needed")
        return toks[:n]
