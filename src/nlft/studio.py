"""``nlft studio RUN``: a local web app to tune the NLFT weighting by looking at it, while training runs.

It shows the newest saliency snapshot of the run (``RUN/saliency/step-N.pt``, see ``saliency``), picks up new
ones as the trainer writes them, and re-weights the shown tokens whenever a control moves. Re-weighting runs
``weighting.token_weights`` here, in Python (the page only displays what it is sent), on snapshot tensors kept
in memory. A button writes the chosen settings as a YAML file that ``nlft train --config`` accepts.

Built on the standard library's ``ThreadingHTTPServer``: one thread per request, so the page keeps answering
while a request loads a new snapshot. It binds to 127.0.0.1 by default, answers only requests addressed to
that host (no DNS rebinding), takes JSON only with a JSON content type (no cross-site form posts), and serves
no file outside the run folder.

Endpoints: ``/`` the page, ``/studio.js`` its script, ``GET /api/state`` controls and run facts,
``GET /api/snapshots`` the steps stored, ``GET /api/snapshot?step=N`` a snapshot weighted as the trainer did
(newest without ``step``), ``POST /api/reweight`` ``{"step": N, "settings": {...}}``, ``POST /api/export``
``{"step": N, "settings": {...}}`` writes ``RUN/studio-weighting.yaml``, ``GET /files/PATH`` a file of the run.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import threading
import time
import urllib.parse
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from . import resource_path
from .jsonl import atomic_write_text
from .runs import RUN_FILE
from .snapshots import Snapshot, list_snapshots, load_snapshot
from .views import record_view
from .weighting import WeightingConfig

logger = logging.getLogger(__name__)

EXPORT_FILE = "studio-weighting.yaml"
MAX_BODY = 1 << 16
_SAFE_PATH = re.compile(r"[A-Za-z0-9._\-/ ]+")  # what a served file's path may contain, once decoded
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class BadRequest(ValueError):
    pass


def controls() -> list[dict[str, Any]]:
    """The page's controls: one per weighting setting that has a ``Control`` in ``WeightingConfig``'s metadata."""
    out = []
    for spec in WeightingConfig.specs():
        c = spec.control
        if c is None:
            continue
        out.append(
            {
                "name": spec.name,
                "label": c.label,
                "group": c.group,
                "min": c.lo,
                "max": c.hi,
                "step": c.step,
                "log": c.log,
                "choices": list(spec.choices or ()),
                "help": spec.help,
                "valid": spec.describe(),
            }
        )
    return out


def parse_settings(base: WeightingConfig, given: Any) -> WeightingConfig:
    """``base`` with the fields in ``given`` replaced, validated by ``WeightingConfig`` (unknown fields and
    values outside a setting's range are refused, naming the field)."""
    if given is None:
        return base
    if not isinstance(given, dict):
        raise BadRequest("settings must be a JSON object of weighting fields")
    try:
        return base.replace(given, "settings")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def weighting_yaml(cfg: WeightingConfig, comment: str) -> str:
    """A config file holding only the weighting fields, for ``nlft train --config`` or ``nlft saliency --weighting``."""
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    return head + yaml.safe_dump(cfg.to_dict(), sort_keys=False)


class Studio:
    """The run folder, its snapshots (cached in memory) and the views the page asks for. Thread-safe."""

    def __init__(self, run_dir: str | Path, cache_size: int = 4):
        self.run_dir = Path(run_dir).resolve()
        if not self.run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir}: no such run folder")
        self._cache: OrderedDict[Path, tuple[tuple[int, int], Snapshot]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # -- snapshots ------------------------------------------------------------------------------------------------
    def steps(self) -> list[int]:
        return [step for step, _ in list_snapshots(self.run_dir)]

    def snapshot(self, step: int | None = None) -> Snapshot:
        """The snapshot of ``step`` (the newest when None), loaded once and kept while its file is unchanged."""
        found = dict(list_snapshots(self.run_dir))
        if not found:
            raise LookupError(
                f"{self.run_dir} has no saliency snapshots yet: train with --saliency_steps K (they appear "
                "in saliency/ as training goes)"
            )
        if step is None:
            step = max(found)
        if step not in found:
            raise LookupError(f"no snapshot of step {step} (stored: {', '.join(map(str, sorted(found)))})")
        path = found[step]
        st = path.stat()
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and hit[0] == key:
                self._cache.move_to_end(path)
                return hit[1]
            snap = load_snapshot(path)
            self._cache[path] = (key, snap)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return snap

    def view(self, step: int | None = None, settings: Any = None) -> dict[str, Any]:
        """The snapshot weighted with the trainer's settings, or with ``settings`` laid over them."""
        from .visualisation import render_body

        snap = self.snapshot(step)
        cfg = parse_settings(snap.weighting, settings)
        started = time.perf_counter()
        views = [record_view(r, cfg) for r in snap.records]
        weighted = time.perf_counter() - started
        return {
            "step": snap.step,
            "epoch": snap.epoch,
            "reference_probs": snap.reference_probs,
            "trainer_settings": snap.weighting.to_dict(),
            "settings": cfg.to_dict(),
            "records": [v.to_json() for v in views],
            "html": render_body(views, cfg),
            "weighting_ms": round(1000 * weighted, 1),
        }

    # -- run facts ------------------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        path = self.run_dir / RUN_FILE
        try:
            info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            info = {}
        keep = (
            "method",
            "base_model",
            "data",
            "templates",
            "records",
            "correct",
            "wrong",
            "finished",
            "global_step",
        )
        return {k: info[k] for k in keep if k in info}

    def state(self) -> dict[str, Any]:
        return {
            "run": self.run_dir.name,
            "path": str(self.run_dir),
            "info": self.info(),
            "controls": controls(),
            "defaults": WeightingConfig().to_dict(),
            "steps": self.steps(),
            "export_file": EXPORT_FILE,
        }

    def export(self, step: int | None, settings: Any) -> dict[str, Any]:
        """Write the chosen settings to ``RUN/studio-weighting.yaml`` (atomically) and say how to use it."""
        snap = self.snapshot(step)
        cfg = parse_settings(snap.weighting, settings)
        path = self.run_dir / EXPORT_FILE
        text = weighting_yaml(
            cfg,
            f"NLFT weighting chosen in nlft studio on {self.run_dir.name} (snapshot of step {snap.step}),\n"
            f"{time.strftime('%Y-%m-%d %H:%M')}. Only weighting fields: train with\n"
            f"  nlft train --config {path} --data DATA --model_name_or_path MODEL ...\n"
            "or copy them into your training config; render a report with nlft saliency --weighting THIS.",
        )
        atomic_write_text(path, text)
        return {"path": str(path), "yaml": text}

    # -- files ---------------------------------------------------------------------------------------------------
    def resolve_file(self, raw: str) -> Path:
        """The run-folder file a ``/files/...`` path names; ``PermissionError`` for anything that could leave it.

        ``raw`` is decoded once; what remains must be a plain relative path (no '..', no absolute path, no
        backslash, no leftover '%' from a double encoding) that resolves — symlinks followed — inside the run.
        """
        try:
            path = urllib.parse.unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise PermissionError(f"refused path {raw!r}") from None
        if not path or not _SAFE_PATH.fullmatch(path):
            raise PermissionError(f"refused path {raw!r}")
        parts = path.split("/")
        if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise PermissionError(f"refused path {raw!r}")
        target = (self.run_dir / path).resolve()
        if not target.is_relative_to(self.run_dir):
            raise PermissionError(f"refused path {raw!r}: outside the run folder")
        if not target.is_file():
            raise FileNotFoundError(path)
        return target


def _page() -> bytes:
    from .visualisation import CSS

    text = resource_path("studio", "index.html").read_text(encoding="utf-8")
    return text.replace("/*SALIENCY_CSS*/", CSS).encode("utf-8")


class StudioHandler(BaseHTTPRequestHandler):
    server: StudioServer
    server_version = "nlft-studio"
    protocol_version = "HTTP/1.1"

    # -- plumbing ------------------------------------------------------------------------------------------------
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        logger.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        # Only our own script runs: even a token that slipped past escaping could not execute.
        self.send_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        )
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(
            status, json.dumps(obj, allow_nan=False).encode("utf-8"), "application/json; charset=utf-8"
        )

    def _error(self, status: int, message: str) -> None:
        self.close_connection = True  # an unread request body must not be taken for the next request
        self._json(status, {"error": message})

    def _host_ok(self) -> bool:
        """Requests must name our loopback host: a web page cannot reach the studio through DNS rebinding."""
        if not self.server.loopback_only:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            name = host[1 : host.find("]")] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0] if ":" in host else host
        return name in _LOOPBACK

    def _body(self) -> Any:
        if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            raise BadRequest("send JSON with Content-Type: application/json")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadRequest("bad Content-Length") from None
        if length > MAX_BODY:
            raise BadRequest("request body too large")
        try:
            return json.loads(self.rfile.read(length) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest("the body is not valid JSON") from None

    @staticmethod
    def _step(value: Any) -> int | None:
        if value in (None, "", "latest"):
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            raise BadRequest(f"step must be an integer, not {value!r}") from None

    def _guard(self, handler) -> None:
        if not self._host_ok():
            self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
            return
        try:
            handler()
        except BadRequest as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except PermissionError as exc:
            self._error(HTTPStatus.FORBIDDEN, str(exc))
        except (LookupError, FileNotFoundError) as exc:
            self._error(HTTPStatus.NOT_FOUND, str(exc))
        except ValueError as exc:  # a damaged snapshot file, named
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # keep serving; say what went wrong instead of dropping the connection
            logger.exception("studio: %s %s failed", self.command, self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    # -- routes --------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        self._guard(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._guard(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._guard(self._post)

    def _get(self) -> None:
        # The raw path is matched before any decoding, so that an encoded '/' cannot change the route.
        raw_path, _, raw_query = self.path.partition("?")
        query = urllib.parse.parse_qs(raw_query)
        studio = self.server.studio
        if raw_path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif raw_path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        elif raw_path == "/studio.js":
            self._send(HTTPStatus.OK, self.server.script, "text/javascript; charset=utf-8")
        elif raw_path == "/api/state":
            self._json(HTTPStatus.OK, studio.state())
        elif raw_path == "/api/snapshots":
            steps = studio.steps()
            self._json(HTTPStatus.OK, {"steps": steps, "latest": steps[-1] if steps else None})
        elif raw_path == "/api/snapshot":
            self._json(HTTPStatus.OK, studio.view(self._step(query.get("step", [None])[0])))
        elif raw_path.startswith("/files/"):
            target = studio.resolve_file(raw_path[len("/files/") :])
            kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind in ("application/json", "application/yaml"):
                kind += "; charset=utf-8"
            # Run files are data, never pages that act: sandboxed, no scripts even from ourselves.
            self._send(
                HTTPStatus.OK,
                target.read_bytes(),
                kind,
                {"Content-Security-Policy": "sandbox; default-src 'none'"},
            )
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {raw_path}")

    def _post(self) -> None:
        raw_path = self.path.partition("?")[0]
        studio = self.server.studio
        if raw_path not in ("/api/reweight", "/api/export"):
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: {raw_path}")
            return
        body = self._body()
        if not isinstance(body, dict):
            raise BadRequest('send {"step": N, "settings": {...}}')
        step = self._step(body.get("step"))
        if raw_path == "/api/reweight":
            self._json(HTTPStatus.OK, studio.view(step, body.get("settings")))
        else:
            self._json(HTTPStatus.OK, studio.export(step, body.get("settings")))


class StudioServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, studio: Studio, host: str = "127.0.0.1", port: int = 8765):
        self.studio = studio
        self.loopback_only = host in _LOOPBACK
        self.page = _page()
        self.script = resource_path("studio", "studio.js").read_bytes()
        super().__init__((host, port), StudioHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"


def make_server(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765) -> StudioServer:
    """A studio server for ``run_dir`` (port 0: any free port); call ``serve_forever`` or run it in a thread."""
    return StudioServer(Studio(run_dir), host, port)


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = False) -> int:
    import torch

    # Re-weighting is many operations on tensors of a few hundred rows: intra-op threads only add wake-up
    # latency (10x slower on a busy 2-core machine, e.g. beside a training run).
    torch.set_num_threads(1)
    server = make_server(run_dir, host, port)
    steps = server.studio.steps()
    print(f"nlft studio: {server.studio.run_dir}")
    print(
        f"  {len(steps)} snapshots so far (newest: step {steps[-1]})"
        if steps
        else "  no snapshots yet: they appear as training writes them (--saliency_steps K)"
    )
    print(f"  open {server.url}   (Ctrl-C stops)", flush=True)
    if host not in _LOOPBACK:
        print(f"  warning: listening on {host}, reachable from other machines", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nnlft studio: stopped")
    finally:
        server.server_close()
    return 0
