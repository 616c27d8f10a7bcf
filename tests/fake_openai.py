"""A chat-completions server on 127.0.0.1 for tests, speaking the OpenAI protocol (streamed and not).

Each request's fate is scripted: ``faults(request_text, attempt)`` returns an action for the attempt-th request
with the same messages, one of

    "ok"             a normal reply (``reply(request_text)`` gives its content)
    "429" / "500"    an HTTP error (429 with ``retry-after-ms`` so tests stay fast)
    "slow"           the reply comes ``slow_s`` seconds late, past the client's timeout
    "bad-json"       HTTP 200 with a body that is not JSON
    "no-choices"     HTTP 200, valid JSON without choices
    "null-content"   HTTP 200, a choice whose message content is null
    "html"           HTTP 200 with an HTML error page
    "stream-cut"     (streamed) half the content, then the connection closes without a finish reason
    "stream-garbage" (streamed) an event whose data is not JSON
    "stream-error"   (streamed) an error event in the middle of the stream
    "stream-stall"   (streamed) half the content, then silence for ``slow_s`` seconds (past the read timeout)
    "echo-key"       HTTP 400 whose message echoes the Authorization header (a leak the client must redact)
    "pinned"         HTTP 400 with the server's own reason ("Server is pinned to model X")
    "drip"           HTTP 200, then one byte of the body a second, never finishing (a stuck proxy)
    "sse-drip"       (streamed) an event a second, never finishing

``request_text`` is the last user message (or the prompt). The API key is checked on every request.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(
        self,
        reply: Callable[[str], str],
        faults: Callable[[str, int], str] | None = None,
        *,
        api_key: str | None = None,
        slow_s: float = 2.0,
        delay_s: float = 0.0,
    ):
        self.reply = reply
        self.faults = faults or (lambda text, attempt: "ok")
        self.api_key = api_key
        self.slow_s = slow_s
        self.delay_s = delay_s  # every reply waits this long (for tests that kill a run mid-way)
        self.attempts: Counter = Counter()
        self.log: list[tuple[str, str]] = []  # (request_text, action), in arrival order
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def served(self, action: str = "ok") -> int:
        return sum(1 for _, a in self.log if a == action)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _send(
                self, status: int, body: bytes, content_type: str = "application/json", headers=None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, obj, headers=None) -> None:
                self._send(status, json.dumps(obj).encode(), headers=headers)

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                auth = self.headers.get("Authorization", "")
                if server.api_key is not None and auth != f"Bearer {server.api_key}":
                    self._json(401, {"error": {"message": "invalid api key", "type": "auth"}})
                    return
                if "messages" in body:
                    text = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
                else:
                    text = body.get("prompt", "")
                key = json.dumps(body.get("messages") or body.get("prompt"), sort_keys=True)
                with server._lock:
                    server.attempts[key] += 1
                    attempt = server.attempts[key]
                    action = server.faults(text, attempt)
                    server.log.append((text, action))
                    server.bodies.append(body)
                if server.delay_s:
                    time.sleep(server.delay_s)
                # A client that gave up (a timeout) has closed the connection: nothing to answer.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._act(action, text, body, auth)

            def _act(self, action: str, text: str, body: dict, auth: str) -> None:
                if action == "429":
                    self._json(
                        429,
                        {"error": {"message": "rate limited", "type": "rate_limit"}},
                        {"retry-after-ms": "20"},
                    )
                    return
                if action == "500":
                    self._json(
                        500,
                        {"error": {"message": "internal error", "type": "server"}},
                        {"retry-after-ms": "20"},
                    )
                    return
                if action == "echo-key":
                    self._json(
                        400, {"error": {"message": f"bad request from {auth}", "type": "invalid_request"}}
                    )
                    return
                if action == "pinned":
                    self._json(
                        400, {"error": {"message": "Server is pinned to model X", "type": "invalid_request"}}
                    )
                    return
                if action == "drip":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    for _ in range(120):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(1.0)
                    return
                if action == "sse-drip":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for _ in range(120):
                        chunk = {
                            "id": "s",
                            "object": "chat.completion.chunk",
                            "created": 0,
                            "model": "m",
                            "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
                        }
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                        time.sleep(1.0)
                    return
                if action == "bad-json":
                    self._send(200, b'{"id": "x", "choices": [{"message": ')
                    return
                if action == "no-choices":
                    self._json(
                        200,
                        {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []},
                    )
                    return
                if action == "html":
                    self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
                    return
                if action == "slow":
                    time.sleep(server.slow_s)
                content = server.reply(text)
                if action == "null-content":
                    content = None
                if body.get("stream"):
                    self._stream(action, content or "")
                elif "messages" in body:
                    message = {"role": "assistant", "content": content}
                    choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
                    self._json(
                        200,
                        {
                            "id": "c1",
                            "object": "chat.completion",
                            "created": 0,
                            "model": body.get("model"),
                            "choices": [choice],
                        },
                    )
                else:
                    choice = {"index": 0, "text": content, "finish_reason": "stop", "logprobs": None}
                    self._json(
                        200,
                        {
                            "id": "c1",
                            "object": "text_completion",
                            "created": 0,
                            "model": "m",
                            "choices": [choice],
                        },
                    )

            def _stream(self, action: str, content: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()

                def event(data: str) -> None:
                    self.wfile.write(f"data: {data}\n\n".encode())
                    self.wfile.flush()

                def chunk(delta: dict, finish: str | None = None) -> str:
                    choice = {"index": 0, "delta": delta, "finish_reason": finish}
                    return json.dumps(
                        {
                            "id": "s1",
                            "object": "chat.completion.chunk",
                            "created": 0,
                            "model": "m",
                            "choices": [choice],
                        }
                    )

                event(chunk({"role": "assistant", "content": ""}))
                words = content.split(" ")
                half = len(words) // 2
                for i, word in enumerate(words):
                    if i == half and action == "stream-cut":
                        self.close_connection = True
                        return
                    if i == half and action == "stream-garbage":
                        event("{this is not json")
                    if i == half and action == "stream-stall":
                        time.sleep(server.slow_s)
                        return
                    if i == half and action == "stream-error":
                        event(json.dumps({"error": {"message": "upstream overloaded", "type": "server"}}))
                        return
                    event(chunk({"content": word if i == 0 else " " + word}))
                event(chunk({}, "stop"))
                event("[DONE]")
                self.close_connection = True

        return Handler
