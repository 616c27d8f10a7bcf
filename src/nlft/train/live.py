"""Weighting settings changed while a run trains: ``nlft studio``'s "apply to this run".

Three files in the run folder carry it, each written atomically by one side only:

* ``live-weighting.json`` (the studio): the latest request, ``{"seq": n, "settings": {...}}``;
* ``training.json`` (the training process): whether it is training, its pid and host, the step it is at, the
  last request it applied (or why it refused one);
* ``weighting-schedule.json`` (the training process): every change with the step it took effect at. The run's
  ``config.yaml`` names it as ``weighting_schedule``, so ``nlft train --config RUN/config.yaml`` replays the
  same settings at the same steps, and a resumed run starts from the settings in force at its step.

Only the weighting changes; nothing else of the run does. Under several processes the main one reads the
request and every process receives it (one small broadcast per step, the same collective on every rank), so
all ranks switch at the same step. A studio must hold ``.studio.lock`` (an ``flock``) to send requests: a
second studio on the same run is refused instead of racing the first.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..method.weighting import WeightingConfig
from .callbacks import TrainerAware

logger = logging.getLogger(__name__)

REQUEST_FILE = "live-weighting.json"
STATUS_FILE = "training.json"
SCHEDULE_FILE = "weighting-schedule.json"
LOCK_FILE = ".studio.lock"
LIVE_ENTRIES = (REQUEST_FILE, STATUS_FILE, SCHEDULE_FILE, LOCK_FILE)
HEARTBEAT_SECONDS = 2.0  # how often training.json is rewritten while steps go by
STALE_SECONDS = 120.0  # a status from another host older than this is taken as a run no longer training


@dataclass(frozen=True)
class Change:
    """From optimizer step ``step`` on (1-based), these weighting fields have these values."""

    step: int
    settings: dict[str, Any]
    seq: int | None = None  # the studio request it came from
    source: str = "nlft studio"

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "settings": self.settings, "seq": self.seq, "source": self.source}


def parse_schedule(value: Any, where: str) -> list[Change]:
    """A schedule from its JSON form (a list of ``{"step", "settings"}``), each entry checked."""
    if not isinstance(value, list):
        raise ValueError(
            f"{where}: a weighting schedule is a list of {{step, settings}}, got {type(value).__name__}"
        )
    out: list[Change] = []
    for i, entry in enumerate(value):
        at = f"{where}, entry {i + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("settings"), dict):
            raise ValueError(f"{at}: needs 'step' and 'settings' (a mapping of weighting fields)")
        step = entry.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"{at}: step must be a whole number >= 1, got {step!r}")
        if out and step < out[-1].step:
            raise ValueError(f"{at}: steps must not decrease ({step} after {out[-1].step})")
        settings = WeightingConfig.coerce_mapping(entry["settings"], at)
        seq = entry.get("seq")
        out.append(
            Change(step, settings, seq if isinstance(seq, int) else None, str(entry.get("source", "")))
        )
    return out


def load_schedule(spec: str | None) -> list[Change]:
    """``weighting_schedule``: a JSON or YAML file, or the list inline as JSON; None or "" is no schedule."""
    if not spec:
        return []
    text, where = spec, "--weighting_schedule"
    if not spec.lstrip().startswith("["):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(
                f"--weighting_schedule {spec}: no such file (or give the list inline as JSON)"
            )
        text, where = path.read_text(encoding="utf-8"), str(path)
    from ..files import parse_yaml

    try:
        value = parse_yaml(text, where)
    except ValueError as exc:
        raise ValueError(f"not JSON or YAML: {exc}") from None
    return parse_schedule(value, where)


def settings_at(base: WeightingConfig, schedule: list[Change], step: int) -> WeightingConfig:
    """The settings in force at optimizer step ``step``: ``base`` with every change up to it laid over."""
    cfg = base
    for change in schedule:
        if change.step <= step:
            cfg = cfg.replace(change.settings)
    return cfg


def _write_json(path: Path, value: Any) -> None:
    from ..jsonl import atomic_write_text

    atomic_write_text(path, json.dumps(value, indent=1) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------------------
# The training side
# --------------------------------------------------------------------------------------------------------------


class LiveWeighting(TrainerAware):
    """Applies the schedule at its steps and the studio's requests at the next step; keeps ``training.json``."""

    def __init__(self, run_dir: str | Path, schedule: list[Change], *, poll: bool = True):
        self.run_dir = Path(run_dir)
        self.schedule = list(schedule)
        self.poll = poll
        self.base: WeightingConfig | None = None
        self.applied_seq = 0
        self.rejected: str | None = None
        self._last_beat = 0.0
        self._in_force: WeightingConfig | None = None

    # -- files (main process only) ---------------------------------------------------------------------------
    def _main(self, state) -> bool:
        return bool(state.is_world_process_zero)

    def _status(self, state, training: bool) -> None:
        _write_json(
            self.run_dir / STATUS_FILE,
            {
                "training": training,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "step": state.global_step,
                "max_steps": state.max_steps,
                "applied_seq": self.applied_seq,
                "rejected": self.rejected,
                "settings": (self._in_force or self.base).to_dict()
                if (self._in_force or self.base)
                else None,
                "updated": time.time(),
            },
        )
        self._last_beat = time.monotonic()

    def _save_schedule(self) -> None:
        import yaml

        from ..files import parse_yaml
        from ..jsonl import atomic_write_text

        path = self.run_dir / SCHEDULE_FILE
        _write_json(path, [c.to_json() for c in self.schedule])
        config = self.run_dir / "config.yaml"
        if config.is_file() and not config.is_symlink():
            values = parse_yaml(config.read_text(encoding="utf-8"), str(config)) or {}
            if isinstance(values, dict) and values.get("weighting_schedule") != str(path.resolve()):
                values["weighting_schedule"] = str(path.resolve())
                atomic_write_text(config, yaml.safe_dump(values, sort_keys=False))
        from ..runs import RUN_FILE

        info = read_json(self.run_dir / RUN_FILE)
        info = info if isinstance(info, dict) else {}
        info["weighting_schedule"] = [c.to_json() for c in self.schedule]
        _write_json(self.run_dir / RUN_FILE, info)

    def _read_request(self) -> dict | None:
        request = read_json(self.run_dir / REQUEST_FILE)
        if not isinstance(request, dict) or not isinstance(request.get("seq"), int):
            return None
        return request if request["seq"] > self.applied_seq else None

    # -- callback --------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise RuntimeError("LiveWeighting needs its trainer (nlft.train.run binds it)")
        self.base = self.trainer.weighting
        seqs = [c.seq for c in self.schedule if c.seq is not None]
        self.applied_seq = max(seqs, default=0)
        request = read_json(self.run_dir / REQUEST_FILE) if self._main(state) else None
        if isinstance(request, dict) and isinstance(request.get("seq"), int):
            # A request left from before this process started is not replayed: the schedule holds what applied.
            self.applied_seq = max(self.applied_seq, request["seq"])
        self._apply(state, state.global_step + 1, log=False)
        if self._main(state):
            self._status(state, training=True)
        return control

    def on_step_begin(self, args, state, control, **kwargs):
        step = state.global_step + 1
        request = self._read_request() if self.poll and self._main(state) else None
        if self.poll and args.world_size > 1:
            from accelerate.utils import broadcast_object_list

            box = [request]
            broadcast_object_list(box, from_process=0)
            request = box[0]
        if request is not None:
            try:
                settings = WeightingConfig.coerce_mapping(request.get("settings") or {}, REQUEST_FILE)
                settings_at(self.base, self.schedule, step).replace(settings)  # the combination must be valid
            except (ValueError, TypeError) as exc:
                self.rejected = f"request {request['seq']}: {exc}"
                logger.warning("live weighting: refused %s", self.rejected)
            else:
                self.rejected = None
                self.schedule.append(
                    Change(step, settings, request["seq"], str(request.get("source", "nlft studio")))
                )
                if self._main(state):
                    self._save_schedule()
            self.applied_seq = request["seq"]
        self._apply(state, step, log=True)
        if self._main(state) and (
            request is not None or time.monotonic() - self._last_beat > HEARTBEAT_SECONDS
        ):
            self._status(state, training=True)
        return control

    def _apply(self, state, step: int, *, log: bool) -> None:
        cfg = settings_at(self.base, self.schedule, step)
        if cfg == self._in_force:
            return
        previous, self._in_force = self._in_force, cfg
        self.trainer.weighting = cfg
        if previous is None and cfg == self.base:
            return
        changed = {k: v for k, v in cfg.to_dict().items() if previous is None or previous.to_dict()[k] != v}
        logger.info("weighting from step %d: %s", step, ", ".join(f"{k}={v}" for k, v in changed.items()))
        if log:
            numbers = {f"weighting/{k}": float(v) for k, v in changed.items() if isinstance(v, (int, float))}
            self.trainer.log({**numbers, "weighting_step": float(step)})

    def on_train_end(self, args, state, control, **kwargs):
        if self._main(state):
            self._status(state, training=False)
        return control


