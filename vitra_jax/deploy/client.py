"""Blocking client of the policy server (`vitra_jax.deploy.serve`), for a robot control loop.

    with PolicyClient("127.0.0.1", 8765) as policy:
        out = policy.infer({"image": rgb_uint8, "instruction": "Left hand: None. Right hand: ...",
                            "state": state, "state_mask": state_mask, "action_mask": action_mask, "fov": fov})
        out["actions"]  # (num_samples, chunk_len, action_dim)

Observation values are numpy arrays (and a str instruction), exactly as `DeployedPolicy.predict_batch` takes
them. Imports numpy, msgpack and websockets only.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

from websockets.sync.client import connect

from vitra_jax.deploy import wire


class PolicyServerError(RuntimeError):
    """The server answered a request with an error (its message is this exception's)."""


class PolicyClient:
    """One websocket connection; `metadata` and `server_info` are what the server sent on connect."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, timeout: float = 30.0,
                 max_message_bytes: int = 64 * 2**20):
        self.host, self.port, self.timeout = host, port, timeout
        self._ws = connect(f"ws://{host}:{port}", open_timeout=timeout, max_size=max_message_bytes,
                           compression=None, proxy=None)
        try:
            hello = wire.decode(self._ws.recv(timeout))
            if not (isinstance(hello, dict) and "metadata" in hello):
                raise PolicyServerError(f"the server at {host}:{port} did not send policy metadata on connect")
        except BaseException:
            self._ws.close()
            raise
        self.metadata: dict = hello["metadata"]
        self.server_info: dict = hello.get("server", {})
        self._next_id = 0

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        """Result arrays of one observation plus `request_id` and `timing`; raises PolicyServerError on an
        error reply and TimeoutError when no reply comes within `timeout` seconds."""
        request_id = self._next_id
        self._next_id += 1
        self._ws.send(wire.encode({**obs, "request_id": request_id}))
        while True:  # replies to requests that timed out earlier may still arrive first: skip them
            reply = wire.decode(self._ws.recv(self.timeout))
            if not isinstance(reply, dict):
                raise PolicyServerError(f"malformed reply of type {type(reply).__name__}")
            if reply.get("request_id") == request_id:
                break
        if "error" in reply:
            raise PolicyServerError(reply["error"])
        return reply

    def health(self) -> dict:
        """Counters of `GET /healthz` (raises PolicyServerError unless the server answers 200)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise PolicyServerError(f"/healthz answered {response.status}: {body.decode(errors='replace')}")
        return json.loads(body)

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
