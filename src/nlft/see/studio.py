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
``GET /api/live`` whether the run trains now (and the last request it applied), ``POST /api/apply``
``{"settings": {...}}`` sends settings to the training run ("apply to this run", ``nlft.train.live``; 409 when the run
is not training or another studio holds it), ``GET /api/snapshots`` the steps stored, ``GET /api/snapshot?step=N`` a snapshot weighted as the trainer did
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
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import yaml

from .. import resource_path
from ..jsonl import atomic_write_text
from ..method.weighting import WeightingConfig
from ..options import PORT, opt
from ..runs import RUN_FILE
from ..train.snapshots import Snapshot, list_snapshots, load_snapshot
from .views import record_view

logger = logging.getLogger(__name__)

EXPORT_FILE = "studio-weighting.yaml"
MAX_BODY = 1 << 16
_SAFE_PATH = re.compile(r"[A-Za-z0-9._\-/ ]+")  # what a served file's path may contain, once decoded
TOKEN_HEADER = "X-Nlft-Token"


def is_loopback_name(name: str) -> bool:
    """Whether a host name is a loopback address written out (``127.x.x.x``, ``::1``, in any spelling the
    address parser accepts) or ``localhost``. Other names are refused even when they resolve to loopback: that is
    exactly what a DNS-rebinding page arranges."""
    import ipaddress
    import socket

    name = name.strip().lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    if name and all(c.isdigit() or c == "." for c in name):  # the short IPv4 forms: 127.1, 2130706433
        try:
            return ipaddress.ip_address(socket.inet_aton(name)).is_loopback
        except OSError:
            return False
    return False


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
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise NotADirectoryError(f"{run_dir}: not a folder; name a run folder (nlft train --output_dir)")
        if not self.run_dir.exists() and not self.run_dir.parent.is_dir():
            raise FileNotFoundError(
                f"{run_dir}: no such run folder, nor a folder {self.run_dir.parent} for a run to begin in (a typo?)"
            )
        # A run folder, or one a run is about to write (missing or empty: nothing to serve until run.json is
        # there). Any other folder (a home directory, a project) is refused: the studio serves only a run.
        if self.run_dir.is_dir() and any(self.run_dir.iterdir()) and not (self.run_dir / RUN_FILE).is_file():
            raise ValueError(
                f"{run_dir}: not a run folder (no {RUN_FILE}); the studio serves only what nlft train writes"
            )
        self._cache: OrderedDict[Path, tuple[tuple[int, int], Snapshot]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        from ..train.live import StudioLock

        self._live_lock = StudioLock(
            self.run_dir
        )  # taken at the first "apply to this run", held while we live

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

    def live(self) -> dict[str, Any]:
        """Whether settings can be applied to the run now: it trains, and no other studio holds it."""
        from ..train.live import training_status

        status = training_status(self.run_dir)
        return {
            "training": status is not None,
            "step": status.get("step") if status else None,
            "applied_seq": status.get("applied_seq") if status else None,
            "rejected": status.get("rejected") if status else None,
        }

    def apply(self, settings: Any) -> dict[str, Any]:
        """ "Apply to this run": send the settings (laid over the newest snapshot's) to the training process,
        which takes them up at its next step."""
        from ..train.live import request_settings

        if not isinstance(settings, dict):
            raise BadRequest("settings must be a JSON object of weighting fields")
        try:
            base = self.snapshot(None).weighting
        except LookupError:
            base = None
        cfg = parse_settings(base, settings) if base is not None else None
        chosen = cfg.to_dict() if cfg is not None else settings
        if base is not None:  # send only what differs from the settings the run trains with now
            chosen = {k: v for k, v in chosen.items() if v != base.to_dict()[k]} or chosen
        try:
            return request_settings(self.run_dir, self._live_lock, chosen)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    def close(self) -> None:
        self._live_lock.release()

    def state(self) -> dict[str, Any]:
        return {
            "run": self.run_dir.name,
            "path": str(self.run_dir),
            "info": self.info(),
            "controls": controls(),
            "defaults": WeightingConfig().to_dict(),
            "steps": self.steps(),
            "export_file": EXPORT_FILE,
            "live": self.live(),
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
        if path.startswith("/") or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise PermissionError(
                f"refused path {raw!r}"
            )  # dot-files (locks, hidden folders) are never served
        if not (self.run_dir / RUN_FILE).is_file():
            raise FileNotFoundError(
                f"{path}: the run has not begun"
            )  # nothing is served from a folder not a run's
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


_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Only our own script runs: even a token that slipped past escaping could not execute.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}


def _reject_constant(name: str):
    raise BadRequest(f"the body holds {name}, which is not JSON")


def parse_json_body(data: bytes) -> Any:
    """A request body as JSON, strictly: no NaN/Infinity, no nesting so deep it exhausts the parser."""
    try:
        return json.loads(data or b"{}", parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None


def parse_step(value: Any) -> int | None:
    """A snapshot step: a whole number (JSON integer, or digits in a query), or none/"latest" for the newest."""
    if value in (None, "", "latest"):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadRequest(f"step must be a whole number, not {value!r}")
    if isinstance(value, str):
        if not value.isdigit():
            raise BadRequest(f"step must be a whole number, not {value!r}")
        value = int(value)
    if value < 0:
        raise BadRequest(f"step must be 0 or more, not {value}")
    return value


class StudioApp:
    """The studio as a WSGI application (served by Werkzeug's threaded server, ``make_server``).

    Werkzeug parses the requests — Content-Length, chunked bodies, the size limit — so this class only routes
    them and checks what they say: the Host (loopback only, against DNS rebinding), a JSON content type for
    posts (no cross-site form posts), strict JSON, whole-number steps, settings validated by ``WeightingConfig``.
    """

    def __init__(self, studio: Studio, loopback_only: bool = True, token: str | None = None):
        import secrets

        self.studio = studio
        self.loopback_only = loopback_only
        # Every API call and run file needs this session's token (printed in the URL, as Jupyter does): another
        # user of the machine, or a page in the browser, cannot read or steer the run without it.
        self.token = token or secrets.token_urlsafe(24)
        self.page = _page()
        self.script = resource_path("studio", "studio.js").read_bytes()

    # -- responses -----------------------------------------------------------------------------------------------
    @staticmethod
    def _response(body: bytes, status: int, content_type: str, extra: dict[str, str] | None = None):
        from werkzeug.wrappers import Response

        return Response(
            body, status=status, headers={**_SECURITY_HEADERS, **(extra or {})}, content_type=content_type
        )

    def _json(self, obj: Any, status: int = 200):
        return self._response(
            json.dumps(obj, allow_nan=False).encode("utf-8"), status, "application/json; charset=utf-8"
        )

    def _error(self, status: int, message: str):
        return self._json({"error": message}, status)

    # -- checks ------------------------------------------------------------------------------------------------
    def _host_ok(self, request) -> bool:
        if not self.loopback_only:
            return True
        host = (request.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            name = host[1 : host.find("]")] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0] if ":" in host else host
        return is_loopback_name(name)

    def _token_ok(self, request) -> bool:
        import hmac

        given = request.headers.get(TOKEN_HEADER) or request.args.get("token") or ""
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _body(self, request) -> dict:
        from werkzeug.exceptions import RequestEntityTooLarge

        if (request.mimetype or "").lower() != "application/json":
            raise BadRequest("send JSON with Content-Type: application/json")
        length = request.headers.get("Content-Length")
        if length is not None and not length.strip().isdigit():
            raise BadRequest(f"Content-Length {length!r}: not a number of bytes")
        data = request.get_data(cache=False)  # a declared length over MAX_BODY: 413 from Werkzeug
        if len(data) >= MAX_BODY:  # a chunked body is cut at the limit: one that reaches it was longer
            raise RequestEntityTooLarge(f"a request body is at most {MAX_BODY} bytes")
        body = parse_json_body(data)
        if not isinstance(body, dict):
            raise BadRequest('send {"step": N, "settings": {...}}')
        return body

    # -- routing -------------------------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        from werkzeug.exceptions import HTTPException
        from werkzeug.wrappers import Request

        request = Request(environ)
        request.max_content_length = MAX_BODY
        try:
            response = self.dispatch(request)
        except HTTPException as exc:  # Werkzeug's own: a body too large, a malformed request
            response = self._error(exc.code or 400, exc.description or exc.name)
        return response(environ, start_response)

    def dispatch(self, request):
        from werkzeug.exceptions import HTTPException

        if not self._host_ok(request):
            return self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        if request.path not in ("/", "/index.html", "/studio.js", "/favicon.ico") and not self._token_ok(
            request
        ):
            return self._error(
                HTTPStatus.FORBIDDEN, "this studio needs its session token: open the URL nlft studio printed"
            )
        try:
            if request.method in ("GET", "HEAD"):
                return self._get(request)
            if request.method == "POST":
                return self._post(request)
            return self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} is not served here")
        except HTTPException:
            raise  # Werkzeug's own (413 for a body too large): answered with its status by __call__
        except BadRequest as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except PermissionError as exc:
            return self._error(HTTPStatus.FORBIDDEN, str(exc))
        except (LookupError, FileNotFoundError) as exc:
            return self._error(HTTPStatus.NOT_FOUND, str(exc))
        except ValueError as exc:  # a damaged snapshot file, named
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
        except Exception as exc:  # keep serving; say what went wrong instead of dropping the connection
            logger.exception("studio: %s %s failed", request.method, request.path)
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    def _get(self, request):
        # The raw path is matched before any decoding, so that an encoded '/' cannot change the route.
        raw_path = request.environ.get("RAW_URI", request.environ.get("REQUEST_URI", "")).partition("?")[0]
        raw_path = raw_path or urllib.parse.quote(request.path)
        studio = self.studio
        if raw_path in ("/", "/index.html"):
            return self._response(self.page, 200, "text/html; charset=utf-8")
        if raw_path == "/favicon.ico":
            return self._response(b"", 204, "image/x-icon")
        if raw_path == "/studio.js":
            return self._response(self.script, 200, "text/javascript; charset=utf-8")
        if raw_path == "/api/state":
            return self._json(studio.state())
        if raw_path == "/api/live":
            return self._json(studio.live())
        if raw_path == "/api/snapshots":
            steps = studio.steps()
            return self._json({"steps": steps, "latest": steps[-1] if steps else None})
        if raw_path == "/api/snapshot":
            return self._json(studio.view(parse_step(request.args.get("step"))))
        if raw_path.startswith("/files/"):
            target = studio.resolve_file(raw_path[len("/files/") :])
            kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind in ("application/json", "application/yaml"):
                kind += "; charset=utf-8"
            # Run files are data, never pages that act: sandboxed, no scripts even from ourselves.
            return self._response(
                target.read_bytes(), 200, kind, {"Content-Security-Policy": "sandbox; default-src 'none'"}
            )
        return self._error(HTTPStatus.NOT_FOUND, f"no such page: {raw_path}")

    def _post(self, request):
        path = request.path
        if path not in ("/api/reweight", "/api/export", "/api/apply"):
            return self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        body = self._body(request)
        if path == "/api/apply":
            try:
                return self._json(self.studio.apply(body.get("settings")))
            except (LookupError, PermissionError) as exc:  # not training now; another studio holds the run
                return self._error(HTTPStatus.CONFLICT, str(exc))
        step = parse_step(body.get("step"))
        if path == "/api/reweight":
            return self._json(self.studio.view(step, body.get("settings")))
        return self._json(self.studio.export(step, body.get("settings")))


# A client that stops sending mid-request is dropped after this many seconds instead of holding a thread.
REQUEST_TIMEOUT = 10.0


def _handler_class():
    from werkzeug.serving import WSGIRequestHandler

    class Handler(WSGIRequestHandler):
        timeout = REQUEST_TIMEOUT

        def log_request(self, code="-", size="-") -> None:
            logger.debug("%s %s %s", self.address_string(), self.requestline, code)

        def log_error(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            logger.debug("%s %s", self.address_string(), format % args)

    return Handler


def make_server(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765):
    """A studio server for ``run_dir`` (port 0: any free port); call ``serve_forever`` or run it in a thread.

    A port in use or a host that cannot be listened on is a ``ValueError`` saying so."""
    import errno
    import ipaddress
    import socket

    from werkzeug.serving import make_server as werkzeug_server

    studio = Studio(run_dir)
    # The socket is bound here (Werkzeug exits the process when its own bind fails), then handed over.
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ValueError(
            f"--host {host}: not an address this machine can listen on ({exc.strerror})"
        ) from None
    # Loopback or not is a property of the address bound, not of how --host was spelt (LOCALHOST, 127.1, ...).
    loopback = ipaddress.ip_address(address[0].split("%")[0]).is_loopback
    app = StudioApp(studio, loopback_only=loopback)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            why = "already in use" if exc.errno == errno.EADDRINUSE else "not allowed for this user"
            raise ValueError(
                f"--port {port}: {why} on {host}; choose another (or 0 for any free one)"
            ) from None
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        server = werkzeug_server(
            host,
            sock.getsockname()[1],
            app,
            threaded=True,
            request_handler=_handler_class(),
            fd=sock.fileno(),
        )
    finally:
        sock.close()  # Werkzeug listens on its own duplicate of the descriptor
    server.daemon_threads = True
    server.studio = studio
    server.token = app.token
    server.loopback = loopback
    server.url = server_url(server)
    return server


def server_url(server) -> str:
    """The page's address with the session token, as printed (the page reads the token from it)."""
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    return f"http://{shown}:{port}/?token={server.token}"


@dataclass(kw_only=True)
class StudioOptions:
    """``nlft studio``: the arguments of ``serve``."""

    run_dir: str = opt(positional=True, metavar="RUN_DIR", help="a run folder (nlft train --output_dir)")
    host: str = opt("127.0.0.1", help="address to listen on (other than loopback: reachable by others)")
    port: int = opt(8765, type=PORT, help="port (0: any free one)")
    open_browser: bool = opt(False, flag="open", help="open the page in a web browser")


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = False) -> int:
    import torch

    # Re-weighting is many operations on tensors of a few hundred rows: intra-op threads only add wake-up
    # latency (10x slower on a busy 2-core machine, e.g. beside a training run).
    torch.set_num_threads(1)
    server = make_server(run_dir, host, port)
    url = server_url(server)
    steps = server.studio.steps()
    print(f"nlft studio: {server.studio.run_dir}")
    if not server.studio.run_dir.exists():
        print("  the run has not begun: waiting for nlft train to write it (--output_dir here)")
    print(
        f"  {len(steps)} snapshots so far (newest: step {steps[-1]})"
        if steps
        else "  no snapshots yet: they appear as training writes them (--saliency_steps K)"
    )
    print(f"  open {url}   (Ctrl-C stops)", flush=True)
    if not server.loopback:
        print(
            f"  warning: listening on {host}, reachable from other machines (the token guards the run)",
            flush=True,
        )
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nnlft studio: stopped")
    finally:
        server.server_close()
    return 0