# --------------------------------------------------------------------------------------------------------------
# The studio side
# --------------------------------------------------------------------------------------------------------------


def training_status(run_dir: Path) -> dict | None:
    """``training.json`` when the run is training now (its process alive), else None."""
    status = read_json(run_dir / STATUS_FILE)
    if not isinstance(status, dict) or not status.get("training"):
        return None
    if status.get("host") == socket.gethostname():
        try:
            pid = int(status.get("pid", -1))
            os.kill(pid, 0)
        except (ProcessLookupError, ValueError, OverflowError):
            return None
        except PermissionError:
            pass  # alive, another user's
        if _zombie(pid):
            return None  # dead, not yet reaped by its parent: it will never read a request
    elif time.time() - float(status.get("updated", 0)) > STALE_SECONDS:
        return None
    return status


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited but not been reaped (Linux: state Z in /proc); False where that cannot be told."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class StudioLock:
    """The right to send requests to one run: an exclusive ``flock`` on ``RUN/.studio.lock``, held while the
    studio lives (the kernel drops it if the process dies)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        import fcntl

        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def request_settings(run_dir: Path, lock: StudioLock, settings: dict[str, Any]) -> dict[str, Any]:
    """Send ``settings`` (weighting fields, checked here first) to the run training in ``run_dir``."""
    status = training_status(run_dir)
    if status is None:
        raise LookupError(
            f"{run_dir} is not training now: settings can only be applied to a run while it trains"
        )
    if not lock.acquire():
        raise PermissionError(
            f"another nlft studio (pid {lock.holder()}) is applying settings to {run_dir}; only one may"
        )
    checked = WeightingConfig.coerce_mapping(settings, "settings")
    previous = read_json(run_dir / REQUEST_FILE)
    seq = (
        max(
            int(previous.get("seq", 0))
            if isinstance(previous, dict) and isinstance(previous.get("seq"), int)
            else 0,
            int(status.get("applied_seq") or 0),
        )
        + 1
    )
    _write_json(
        run_dir / REQUEST_FILE, {"seq": seq, "settings": checked, "source": "nlft studio", "at": time.time()}
    )
    return {"seq": seq, "step": status.get("step"), "settings": checked}
