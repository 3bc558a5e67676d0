"""`heur run PRESET`: validate, launch every run of the preset, show progress, print a summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import typer

from .common import STATE_STYLE, RunsDirOption, fmt, wrapped
from .errors import exits_on_config_error, fail

if TYPE_CHECKING:
    from rich.console import Console
    from rich.tree import Tree

    from heur.core.config import Experiment

GridValue = Union[int, float, str, bool]  # a value of a [grid] axis, as the preset wrote it


def register(app: typer.Typer) -> None:
    @app.command("run")
    @exits_on_config_error
    def run(
        preset: Optional[Path] = typer.Argument(None, help="Preset TOML file.", show_default=False),
        set_: list[str] = typer.Option([], "--set", "-s", help="Override a key: --set optim.lr=0.2 (TOML value)."),
        jobs: Optional[int] = typer.Option(
            None, "--jobs", "-j", min=1, help="Runs at a time (default: one per GPU, or one per CPU core)."
        ),
        detach: bool = typer.Option(False, "--detach", "-d", help="Return at once; the runs go on in the background."),
        resume: Optional[Path] = typer.Option(
            None, "--resume", help="Continue a run or experiment directory from its last checkpoint."
        ),
        runs_dir: Optional[Path] = RunsDirOption,
        dry_run: bool = typer.Option(False, "--dry-run", help="Validate and list the runs, start nothing."),
        rerun_failed: bool = typer.Option(
            False,
            "--rerun-failed",
            help="With --resume: also run failed and diverged runs again (from their checkpoint).",
        ),
        launcher: Optional[str] = typer.Option(
            None, "--launcher", help="local | slurm (a SLURM job per run): sets launch.launcher.", show_default=False
        ),
        nproc: Optional[int] = typer.Option(
            None,
            "--nproc",
            min=1,
            help="Processes per run (> 1: torchrun + DDP): sets launch.nproc.",
            show_default=False,
        ),
        only: list[str] = typer.Option(
            [],
            "--only",
            help="Only the runs with this name or shell pattern ('lr=*'); repeatable. "
            "A run they start from must be selected too (or, with --resume, completed).",
        ),
    ) -> None:
        """Train every run (variant x grid point) of a preset in its own process."""
        from heur.core import launch as L
        from heur.core import runs as R

        if launcher is not None or nproc is not None:  # the preset's [launch] keys (core.launcher)
            if resume is not None:
                fail("--launcher/--nproc apply to a PRESET; a resumed run keeps its [launch] settings")
            set_ = list(set_) + [f"launch.launcher={launcher!r}"] * (launcher is not None)
            set_ += [f"launch.nproc={nproc}"] * (nproc is not None)
        if resume is not None:
            if preset is not None:
                fail("give either PRESET or --resume RUN_DIR, not both")
            plan = R.resume_plan(resume, rerun_failed, only)
            exp_dir = plan.exp_dir
            left = ", ".join(f"{rd.name} ({state})" for rd, state in plan.left)
            if not plan.queued:
                fail(
                    f"{resume}: nothing to resume ("
                    + (f"left {left}: add --rerun-failed" if left else "every run completed")
                    + ")"
                )
            if left:
                print(wrapped(f"left {left} as they ended; --rerun-failed runs them again"))
            R.start_supervisor(exp_dir, jobs, resume=True)
        else:
            if preset is None:
                fail("missing PRESET (a preset TOML file, e.g. presets/warmup_lb.toml)")
            if dry_run:
                exp = L.prepare(preset, set_, only)
                _print_plan(exp)
                _print_tree(exp)
                return
            exp_dir = L.launch(preset, set_, runs_dir, jobs, only)  # the TUI's launch path too
        if detach:
            print(f"started {exp_dir}")
            # one command a line: at 80 columns the three side by side wrapped mid-path
            print(f"  watch: heur runs --runs-dir {exp_dir.parent}")
            print(
                "         heur tui"
                + (f" --runs-dir {exp_dir.parent}" if exp_dir.parent != R.default_runs_dir() else "")
            )
            print(f"  stop:  heur stop {exp_dir}")
            return
        code = watch(exp_dir)
        raise typer.Exit(code)


def _print_plan(exp: Experiment) -> None:
    from rich.console import Console
    from rich.table import Table

    from heur.core.plan import memory_estimate, plan_run

    t = Table(title=f"{exp.name}: {len(exp.runs)} run(s)")
    t.add_column("run", overflow="fold", ratio=3)  # the whole name: grid runs differ at the end
    for c in ("model", "data", "optim", "lr", "batch", "epochs"):
        t.add_column(c, no_wrap=True)
    t.add_column("steps", no_wrap=True)
    # a second table for the sizes: beside the plan's columns they would not fit 80 columns
    m = Table(title="size of each run (float32)")
    m.add_column("run", overflow="fold", ratio=3)
    for c in ("params", "weights", "grads", "optim", "activ.", "data", "total"):
        m.add_column(c, justify="right", no_wrap=True)
    for name, cfg in exp.runs.items():
        if cfg.task == "compare":  # no training: what it compares, and how
            cc = cfg.compare
            t.add_row(name, "compare", cfg.data.name, cc.method, "-", "-", "-", f"{len(cc.checkpoints)} checkpoints")
            continue
        p = plan_run(cfg)  # the effective batch and lr (after lr_scaling), as the run will see them
        lr = fmt(p.base_lr) if p.base_lr is not None else f"{fmt(cfg.optim.lr_ntk)}/λ0"
        t.add_row(
            name,
            cfg.model.name,
            cfg.data.name,
            cfg.optim.name,
            lr,
            str(p.batch_size),
            fmt(p.epochs),
            f"{p.total_steps} ({p.steps_per_epoch}/ep)",
        )
        e = memory_estimate(cfg, p)
        if e is not None:
            parts = (e.weights, e.grads, e.optimizer, e.activations, e.data, e.total)
            m.add_row(name, count(e.params), *(size(v) for v in parts))
    con = Console()
    con.print(t)
    if m.row_count:
        con.print(m)
        con.print(
            "[dim]optim: its state (momentum, Adam's moments); activ.: every layer's output for one "
            "batch; data: the training set, kept on the device. The test set, probes and the "
            "allocator come on top.[/]"
        )


def count(n: int) -> str:
    """A parameter count: 15,245,130 -> 15.2M, 2,410 -> 2.4k."""
    for unit, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= k:
            return f"{n / k:.3g}{unit}"
    return str(n)


def size(b: int) -> str:
    """Bytes in binary units, short: 0 -> 0, 1536 -> 1.5K, 8.5e6 -> 8.1M."""
    v = float(b)
    for unit in ("", "K", "M", "G"):
        if v < 1000 or unit == "G":
            return f"{v:.3g}{unit}" if unit else str(int(v))
        v /= 1024
    return f"{v:.3g}T"


def _print_tree(exp: Experiment) -> None:
    """The runs as a dependency tree: each run under the run whose checkpoint it starts from (a
    run that needs several appears under the first, naming the others). Nothing when no run
    references another."""
    from rich.console import Console
    from rich.tree import Tree

    from heur.core.pipeline import references

    refs = {name: references(cfg) for name, cfg in exp.runs.items()}
    if not any(refs.values()):
        return
    children: dict[str, list[str]] = {name: [] for name in exp.runs}
    roots = []
    for name, r in refs.items():
        parents = list(dict.fromkeys(ref.run for ref in r.values()))
        (children[parents[0]] if parents else roots).append(name)

    def label(name: str) -> str:
        r = refs[name]
        parts = [f"{key} = {ref.text}" for key, ref in r.items()]
        return f"[bold]{name}[/]" + (f"  [dim]{'; '.join(parts)}[/]" if parts else "")

    def add(node: Tree, name: str) -> None:
        for child in children[name]:
            add(node.add(label(child)), child)

    tree = Tree(f"{exp.name}: start order")
    for name in roots:
        add(tree.add(label(name)), name)
    Console().print(tree)


def watch(exp_dir: Path, poll: float = 0.25) -> int:
    """Progress bars until every run has ended; Ctrl-C stops the runs (they checkpoint)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from heur.core import runs as R
    from heur.core.summary import write_summary

    console = Console()
    run_dirs = R.run_dirs(exp_dir)
    console.print(f"[bold]{exp_dir}[/]: {len(run_dirs)} run(s)")
    console.print("[dim]Ctrl-C stops them (checkpointed, resumable); closing the terminal does not[/]")
    width = max([len(rd.name) for rd in run_dirs] + [4])
    # at 80 columns the lr and a long bar do not fit beside the step counts: they go first
    narrow = console.width < width + 75
    fields = "{task.fields[state]} loss {task.fields[loss]:>8}" + ("" if narrow else " lr {task.fields[lr]:>8}")
    progress = Progress(
        TextColumn(f"{{task.fields[name]:<{width}}}"),
        BarColumn(bar_width=10 if narrow else 16),
        MofNCompleteColumn(),
        TextColumn(fields),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    tasks = {rd: progress.add_task("", total=None, name=rd.name, state="queued", loss="-", lr="-") for rd in run_dirs}
    stop_sent = False
    with progress:
        while True:
            try:
                states = []
                for rd, tid in tasks.items():
                    st = R.read_status(rd)
                    states.append(st.state)
                    style = STATE_STYLE.get(st.state, "")
                    shown = "waiting" if st.state == "queued" and st.needs else st.state
                    progress.update(
                        tid,
                        total=st.total_steps or None,
                        completed=st.step,
                        state=f"[{style}]{shown}[/]" if style else shown,
                        loss=fmt(st.raw.get("loss")),
                        lr=fmt(st.raw.get("lr")),
                    )
                if all(s in R.FINAL_STATES for s in states):
                    break
                time.sleep(poll)
            except KeyboardInterrupt:
                if stop_sent:
                    console.print("[yellow]left the runs as they are[/]")
                    return 130
                stop_sent = True
                n = R.stop_experiment(exp_dir)
                console.print(
                    f"[yellow]stopping {n} run(s): they save a checkpoint "
                    f"(resume: heur run --resume {exp_dir}); Ctrl-C again to leave them[/]"
                )
    summary = write_summary(exp_dir)
    print_summary(summary, console)
    if stop_sent:  # stopped by Ctrl-C: what shells expect of an interrupted command
        return 130
    return 1 if any(r["state"] in ("failed", "lost", "skipped") for r in summary["runs"]) else 0


_HIDDEN = {"run", "state", "reason", "step", "total_steps", "train_loss_running", "sharpness_step", "cca_last_epoch"}
_HEADERS = {"train_accuracy": "train acc", "test_accuracy": "test acc", "wall_time": "time s"}


def print_summary(summary: dict, console: Optional[Console] = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    rows = summary["runs"]
    extra: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in _HIDDEN and k not in extra and not isinstance(v, (dict, list)) and v is not None:
                extra.append(k)
    for i, cols in enumerate(_column_chunks(rows, extra, console.width)):
        title = f"summary: {summary['experiment']}" if i == 0 else None
        t = Table(title=title)
        t.add_column("run", no_wrap=True)
        t.add_column("state", no_wrap=True)
        for k in cols:
            t.add_column(_HEADERS.get(k, k.replace("_", " ")), justify="right")
        for r in rows:
            style = STATE_STYLE.get(r["state"], "")
            t.add_row(r["run"], f"[{style}]{r['state']}[/]", *(summary_cell(r, k) for k in cols))
        console.print(t)
    for r in rows:
        if r["state"] in ("failed", "diverged", "lost", "stopped", "skipped") and r.get("reason"):
            console.print(escape(wrapped(f"{r['run']}: {r['state']}: {r['reason']}", "  ", width=console.width)))
    grid = summary.get("grid") or {}
    if len(grid) == 2:
        print_grid_heatmap(summary, console)
    from .plane_view import print_planes  # plane runs (task = "plane"): their grids

    print_planes(summary, console)
    print_verdicts(summary.get("verdicts") or [], console)
    console.print(f"summary.json: {Path(summary['path']) / 'summary.json'}")


def summary_cell(row: dict, key: str) -> str:
    """A summary value as printed: a CCA settle epoch equal to the last snapshot's means the
    layers never settled before the end (their similarity to the end is 1 only at the end)."""
    v = row.get(key)
    last = row.get("cca_last_epoch")
    if key.endswith("_settle") and isinstance(v, (int, float)) and isinstance(last, (int, float)) and v >= last:
        return "never"
    return fmt(v, 3)


def _column_chunks(rows: list[dict], extra: list[str], width: int) -> list[list[str]]:
    """Split the metric columns into tables that fit the terminal's width (never a 1-char column)."""
    fixed = max([len(r["run"]) for r in rows] + [3]) + max([len(r["state"]) for r in rows] + [5]) + 7
    chunks: list[list[str]] = [[]]
    used = fixed
    for k in extra:
        header = _HEADERS.get(k, k.replace("_", " "))
        w = max(8, max(len(part) for part in header.split())) + 3
        if chunks[-1] and used + w > width:
            chunks.append([])
            used = fixed
        chunks[-1].append(k)
        used += w
    return chunks


def print_verdicts(rows: list[dict], console: Console) -> None:
    """The theory check (core.verdicts): one line each, green when it holds, red when not."""
    from rich.markup import escape

    if not rows:
        return
    console.print("[bold]verdict[/]")
    for v in rows:
        style = {True: "green", False: "red"}.get(v.get("ok"), "")
        # folded here, with a hanging indent, so a long verdict reads as one item at 80 columns
        text = escape(wrapped(v["text"], "  ", width=console.width))
        console.print(f"[{style}]{text}[/]" if style else text, soft_wrap=True)


def _label(v: GridValue) -> str:
    """A grid value as the preset writes it (1024, not 1.02e+03)."""
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _heat_metric(rows: list[dict]) -> str:
    for k in ("test_loss", "train_loss", "train_loss_running"):
        if any(r.get(k) is not None for r in rows):
            return k
    return "train_loss"


def print_grid_heatmap(summary: dict, console: Console) -> None:
    """A two-axis grid as a coloured table of the final loss; diverged cells marked."""
    import math

    from rich.table import Table

    (ka, va), (kb, vb) = list(summary["grid"].items())
    rows = summary["runs"]
    metric = _heat_metric(rows)

    def index(values: list, v: GridValue) -> int:  # a grid value as written (1 == 1.0)
        return next((i for i, x in enumerate(values) if x == v), -1)

    cell = {}
    for r in rows:
        p = r.get("params") or {}
        cell[(index(va, p.get(ka)), index(vb, p.get(kb)))] = r
    vals = [r.get(metric) for r in rows if r.get(metric) is not None and r["state"] != "diverged"]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    t = Table(title=f"final {metric.replace('_', ' ')} (lower is greener)", caption=f"rows: {ka}, columns: {kb}")
    t.add_column(ka.split(".")[-1] + " \\ " + kb.split(".")[-1], no_wrap=True)
    for b in vb:
        t.add_column(_label(b), justify="right")
    for i, a in enumerate(va):
        cells = []
        for j in range(len(vb)):
            r = cell.get((i, j))
            if r is None:
                cells.append("")
            elif r["state"] == "diverged":
                cells.append("[bold magenta]DIV[/]")
            elif r.get(metric) is None:
                cells.append(f"[dim]{r['state']}[/]")
            else:
                v = r[metric]
                x = (
                    0.0
                    if hi <= lo
                    else (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
                    if lo > 0 and v > 0
                    else (v - lo) / (hi - lo)
                )
                colour = "green" if x < 0.33 else ("yellow" if x < 0.66 else "red")
                cells.append(f"[{colour}]{fmt(v, 3)}[/]")
        t.add_row(_label(a), *cells)
    console.print(t)
