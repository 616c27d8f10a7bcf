"""nlft studio: its JSON endpoints re-weight with the trainer's functions, it serves nothing outside the run
folder, writes a YAML the trainer accepts, and keeps answering while training writes snapshots."""

import http.client
import json
import os
import threading

import pytest
import torch

from nlft.method.weighting import WeightingConfig
from nlft.see.studio import EXPORT_FILE, Studio
from nlft.see.views import record_view
from nlft.train.snapshots import Snapshot, list_snapshots, load_snapshot, write_snapshot

from ..conftest import VISIBLE, make_probe


def request(srv, method, path, body=None, headers=None):
    """(status, decoded JSON or raw bytes) of one request; the Host header is what a browser would send."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=30)
    head = {"Host": f"127.0.0.1:{srv.server_address[1]}", "X-Nlft-Token": srv.token, **(headers or {})}
    data = None
    if isinstance(body, bytes):
        data = body
    elif body is not None:
        data = json.dumps(body).encode()
        head.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=head)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    is_json = resp.getheader("Content-Type", "").startswith("application/json")
    return resp.status, json.loads(raw) if is_json else raw


@pytest.fixture
def run(tmp_path):
    """A run folder with two snapshots of made-up records (and run.json)."""
    (tmp_path / "run.json").write_text(json.dumps({"method": "nlft", "base_model": "tiny"}))
    records = [make_probe("w", False, n=30), make_probe("c", True, n=30, seed=1)]
    write_snapshot(tmp_path, Snapshot(1, records, WeightingConfig(threshold=1.2)))
    write_snapshot(tmp_path, Snapshot(2, records, WeightingConfig(threshold=1.2), epoch=1.0))
    return tmp_path


def weights_of(view: dict) -> list[list[float]]:
    return [[t["weight"] for t in r["tokens"]] for r in view["records"]]


def test_endpoints_weigh_with_the_trainers_functions(run, server):
    srv = server(run)
    status, view = request(srv, "GET", "/api/snapshot")
    assert status == 200 and view["step"] == 2
    snap = load_snapshot(list_snapshots(run)[-1][1])
    assert view["settings"] == view["trainer_settings"] == snap.weighting.to_dict()
    assert weights_of(view) == [
        [t.weight for t in record_view(r, snap.weighting).tokens] for r in snap.records
    ]

    chosen = {"threshold": 0.4, "unlikelihood_factor": 3.0, "cluster": "similarity", "cluster_radius": 0.7}
    status, view = request(srv, "POST", "/api/reweight", {"step": 1, "settings": chosen})
    assert status == 200 and view["step"] == 1
    cfg = WeightingConfig(**{**snap.weighting.to_dict(), **chosen})
    expected = [record_view(r, cfg) for r in snap.records]
    assert weights_of(view) == [[t.weight for t in v.tokens] for v in expected]
    assert [r["salient"] for r in view["records"]] == [v.salient for v in expected]
    assert 'data-weight="' in view["html"] and view["html"].count("<section") == 2

    status, state = request(srv, "GET", "/api/state")
    assert status == 200 and state["steps"] == [1, 2] and state["info"]["method"] == "nlft"
    controlled = {c["name"] for c in state["controls"]}
    assert controlled == set(WeightingConfig.names()) - {"prob_floor"}  # prob_floor enters the loss only
    status, page = request(srv, "GET", "/")
    assert status == 200 and b'<script src="/studio.js">' in page and b"/*SALIENCY_CSS*/" not in page


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"settings": {"threshhold": 1}}, "threshhold"),
        ({"settings": {"threshold": "high"}}, "threshold"),
        ({"settings": {"correct_confidence": 1.5}}, "correct_confidence"),
        ({"settings": {"cluster": "nearest"}}, "cluster"),
        ({"step": "x"}, "step"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(run, server, body, words):
    status, answer = request(server(run), "POST", "/api/reweight", body)
    assert status == 400 and words in answer["error"]


def test_unknown_step_and_empty_run(run, server, tmp_path_factory):
    status, answer = request(server(run), "GET", "/api/snapshot?step=9")
    assert status == 404 and "1, 2" in answer["error"]
    empty = tmp_path_factory.mktemp("empty")  # a run about to begin: nothing served yet, snapshots awaited
    srv = server(empty)
    assert request(srv, "GET", "/files/run.json")[0] == 404
    assert request(srv, "GET", "/api/snapshots") == (200, {"steps": [], "latest": None})
    status, answer = request(srv, "GET", "/api/snapshot")
    assert status == 404 and "saliency_steps" in answer["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/files/../run.json",
        "/files/saliency/../../outside.txt",
        "/files/%2e%2e/outside.txt",
        "/files/..%2foutside.txt",
        "/files/%2e%2e%2foutside.txt",
        "/files/%252e%252e%252foutside.txt",
        "/files//etc/passwd",
        "/files/%2fetc%2fpasswd",
        "/files/..\\outside.txt",
        "/files/%5c..%5coutside.txt",
        "/files/%c0%ae%c0%ae/outside.txt",
        "/files/link-out",
        "/files/dir-out/outside.txt",
        "/files/./run.json",
    ],
)
def test_paths_outside_the_run_are_refused(run, server, path):
    (run.parent / "outside.txt").write_text("secret")
    os.symlink(run.parent / "outside.txt", run / "link-out")
    os.symlink(run.parent, run / "dir-out")
    status, answer = request(server(run), "GET", path)
    assert status in (403, 404), (path, status)
    assert b"secret" not in json.dumps(answer).encode()


def test_files_of_the_run_are_served(run, server):
    srv = server(run)
    status, body = request(srv, "GET", "/files/run.json")
    assert status == 200 and body["method"] == "nlft"
    status, _ = request(srv, "GET", "/files/saliency/step-00000001.pt")
    assert status == 200
    assert request(srv, "GET", "/files/nothing.txt")[0] == 404


def test_foreign_hosts_and_form_posts_are_refused(run, server):
    srv = server(run)
    assert request(srv, "GET", "/api/state", headers={"Host": "attacker.example:80"})[0] == 403
    status, answer = request(
        srv, "POST", "/api/export", b"x=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 400 and "application/json" in answer["error"]
    assert not (run / EXPORT_FILE).exists()


def test_exported_yaml_is_a_config_the_trainer_accepts(run, server):
    from nlft.train.config import load_weighting_file, parse_train_args

    chosen = {"threshold": 0.9, "judge_floor": 0.002, "cluster": "similarity", "correct_confidence": 0.8}
    status, answer = request(server(run), "POST", "/api/export", {"step": 2, "settings": chosen})
    assert status == 200 and answer["path"] == str((run / EXPORT_FILE).resolve())
    _, _, train_cfg = parse_train_args(["--config", answer["path"]])
    want = WeightingConfig(**{**WeightingConfig(threshold=1.2).to_dict(), **chosen})
    assert train_cfg.weighting() == want
    assert load_weighting_file(answer["path"]) == want.to_dict()


def test_snapshots_are_loaded_once_and_again_when_rewritten(run, monkeypatch):
    import nlft.see.studio as studio_module

    loads = []
    real = studio_module.load_snapshot
    monkeypatch.setattr(studio_module, "load_snapshot", lambda p: loads.append(p) or real(p))
    studio = Studio(run)
    for _ in range(3):
        studio.view(2, {"threshold": 0.5})
    assert len(loads) == 1
    snap = studio.snapshot(2)
    snap.records[0].p_judge = snap.records[0].p_judge * 0.5
    write_snapshot(run, Snapshot(2, snap.records, snap.weighting))
    os.utime(list_snapshots(run)[-1][1], ns=(1, 1))  # a rewrite within the clock's resolution still counts
    assert torch.equal(studio.snapshot(2).records[0].p_judge, snap.records[0].p_judge)
    assert len(loads) == 2


@pytest.mark.slow
def test_keeps_answering_while_training_writes_snapshots(tmp_path, server):
    from nlft.jsonl import atomic_write_jsonl
    from nlft.train.config import parse_train_args
    from nlft.train.run import train

    from ..conftest import ROWS

    run = tmp_path / "run"
    run.mkdir()
    srv = server(run)
    answers: list[tuple[str, int, bool]] = []  # path, status, whether a snapshot existed before the request
    latest_seen: list[int] = []
    stop = threading.Event()

    def poll():
        while not stop.wait(0.02):
            for method, path, body in (
                ("GET", "/api/snapshots", None),
                ("GET", "/api/snapshot", None),
                ("POST", "/api/reweight", {"settings": {"threshold": 0.7}}),
                ("GET", "/", None),
            ):
                had_one = bool(list_snapshots(run))
                status, answer = request(srv, method, path, body)
                answers.append((path, status, had_one))
                if path == "/api/snapshots" and answer["latest"] is not None:
                    latest_seen.append(answer["latest"])
                if path in ("/api/snapshot", "/api/reweight") and status == 200:
                    assert answer["records"] and all(r["tokens"] for r in answer["records"])

    poller = threading.Thread(target=poll)
    poller.start()
    atomic_write_jsonl(tmp_path / "data.jsonl", ROWS)
    try:
        result = train(
            *parse_train_args(
                [
                    "--data", str(tmp_path / "data.jsonl"), "--model_name_or_path", "nlft:tiny", "--output_dir", str(run),
                    "--dtype", "float32", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
                    "--max_length", "512", "--save_strategy", "no", "--max_steps", "6", "--per_device_train_batch_size", "1",
                    "--gradient_accumulation_steps", "1", "--saliency_steps", "1", "--saliency_probe", "2", *VISIBLE,
                ]
            )
        )  # fmt: skip
        status, answer = request(srv, "GET", "/api/snapshots")
        assert answer["latest"] == result.global_step == 6
    finally:
        stop.set()
        poller.join(timeout=60)
    status, view = request(srv, "GET", "/api/snapshot")
    assert status == 200 and view["step"] == 6
    # Every request made once a snapshot existed was answered (before, /api/snapshot says "none yet": 404).
    after = [(p, s) for p, s, had_one in answers if had_one]
    assert len(after) >= 12 and all(s == 200 for _, s in after), [a for a in after if a[1] != 200]
    assert latest_seen == sorted(latest_seen) and len(set(latest_seen)) >= 3


# -- hostile requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"step": Infinity}', "Infinity"),
        (b'{"step": NaN}', "NaN"),
        (b"[" * 30000 + b"]" * 30000, "nested too deeply"),
        (b'{"step": 2.9}', "whole number"),
        (b'{"step": true}', "whole number"),
        (b'{"step": -1}', "0 or more"),
        (b'{"settings": {"other_exponent": -1000}}', "other_exponent"),
        (b'{"settings": {"prob_floor": -1}}', "prob_floor"),
    ],
)
def test_hostile_bodies_are_400_naming_what_is_wrong(run, server, body, words):
    for path in ("/api/reweight", "/api/export"):
        status, answer = request(
            server(run), "POST", path, body, headers={"Content-Type": "application/json"}
        )
        assert status == 400 and words in answer["error"], (path, status, answer)
    assert not (run / EXPORT_FILE).exists()


def test_query_steps_must_be_whole_numbers(run, server):
    assert request(server(run), "GET", "/api/snapshot?step=2.9")[0] == 400
    assert request(server(run), "GET", "/api/snapshot?step=2")[0] == 200


def _raw(srv, data: bytes, timeout: float = 5.0) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                part = sock.recv(65536)
            except TimeoutError:
                break
            if not part:
                break
            chunks.append(part)
        return b"".join(chunks)


def test_odd_lengths_and_chunked_bodies_are_read_as_http_says(run, server):
    srv = server(run)
    host = f"Host: 127.0.0.1:{srv.server_address[1]}\r\nX-Nlft-Token: {srv.token}\r\n"
    answer = _raw(srv, b"POST /api/reweight HTTP/1.1\r\n" + host.encode() + b"Content-Type: application/json\r\n"
                  b"Content-Length: -1\r\nConnection: close\r\n\r\n{}")  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 400") and b"not a number of bytes" in answer, answer[
        :200
    ]  # audit N-37
    body = json.dumps({"step": 1, "settings": {"threshold": 0.3}}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    answer = _raw(srv, b"POST /api/reweight HTTP/1.1\r\n" + host.encode() + b"Content-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked)  # fmt: skip
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert (
        json.loads(payload.split(b"\r\n", 1)[-1] if payload[:1] not in b"{" else payload)["settings"][
            "threshold"
        ]
        == 0.3
    )


def test_a_half_sent_request_is_dropped_instead_of_holding_a_thread(run, server, monkeypatch):
    import socket
    import time

    import nlft.see.studio as studio_module

    monkeypatch.setattr(studio_module, "REQUEST_TIMEOUT", 0.5)
    srv = server(run)
    stuck = [socket.create_connection(("127.0.0.1", srv.server_address[1])) for _ in range(20)]
    for sock in stuck:
        sock.sendall(
            b"POST /api/reweight HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Nlft-Token: %s\r\nContent-Length: 100\r\n\r\n{"
            % srv.token.encode()
        )
    time.sleep(1.5)
    for sock in stuck:
        sock.settimeout(2)  # a connection the server kept open would time out here
        data = sock.recv(65536)
        assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:60]  # closed, or refused with a 4xx
        sock.close()
    assert request(srv, "GET", "/api/snapshots")[0] == 200


@pytest.mark.parametrize("spelling", ["LOCALHOST", "127.1", "127.0.0.2"])
def test_the_host_check_follows_the_bound_address_not_its_spelling(run, spelling):
    """Audit N-3: --host LOCALHOST / 127.1 / 127.0.0.2 bind loopback, so foreign Host headers stay refused."""
    from nlft.see.studio import make_server

    srv = make_server(run, host=spelling, port=0)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        assert srv.loopback
        conn = http.client.HTTPConnection(srv.server_address[0], srv.server_address[1], timeout=30)
        for host in ("evil.com", "rebind.evil.com:1234", "localhost.evil.com"):
            conn.request("GET", "/api/state", headers={"Host": host, "X-Nlft-Token": srv.token})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 403, host
        conn.request("GET", "/api/state", headers={"Host": f"{spelling}:1", "X-Nlft-Token": srv.token})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        conn.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_every_api_call_and_file_needs_the_session_token(run, server):
    """Audit N-4: another local user (or a page) without the printed token reads and steers nothing."""
    srv = server(run)
    assert f"?token={srv.token}" in srv.url and len(srv.token) >= 24
    for path in ("/api/state", "/api/snapshots", "/api/live", "/files/run.json"):
        assert request(srv, "GET", path, headers={"X-Nlft-Token": "wrong"})[0] == 403, path
    assert (
        request(srv, "POST", "/api/export", {"step": 1, "settings": {}}, headers={"X-Nlft-Token": ""})[0]
        == 403
    )
    assert not (run / EXPORT_FILE).exists()
    assert request(srv, "GET", "/api/state")[0] == 200  # with the token
    assert request(srv, "GET", f"/files/run.json?token={srv.token}", headers={"X-Nlft-Token": ""})[0] == 200
    assert request(srv, "GET", "/", headers={"X-Nlft-Token": ""})[0] == 200  # the page holds no data


def test_only_a_run_folder_is_served_and_never_its_dot_files(tmp_path, run, server):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("-----BEGIN FAKE PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="not a run folder"):
        Studio(home)
    (run / ".secret").write_text("x")
    srv = server(run)
    assert request(srv, "GET", "/files/.secret")[0] == 403
    assert request(srv, "GET", "/files/run.json")[0] == 200


def test_a_body_too_large_is_413_whether_declared_or_chunked(run, server):
    """Audit N-37: a 10 MB Content-Length got 500 (a 413 inside), a 10 MB chunked body 400 "not valid JSON"."""
    srv = server(run)
    head = (f"POST /api/reweight HTTP/1.1\r\nHost: 127.0.0.1:{srv.server_address[1]}\r\nX-Nlft-Token: {srv.token}\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n").encode()  # fmt: skip
    answer = _raw(srv, head + b"Content-Length: 10485760\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:120]
    piece = b"x" * 65536
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(4)) + b"0\r\n\r\n"
    answer = _raw(srv, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:120]
    assert request(srv, "GET", "/api/snapshots")[0] == 200  # still serving


def test_a_run_folder_whose_parent_is_missing_is_a_typo_not_a_wait(tmp_path):
    with pytest.raises(FileNotFoundError, match="nor a folder"):
        Studio(tmp_path / "no-such" / "run")
    assert (
        Studio(tmp_path / "run-to-be").run_dir == (tmp_path / "run-to-be").resolve()
    )  # a run about to begin
    assert not (tmp_path / "run-to-be").exists()  # waited for, never made
