"""A local OpenAI-compatible chat-completions server for tests (127.0.0.1, random port, no network).

    with OpenAIStub(answer="Pick up the bottle.") as stub:
        captioner = OpenAICaptioner(base_url=stub.base_url, ...)
        ...
        assert stub.count == 1 and stub.errors == []

Only `POST /v1/chat/completions` is served. Each request is checked for the shape the captioner must
send (a model name, a system and a user message, text parts, JPEG data-URI image parts with a `detail`, a
strict json_schema response format requiring "action"); a malformed request gets a 400 and its problem is
appended to `errors`. Replies come from `script` (consumed in order) and then from `answer`: a caption string,
a function of the request's prompt text returning one, or a `Reply` (an HTTP error, malformed JSON, ...).
Token usage per reply is a function of the request (so sums are checkable) and is totalled in
`tokens_in` / `tokens_out`.
"""

from __future__ import annotations

import base64
import dataclasses
import http.server
import json
import threading
from collections.abc import Callable, Iterable

PROMPT_TOKENS_PER_IMAGE = 85  # what a `detail: low` image costs on GPT-4.1-class models
COMPLETION_TOKENS = 12


@dataclasses.dataclass(frozen=True)
class Reply:
    """One scripted reply: a caption (`action`), an HTTP error `status` (+ headers), or `raw` content."""

    action: str | None = None
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    raw: str | None = None  # message content sent as is (e.g. malformed JSON)

    @staticmethod
    def caption(action: str) -> Reply:
        return Reply(action=action)

    @staticmethod
    def error(status: int, retry_after_ms: int | None = None) -> Reply:
        headers = (("retry-after-ms", str(retry_after_ms)),) if retry_after_ms is not None else ()
        return Reply(status=status, headers=headers)

    @staticmethod
    def malformed(content: str = '{"action": "Pick up') -> Reply:
        return Reply(raw=content)


def prompt_text(body: dict) -> str:
    """All text parts of all messages of a request, joined by newlines."""
    parts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(parts)


def image_parts(body: dict) -> list[dict]:
    return [p for m in body.get("messages", []) if isinstance(m.get("content"), list)
            for p in m["content"] if isinstance(p, dict) and p.get("type") == "image_url"]


def request_problems(body: dict, headers) -> list[str]:
    """What is wrong with a chat-completions request for a captioner (empty when it is well formed)."""
    problems = []
    if not str(headers.get("Authorization", "")).startswith("Bearer ") or headers["Authorization"] == "Bearer ":
        problems.append("no bearer api key")
    if not isinstance(body.get("model"), str) or not body["model"]:
        problems.append("model missing")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return problems + ["messages missing"]
    roles = [m.get("role") for m in messages]
    if "user" not in roles:
        problems.append(f"no user message (roles {roles})")
    if "system" not in roles:
        problems.append(f"no system message (roles {roles})")
    images = image_parts(body)
    if not images:
        problems.append("no image parts")
    for i, part in enumerate(images):
        image = part.get("image_url") or {}
        url = image.get("url", "")
        if image.get("detail") not in ("low", "high", "auto"):
            problems.append(f"image {i}: detail {image.get('detail')!r}")
        if not url.startswith("data:image/jpeg;base64,"):
            problems.append(f"image {i}: not a JPEG data URI")
            continue
        try:
            data = base64.b64decode(url.split(",", 1)[1], validate=True)
        except ValueError:
            problems.append(f"image {i}: bad base64")
            continue
        if data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
            problems.append(f"image {i}: not JPEG data")
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") or {}
    if fmt.get("type") != "json_schema" or not fmt["json_schema"].get("strict"):
        problems.append(f"response_format is not a strict json_schema: {fmt}")
    elif "action" not in schema.get("required", []) or schema.get("additionalProperties") is not False:
        problems.append(f"schema must require 'action' and forbid other properties: {schema}")
    return problems


def usage_for(body: dict) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) the stub bills for a request: depends on its text and images."""
    return len(prompt_text(body).split()) + PROMPT_TOKENS_PER_IMAGE * len(image_parts(body)), COMPLETION_TOKENS


class OpenAIStub:
    """Threaded loopback server; a context manager that starts and stops itself."""

    def __init__(self, answer: str | Callable[[str], str] | Reply = "Pick up the spray bottle.",
                 script: Iterable[Reply] = ()):
        self.answer = answer
        self.script = list(script)
        self.requests: list[dict] = []  # bodies of every request received, in order
        self.headers: list[dict] = []  # their HTTP headers
        self.errors: list[str] = []  # problems found in malformed requests
        self.tokens_in = 0
        self.tokens_out = 0
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stub is not running; use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> OpenAIStub:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = None

    def _next_reply(self, body: dict) -> Reply:
        if self.script:
            return self.script.pop(0)
        if isinstance(self.answer, Reply):
            return self.answer
        if callable(self.answer):
            return Reply.caption(self.answer(prompt_text(body)))
        return Reply.caption(self.answer)

    def respond(self, body: dict, headers) -> tuple[int, dict, dict]:
        """(status, extra headers, json payload) for one request; thread-safe."""
        with self._lock:
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in headers.items()})  # names lower-cased
            problems = request_problems(body, headers)
            if problems:
                self.errors.extend(problems)
                return 400, {}, {"error": {"message": "; ".join(problems), "type": "invalid_request_error"}}
            reply = self._next_reply(body)
            if reply.status != 200:
                return reply.status, dict(reply.headers), {"error": {"message": f"stub status {reply.status}",
                                                                    "type": "server_error"}}
            tokens_in, tokens_out = usage_for(body)
            self.tokens_in += tokens_in
            self.tokens_out += tokens_out
            content = reply.raw if reply.raw is not None else json.dumps({"action": reply.action})
            return 200, {}, {
                "id": f"chatcmpl-stub-{len(self.requests)}", "object": "chat.completion", "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": content, "refusal": None}}],
                "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                          "total_tokens": tokens_in + tokens_out},
            }


def _handler(stub: OpenAIStub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {}, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, {}, {"error": {"message": "request body is not JSON"}})
                return
            self._send(*stub.respond(body, self.headers))

        def _send(self, status: int, headers: dict, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

    return Handler
