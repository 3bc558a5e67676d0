"""Run directories: creating, launching, listing, stopping, reading status and checkpoints.

    runs/<preset>-<YYYYmmdd-HHMMSS>/      an experiment: one launch of a preset
      experiment.toml                      the preset as resolved (overrides applied)
      supervisor.json                      pid of the process that starts the queued runs
      summary.json                         written when every run has ended
      <run>/config.toml                    the fully resolved config of one run
      <run>/events.jsonl, status.json, stdout.log, checkpoints/

Processes are launched with no pipe back to the launcher (stdin from /dev/null, output to
``stdout.log``, a new session), so a dying terminal or UI cannot kill them; stopping sends
SIGTERM to the run's process group. A run's state is one of queued, running, completed,
diverged, failed, stopped, skipped (a run it references did not complete: ``core.pipeline``) or
lost (its process is gone without an ``end`` event); the process
start time is kept beside the pid, so a recycled pid is not taken for a live run. A run started
by a launcher other than the local one says so in status.json (``launcher``: core.launcher):
torchrun's keeps the pid of torchrun itself; a SLURM job's keeps its ``job_id``, and its liveness
is read from the heartbeat and squeue (core.slurm_queue), not from a local pid.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import tomllib

from . import slurm_queue
from .atomic import write_json_atomic
from .checkpoint import load_checkpoint
from .config import Experiment, RunConfig, dumps_toml, load_toml, validate_run
from .errors import ConfigError

# a run is queued, running, or has ended in one of these
FINAL_STATES = ("completed", "diverged", "failed", "stopped", "skipped", "lost")


def default_runs_dir() -> Path:
    return Path(os.environ.get("HEUR_RUNS_DIR") or "runs")


# --------------------------------------------------------------------------- processes


def process_start_time(pid: int) -> Optional[int]:
    """The process's start time (clock ticks since boot, Linux) or None if it is gone/zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        if sys.platform.startswith("linux"):
            return None
        try:  # other systems: existence only
            os.kill(pid, 0)
            return 0
        except OSError:
            return None
    rest = stat[stat.rfind(")") + 2 :].split()
    if rest[0] in ("Z", "X"):
        return None
    return int(rest[19])


def pid_alive(pid: Optional[int], start_time: Optional[int]) -> bool:
    if not pid:
        return False
    st = process_start_time(pid)
    if st is None:
        return False
    return start_time is None or st == start_time or st == 0


def run_alive(status: dict[str, Any]) -> bool:
    """Whether the process (or SLURM job) that status.json names still lives: a local pid with its
    start time (the local launcher and torchrun), or a job's heartbeat and squeue (SLURM)."""
    if status.get("launcher") == "slurm":
        return slurm_queue.alive(status)
    return pid_alive(status.get("pid"), status.get("pid_start"))


