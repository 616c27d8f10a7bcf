"""The six HIGH failures of the second hostile-user audit (issue 24), replayed as a user would, each checked.

    python scripts/check_audit_high.py

Runs the ``nlft`` commands in a temporary folder (offline: nlft:mini, the arithmetic judge, the studio in this
process) and prints one line per item; exits 1 if any still fails. Each item is also a unit test (named below).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def nlft(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nlft", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def refused(proc: subprocess.CompletedProcess, words: str) -> bool:
    return proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr


def n1(tmp: Path) -> bool:
    """eval --overwrite never deletes a user's settings.json / summary.json (tests/evals/test_evaluation.py)."""
    proj = tmp / "proj"
    proj.mkdir()
    (proj / "settings.json").write_text('{"theme": "dark", "font": 12}\n')
    (proj / "summary.json").write_text('{"mine": 1}\n')
    ok = True
    for extra in ([], ["--overwrite"]):
        proc = nlft("eval", "nlft:mini", "--data", "mini-math:test", "--limit", "2", "--out", "proj", "--quiet",
                    *extra, cwd=tmp)  # fmt: skip
        ok &= refused(proc, "not the settings of an nlft evaluation")
    return (
        ok
        and json.loads((proj / "settings.json").read_text()) == {"theme": "dark", "font": 12}
        and json.loads((proj / "summary.json").read_text()) == {"mine": 1}
    )


def n2(tmp: Path) -> bool:
    """data build / data import replace only their own outputs (tests/data/test_builder.py)."""
    web = tmp / "webext"
    web.mkdir()
    (web / "manifest.json").write_text('{"manifest_version": 3, "name": "my extension"}')
    (web / "nlft.jsonl").write_text('{"my": "data"}\n')
    pool = tmp / "pool.jsonl"
    proc = nlft("data", "import", "gold", "mini-math", "--limit", "6", "--out", str(pool), cwd=tmp)
    ok = proc.returncode == 0
    for extra in ([], ["--overwrite"]):
        ok &= refused(nlft("data", "build", str(pool), "--size", "3", "--ratio", "correct", "--out", "webext", *extra,
                           cwd=tmp), "not a dataset nlft data build made")  # fmt: skip
    ok &= (web / "nlft.jsonl").read_text() == '{"my": "data"}\n'
    (tmp / "mine.jsonl").write_text("precious\n")
    ok &= refused(nlft("data", "import", "gold", "mini-math", "--limit", "3", "--out", "mine.jsonl", "--overwrite",
                       cwd=tmp), "not records nlft data import wrote")  # fmt: skip
    return ok and (tmp / "mine.jsonl").read_text() == "precious\n"


def _run_folder(tmp: Path) -> Path:
    run = tmp / "runA"
    run.mkdir()
    (run / "run.json").write_text('{"method": "nlft"}')
    (run / ".secret").write_text("dot-file")
    return run


def _get(url: str, host: str | None = None, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if host:
        request.add_header("Host", host)
    if token is not None:
        request.add_header("X-Nlft-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _serving(run: Path, host: str):
    from nlft.see.studio import make_server

    server = make_server(run, host=host, port=0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def n3(tmp: Path) -> bool:
    """--host LOCALHOST / 127.1 / 127.0.0.2 keep the DNS-rebinding check (tests/see/test_studio.py)."""
    run, ok = _run_folder(tmp), True
    for spelling in ("LOCALHOST", "127.1", "127.0.0.2"):
        server = _serving(run, spelling)
        base = f"http://{server.server_address[0]}:{server.server_address[1]}"
        ok &= _get(f"{base}/api/state", host="evil.com", token=server.token) == 403
        ok &= (
            _get(f"{base}/api/state", host=f"127.0.0.1:{server.server_address[1]}", token=server.token) == 200
        )
        server.shutdown()
        server.server_close()
    return ok


def n4(tmp: Path) -> bool:
    """Only a run folder is served, never its dot-files, and only to the session's token (tests/see/test_studio.py)."""
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("-----BEGIN FAKE PRIVATE KEY-----\n")
    ok = refused(nlft("studio", str(home), "--port", "0", cwd=tmp, timeout=60), "not a run folder")
    run = tmp / "runA" if (tmp / "runA").exists() else _run_folder(tmp)
    server = _serving(run, "127.0.0.1")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    ok &= _get(f"{base}/files/.secret", token=server.token) == 403
    ok &= _get(f"{base}/files/run.json") == 403 and _get(f"{base}/api/state", token="guess") == 403
    ok &= _get(f"{base}/files/run.json", token=server.token) == 200
    server.shutdown()
    server.server_close()
    return ok


def n5(tmp: Path) -> bool:
    """A named pipe as --out is refused at once, not read forever (tests/test_files.py)."""
    os.mkfifo(tmp / "out.jsonl")
    records = tmp / "s.jsonl"
    records.write_text(json.dumps({"id": "r", "question": "q", "response": "1+1 = 3\n#### 3", "reference": "#### 2",
                                   "correct": False}) + "\n")  # fmt: skip
    started = time.time()
    proc = nlft("judge", "s.jsonl", "--out", "out.jsonl", "--no-progress", cwd=tmp, timeout=60)
    return refused(proc, "named pipe") and time.time() - started < 30


BOMB = (
    "["
    + ", ".join(
        ['&a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        + [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    )
    + "]"
)


def n6(tmp: Path) -> bool:
    """A YAML alias bomb is refused before it expands (tests/test_files.py)."""
    config = (ROOT / "configs" / "tiny-nlft.yaml").read_text() + f"lora_target_modules: {BOMB}\n"
    (tmp / "bomb.yaml").write_text(config)
    started = time.time()
    proc = nlft(
        "train", "--config", "bomb.yaml", "--output_dir", "rb", "--report_to", "none", cwd=tmp, timeout=60
    )
    (tmp / "tbomb.yaml").write_text(f'system: "x"\nbase: {{system: "{{system}}", user: {BOMB}}}\n'
                                    "std: {system: s, user: u}\njudge: {system: s, user: u}\n")  # fmt: skip
    build = nlft(
        "data", "build", "s.jsonl", "--size", "1", "--templates", "tbomb.yaml", "--out", "o1", cwd=tmp
    )
    return refused(proc, "aliases") and refused(build, "aliases") and time.time() - started < 60


def main() -> int:
    failed = 0
    with tempfile.TemporaryDirectory() as root:
        for check in (n1, n2, n3, n4, n5, n6):
            tmp = Path(root) / check.__name__
            tmp.mkdir()
            if check is n6:
                (tmp / "s.jsonl").write_text(
                    '{"id": "r", "question": "q", "response": "#### 1", "reference": "#### 1"}\n'
                )
            ok = check(tmp)
            failed += not ok
            print(
                f"{'PASS' if ok else 'FAIL'}  {check.__name__.upper().replace('N', 'N-')}  {check.__doc__.strip()}"
            )
    print(f"\n{6 - failed} of 6 HIGH items hold")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