def signal_run(status: dict[str, Any], sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to the run status.json names: its process group (torchrun forwards it to every
    rank), or its SLURM job (``scancel --signal``). True if something was signalled."""
    if status.get("launcher") == "slurm":
        return bool(status.get("job_id")) and slurm_queue.cancel(
            str(status["job_id"]), signal.Signals(sig).name.removeprefix("SIG")
        )
    pid = status.get("pid")
    if not pid:
        return False
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        os.kill(pid, sig)
    return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


class StatusWriter:
    """Writes ``status.json`` atomically; ``heartbeat`` at most every 2 s, ``update`` every 1 s."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "status.json"
        self.data = _read_json(self.path)
        self._last = 0.0
        self._pid_start: Optional[int] = None  # this process's start time, read once

    def update(self, force: bool = False, **fields: Any) -> None:
        from .events import sanitize

        self.data.update(sanitize(fields))
        now = time.time()
        if force or now - self._last >= 1.0:
            self._flush(now)

    def heartbeat(self, **fields: Any) -> None:
        now = time.time()
        if now - self._last >= 2.0:
            self.data.update(fields)
            self._flush(now)

    def _flush(self, now: float) -> None:
        self.data["heartbeat"] = now
        if self.data.get("pid") == os.getpid():
            if self._pid_start is None:
                self._pid_start = process_start_time(os.getpid())
            self.data["pid_start"] = self._pid_start
        write_json_atomic(self.path, self.data)
        self._last = now


# --------------------------------------------------------------------------- experiments


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def create_experiment(exp: Experiment, runs_dir: Path | str | None = None) -> Path:
    """Make the experiment directory with every run queued; returns its path."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    base = re.sub(r"[^\w.-]+", "-", exp.name).strip("-.") or "experiment"
    path = runs_dir / f"{base}-{_timestamp()}"
    k = 1
    while path.exists():
        k += 1
        path = runs_dir / f"{base}-{_timestamp()}-{k}"
    path.mkdir(parents=True)
    meta = {"heur": {"source": exp.source, "created": time.time(), "runs": list(exp.runs)}}
    (path / "experiment.toml").write_text(dumps_toml({**exp.resolved, **meta}))
    from .pipeline import dependencies

    for name, cfg in exp.runs.items():
        rd = path / name
        rd.mkdir()
        (rd / "config.toml").write_text(dumps_toml(cfg.to_dict()))
        status = {"state": "queued", "name": name, "created": time.time(), "task": cfg.task}
        needs = dependencies(cfg)
        if needs:
            status["needs"] = needs  # what a queued run waits for (heur runs, the TUI)
        write_json_atomic(rd / "status.json", status)
    return path


def read_run_config(run_dir: Path | str) -> RunConfig:
    p = Path(run_dir) / "config.toml"
    raw = load_toml(p, "run config", missing=("not a run directory (no config.toml)", str(run_dir)))
    return validate_run(raw, str(p))


def run_dirs(exp_dir: Path) -> list[Path]:
    order = []
    try:
        meta = tomllib.loads((exp_dir / "experiment.toml").read_text()).get("heur", {})
        order = meta.get("runs", [])
    except (OSError, tomllib.TOMLDecodeError):
        pass
    found = sorted(p for p in exp_dir.iterdir() if (p / "config.toml").is_file()) if exp_dir.is_dir() else []
    rank = {n: i for i, n in enumerate(order)}
    return sorted(found, key=lambda p: (rank.get(p.name, len(rank)), p.name))


@dataclass
class ExperimentInfo:
    path: Path
    name: str
    created: float
    runs: list[Path] = field(default_factory=list)


def list_experiments(runs_dir: Path | str | None = None) -> list[ExperimentInfo]:
    """Experiments under ``runs_dir``, newest first."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    out = []
    if not runs_dir.is_dir():
        return out
    for p in runs_dir.iterdir():
        if not (p / "experiment.toml").is_file():
            continue
        try:
            raw = tomllib.loads((p / "experiment.toml").read_text())
        except (OSError, tomllib.TOMLDecodeError):
            raw = {}
        created = raw.get("heur", {}).get("created") or p.stat().st_mtime
        out.append(ExperimentInfo(p, str(raw.get("name", p.name)), float(created), run_dirs(p)))
    out.sort(key=lambda e: e.created, reverse=True)
    return out


def find_experiment(ref: str, runs_dir: Path | str | None = None) -> Path:
    """An experiment or run directory given as a path, or as a name under the runs directory."""
    p = Path(ref)
    if p.is_dir():
        return p
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    if (runs_dir / ref).is_dir():
        return runs_dir / ref
    raise ConfigError(f"no experiment or run named {ref!r} (looked in {runs_dir})", key="RUN_OR_EXPERIMENT")


# --------------------------------------------------------------------------- status


@dataclass
class RunStatus:
    path: Path
    name: str
    state: str
    pid: Optional[int] = None
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    heartbeat: Optional[float] = None
    reason: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def needs(self) -> list[str]:
        """The runs of the same experiment whose checkpoints this run starts from."""
        return [str(n) for n in self.raw.get("needs") or []]


def _end_event(run_dir: Path) -> Optional[dict[str, Any]]:
    """The last ``end`` event, read from the file's tail."""
    p = run_dir / "events.jsonl"
    try:
        with open(p, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read()
    except OSError:
        return None
    for line in reversed(tail.split(b"\n")):
        if b'"end"' in line:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("kind") == "end":
                return ev
    return None


def _last_lifecycle(run_dir: Path) -> Optional[dict[str, Any]]:
    """The last ``start``/``resume``/``end`` event in the tail of events.jsonl; ``{"kind": None}``
    when the tail has events but none of those; None when there are no events."""
    p = run_dir / "events.jsonl"
    try:
        with open(p, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read()
    except OSError:
        return None
    if not tail.strip():
        return None
    for line in reversed(tail.split(b"\n")):
        if b'"start"' in line or b'"resume"' in line or b'"end"' in line:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and ev.get("kind") in ("start", "resume", "end"):
                return ev
    return {"kind": None}


def supervisor_gone(exp_dir: Path | str) -> Optional[dict[str, Any]]:
    """supervisor.json when the process it names is gone (its queued runs will never start);
    None when it lives or none was started yet."""
    sup = _read_json(Path(exp_dir) / "supervisor.json")
    if not sup.get("pid") or pid_alive(sup.get("pid"), sup.get("pid_start")):
        return None
    return sup


def read_status(run_dir: Path | str) -> RunStatus:
    """The run's state; a ``running`` run whose process is gone is ``lost`` (or its ``end`` state).

    The events are the truth where status.json cannot say: an unreadable status.json is read
    from the last lifecycle event (``end`` -> its state, ``start``/``resume`` -> lost, none ->
    queued), and a run status.json calls queued or running whose last event is a completed ``end``
    is completed. A queued run whose supervisor is gone (killed) is ``lost``: nothing will start it."""
    run_dir = Path(run_dir)
    d, readable = _read_status_json(run_dir / "status.json")
    if not readable:
        ev = _last_lifecycle(run_dir)
        d = {"name": run_dir.name, "state": "queued"}
        if ev is not None and ev.get("kind") == "end":
            d.update(state=ev.get("state", "failed"), result=ev.get("result") or {}, reason=ev.get("reason", ""))
            d.update(step=ev.get("step", 0))
        elif ev is not None:
            d.update(state="lost", reason="status.json is unreadable and the events have no end")
        if ev is not None:
            d["reason"] = (d.get("reason") or "") + " (state read from events.jsonl: status.json is unreadable)"
    state = d.get("state", "queued")
    if state in ("queued", "running"):
        ev = _last_lifecycle(run_dir) if state == "queued" else None
        if ev is not None and ev.get("kind") == "end" and ev.get("state") == "completed":
            state = "completed"
            d.setdefault("result", ev.get("result") or {})
            d["reason"] = ev.get("reason", "")
    slurm_job = d.get("job_id") if d.get("launcher") == "slurm" else None
    if state == "running" and not run_alive(d):
        end = _end_event(run_dir)
        if end is not None:
            state = end.get("state", "failed")
            d.setdefault("result", end.get("result") or {})
            d.setdefault("reason", end.get("reason", ""))
        else:
            state = "lost"
            d.setdefault(
                "reason",
                f"SLURM job {slurm_job} vanished without an end event"
                if slurm_job
                else "the process vanished without an end event",
            )
    if state == "queued" and slurm_job:  # submitted: SLURM starts it, whatever the supervisor does
        if not run_alive(d):
            state = "lost"
            d["reason"] = f"SLURM job {slurm_job} vanished before the run started: heur run --resume {run_dir.parent}"
    elif state == "queued":
        sup = supervisor_gone(run_dir.parent)
        if sup is not None:
            state = "lost"
            d["reason"] = f"queued, but its supervisor (pid {sup['pid']}) is gone: heur run --resume {run_dir.parent}"
    return RunStatus(
        path=run_dir,
        name=d.get("name", run_dir.name),
        state=state,
        pid=d.get("pid"),
        step=int(d.get("step") or 0),
        total_steps=int(d.get("total_steps") or 0),
        epoch=float(d.get("epoch") or 0.0),
        heartbeat=d.get("heartbeat"),
        reason=d.get("reason", ""),
        result=d.get("result") or {},
        raw=d,
    )


def _read_status_json(path: Path) -> tuple[dict[str, Any], bool]:
    """(status.json's dict, whether it was readable as a JSON object with a state)."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, False
    if not isinstance(d, dict) or not isinstance(d.get("state"), str):
        return {}, False
    return d, True


def latest_checkpoint(run_dir: Path | str) -> Optional[Path]:
    """The checkpoint with the highest step (``final.pt`` beats all)."""
    found = checkpoints_newest_first(run_dir)
    return found[0] if found else None


def checkpoints_newest_first(run_dir: Path | str) -> list[Path]:
    """``final.pt``, then the ``step_<n>``/``restart_<k>`` checkpoints by decreasing step (a
    restart file whose step cannot be read comes last): the order a resume tries them in."""
    ck = Path(run_dir) / "checkpoints"
    ranked: list[tuple[int, str, Path]] = []
    for p in ck.glob("*.pt"):
        m = re.fullmatch(r"(?:step|restart)_(\d+)\.pt", p.name)
        if not m:
            continue
        try:  # restart_<k> files are named by index: read the step from the file name of step_ ones only
            step = int(m.group(1)) if p.name.startswith("step_") else _checkpoint_step(p)
        except Exception:
            step = -1
        ranked.append((step, p.name, p))
    ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
    out = [p for _, _, p in ranked]
    return ([ck / "final.pt"] if (ck / "final.pt").is_file() else []) + out


def _checkpoint_step(path: Path) -> int:
    return int(load_checkpoint(path)["step"])


# --------------------------------------------------------------------------- launching


def _spawn(
    args: list[str], log: Path, env: Optional[dict[str, str]] = None, pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
            pass_fds=pass_fds,
        )


def run_command(run_dir: Path, resume: bool = False, nproc: int = 1) -> list[str]:
    """The command line of a run's process: ``python -m <task module> RUN_DIR [--resume]``, or
    with ``nproc > 1`` torchrun starting ``nproc`` ranks of it on this machine (core.distributed)."""
    from .pipeline import TASKS

    task = _read_json(Path(run_dir) / "status.json").get("task", "train")
    module = TASKS[task].module if task in TASKS else TASKS["train"].module
    tail = [str(run_dir)] + (["--resume"] if resume else [])
    if nproc <= 1:
        return [sys.executable, "-m", module] + tail
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",  # torchrun, which ships with torch
        "--standalone",  # a rendezvous of its own on a free local port: several runs side by side
        "--nnodes=1",
        f"--nproc-per-node={nproc}",
        "--max-restarts=0",  # a rank that dies ends the run (failed); heur run --resume continues it
        "--monitor-interval=0.5",
        "-m",
        module,
    ] + tail


def end_if_silent(run_dir: Path, reason: str) -> bool:
    """End a run ``failed`` when its process has gone without an ``end`` event (a rank, or the
    SLURM job, died before rank 0 could write one): an ``end`` event, status.json and a line in
    stdout.log, so the run reads as failed, not lost. False when the run had ended by itself."""
    from .events import EventWriter

    run_dir = Path(run_dir)
    if _end_event(run_dir) is not None:
        return False
    st = _read_json(run_dir / "status.json")
    if st.get("state") not in ("running", "queued"):
        return False
    with EventWriter(run_dir / "events.jsonl") as ev:
        ev.emit(
            "end", int(st.get("step") or 0), float(st.get("epoch") or 0.0), state="failed", reason=reason, result={}
        )
    with open(run_dir / "stdout.log", "a") as f:
        f.write(f"heur: {reason}\n")
    st.update(state="failed", reason=reason, heartbeat=time.time())
    write_json_atomic(run_dir / "status.json", st)
    return True


def launch_run(run_dir: Path, resume: bool = False, env_extra: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """Start one run's training process, detached, output to ``stdout.log`` (core.launcher's
    local launcher)."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(env_extra or {})
    args = run_command(run_dir, resume)
    proc = _spawn(args, Path(run_dir) / "stdout.log", env)
    st = _read_json(Path(run_dir) / "status.json")
    st.update(state="running", pid=proc.pid, pid_start=process_start_time(proc.pid), heartbeat=time.time())
    write_json_atomic(Path(run_dir) / "status.json", st)
    return proc


def _lock_supervisor(exp_dir: Path) -> Optional[int]:
    """An fd holding the experiment's ``supervisor.lock`` (flock), or ConfigError when another
    process holds it. The supervisor inherits the fd, so the lock lives exactly as long as it."""
    try:
        import fcntl
    except ImportError:  # no flock here: supervisor.json's pid check only
        return None
    fd = os.open(exp_dir / "supervisor.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        sup = _read_json(exp_dir / "supervisor.json")
        raise ConfigError(
            f"another supervisor (pid {sup.get('pid', '?')}) is running this experiment: "
            f"wait for it, or heur stop {exp_dir}",
            file=str(exp_dir),
        ) from None
    return fd


def start_supervisor(exp_dir: Path, jobs: Optional[int] = None, resume: bool = False) -> subprocess.Popen:
    """Start the detached process that runs the experiment's queued runs, ``jobs`` at a time.
    One per experiment: ConfigError while another one lives (``supervisor.lock``)."""
    exp_dir = Path(exp_dir)
    fd = _lock_supervisor(exp_dir)
    args = [sys.executable, "-m", "heur.core.supervise", str(exp_dir)]
    if jobs:
        args += ["--jobs", str(jobs)]
    if resume:
        args.append("--resume")
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        proc = _spawn(args, exp_dir / "supervisor.log", env, pass_fds=(fd,) if fd is not None else ())
        write_json_atomic(
            exp_dir / "supervisor.json",
            {"pid": proc.pid, "pid_start": process_start_time(proc.pid), "jobs": jobs, "started": time.time()},
        )
    finally:
        if fd is not None:
            os.close(fd)  # the supervisor's copy holds the lock now
    return proc


def queue_resume(target: Path, rerun_failed: bool = False) -> tuple[Path, list[Path]]:
    """Mark the unfinished runs of a run or experiment directory queued again.

    Returns (experiment dir, runs queued). Completed runs are left alone, and so are failed and
    diverged ones unless ``rerun_failed`` (:func:`resume_plan` says which were left)."""
    plan = resume_plan(target, rerun_failed)
    return plan.exp_dir, plan.queued


@dataclass
class ResumePlan:
    exp_dir: Path
    queued: list[Path] = field(default_factory=list)
    left: list[tuple[Path, str]] = field(default_factory=list)  # (run, state): failed/diverged, not re-queued


def _wait_for_idle_supervisor(exp_dir: Path, timeout: float = 30.0) -> None:
    """Return once no supervisor runs the experiment. One that still has queued or running runs:
    ConfigError at once; one with nothing left (finishing after ``heur stop``): wait for it to exit."""
    deadline = time.time() + timeout
    while True:
        sup = _read_json(exp_dir / "supervisor.json")
        if not (sup.get("pid") and pid_alive(sup.get("pid"), sup.get("pid_start"))):
            return
        busy = any(read_status(rd).state in ("queued", "running") for rd in run_dirs(exp_dir))
        if busy or time.time() > deadline:
            raise ConfigError(
                f"its supervisor (pid {sup['pid']}) is still running: wait for it, or heur stop {exp_dir}",
                file=str(exp_dir),
            )
        time.sleep(0.1)


def resume_plan(target: Path, rerun_failed: bool = False, only: Optional[list[str]] = None) -> ResumePlan:
    """:func:`queue_resume` with the runs it left: ConfigError while a run of it is running or
    its supervisor lives (one supervisor per experiment). ``only``: names or patterns of the
    experiment's runs to consider (:mod:`core.select`: a run they start from must be among them
    or completed)."""
    target = Path(target)
    if (target / "config.toml").is_file():
        exp_dir, candidates = target.parent, [target]
    elif (target / "experiment.toml").is_file():
        exp_dir, candidates = target, run_dirs(target)
    else:
        raise ConfigError("not a run or experiment directory (no config.toml / experiment.toml)", file=str(target))
    if only:
        from .select import check_closed, match_runs

        picked = set(match_runs([rd.name for rd in candidates], only))
        candidates = [rd for rd in candidates if rd.name in picked]
        check_closed(
            [rd.name for rd in candidates],
            lambda n: read_status(exp_dir / n).needs,
            lambda n: read_status(exp_dir / n).state == "completed",
        )
    _wait_for_idle_supervisor(exp_dir)
    plan = ResumePlan(exp_dir)
    again: list[tuple[Path, RunStatus]] = []
    for rd in candidates:
        st = read_status(rd)
        if st.state == "running":
            raise ConfigError(f"run {rd.name} is still running (pid {st.pid}); stop it first", file=str(rd))
        if st.state == "completed":
            continue
        if st.state in ("failed", "diverged") and not rerun_failed:
            plan.left.append((rd, st.state))
            continue
        read_run_config(rd)  # a config that no longer reads: exit 2 naming it, before any status changes
        again.append((rd, st))
    for rd, st in again:
        d = dict(st.raw)
        d.update(state="queued", pid=None, pid_start=None, reason="")
        for k in ("job_id", "submitted"):  # a SLURM run is submitted anew
            d.pop(k, None)
        write_json_atomic(rd / "status.json", d)
        plan.queued.append(rd)
    return plan


# --------------------------------------------------------------------------- removing


@dataclass
class Removal:
    """What ``heur rm`` is about to delete: a run or an experiment directory, and how much."""

    path: Path
    kind: str  # "run" | "experiment"
    runs: int
    bytes: int

    def describe(self) -> str:
        mb = self.bytes / 2**20
        n = f"{self.runs} run{'s' if self.runs != 1 else ''}, " if self.kind == "experiment" else ""
        return f"{self.kind} {self.path.name} ({n}{mb:.3g} MiB)"


def _live(exp_dir: Path, runs: list[Path]) -> Optional[str]:
    """Why removing would pull the floor from under a process: a running run, or a supervisor
    that lives (it would start queued runs into a deleted directory)."""
    for rd in runs:
        st = read_status(rd)
        if st.state == "running":
            return f"run {rd.name} is running (pid {st.pid}): heur stop {rd} first"
    sup = _read_json(exp_dir / "supervisor.json")
    if sup.get("pid") and pid_alive(sup.get("pid"), sup.get("pid_start")):
        if any(read_status(rd).state == "queued" for rd in run_dirs(exp_dir)):
            return f"its supervisor (pid {sup['pid']}) will start queued runs: heur stop {exp_dir} first"
    return None


def removal(target: Path | str) -> Removal:
    """Check that ``target`` is a run or experiment directory heur made and that nothing of it is
    live; ConfigError otherwise (nothing is deleted here: :func:`remove` does it)."""
    target = Path(target)
    if (target / "experiment.toml").is_file():
        kind, exp_dir, runs = "experiment", target, run_dirs(target)
    elif (target / "config.toml").is_file() and (target.parent / "experiment.toml").is_file():
        kind, exp_dir, runs = "run", target.parent, [target]
    else:
        raise ConfigError("not a run or experiment directory (no config.toml / experiment.toml)", file=str(target))
    why = _live(exp_dir, runs)
    if why:
        raise ConfigError(f"not removed: {why}", file=str(target))
    size = 0
    for f in target.rglob("*"):
        try:
            if f.is_file() and not f.is_symlink():
                size += f.stat().st_size
        except OSError:
            pass
    return Removal(target, kind, len(runs), size)


def remove(what: Removal) -> None:
    """Delete what :func:`removal` described, after checking again that nothing of it went live
    in the meantime; a run leaves its experiment's list of runs too."""
    import shutil

    again = removal(what.path)  # a run started while the user read the prompt: refused
    shutil.rmtree(again.path)
    if again.kind == "run":
        toml_path = again.path.parent / "experiment.toml"
        try:
            raw = tomllib.loads(toml_path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            return
        meta = raw.get("heur") or {}
        if again.path.name in (meta.get("runs") or []):
            meta["runs"] = [n for n in meta["runs"] if n != again.path.name]
            from .atomic import replace_atomic

            text = dumps_toml(raw)
            replace_atomic(toml_path, lambda tmp: tmp.write_text(text))


# --------------------------------------------------------------------------- stopping


def stop_run(run_dir: Path | str, sig: int = signal.SIGTERM) -> bool:
    """SIGTERM to the run's process group (it checkpoints and ends ``stopped``).

    A queued run is marked stopped. Returns True if something was signalled or marked.
    """
    run_dir = Path(run_dir)
    st = read_status(run_dir)
    if st.state == "queued":
        d = dict(st.raw)
        if d.get("launcher") == "slurm" and d.get("job_id"):  # pending in SLURM: the job goes
            slurm_queue.cancel(str(d["job_id"]))
        d.update(state="stopped", reason="stopped before it started")
        write_json_atomic(run_dir / "status.json", d)
        return True
    if st.state != "running" or not (st.pid or st.raw.get("job_id")):
        return False
    return signal_run(st.raw, sig)


def mark_skipped(run_dir: Path | str, reason: str) -> None:
    """End a queued run ``skipped`` (a run it needs did not complete): status, an ``end`` event
    and a line in ``stdout.log``, so the run directory reads like any ended run."""
    from .events import EventWriter

    run_dir = Path(run_dir)
    with EventWriter(run_dir / "events.jsonl") as ev:
        ev.emit("end", 0, 0.0, state="skipped", reason=reason, result={})
    with open(run_dir / "stdout.log", "a") as f:
        f.write(f"skipped: {reason}\n")
    d = _read_json(run_dir / "status.json")
    d.update(state="skipped", reason=reason, heartbeat=time.time())
    write_json_atomic(run_dir / "status.json", d)


def stop_experiment(exp_dir: Path | str) -> int:
    """Stop the supervisor (so nothing queued starts) and every run; returns runs signalled."""
    exp_dir = Path(exp_dir)
    sup = _read_json(exp_dir / "supervisor.json")
    if pid_alive(sup.get("pid"), sup.get("pid_start")):
        try:
            os.kill(sup["pid"], signal.SIGTERM)
        except OSError:
            pass
    return sum(stop_run(rd) for rd in run_dirs(exp_dir))


def stop(target: Path | str) -> int:
    """Stop a run or an experiment directory; returns the runs signalled or marked stopped."""
    target = Path(target)
    if (target / "experiment.toml").is_file():
        return stop_experiment(target)
    if (target / "config.toml").is_file():
        return int(stop_run(target))
    raise ConfigError("not a run or experiment directory (no config.toml / experiment.toml)", file=str(target))
