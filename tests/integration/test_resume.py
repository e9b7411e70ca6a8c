"""Resume after SIGTERM at a random step, mid-epoch, with the streaming loader and 2 workers: the same
sha256 of every output as an uninterrupted run, under every executor (inline, local 2 ranks, Slurm 2 nodes).

The pipeline is ``test_pipeline.two_node`` (shard the digits, pretrain the debug ResNet for 2 epochs of
22 steps, ``checkpoint_every: 5``, ``num_workers: 2``) with a log line per step. A watcher thread
reads the stage's progress and, once training is past a step drawn with ``random.Random`` (mid-epoch,
clear of the epoch's ends and of the checkpoint cadence), sends SIGTERM:

* inline: to this process (the stage runs here; the ControlHook's handler only sets a flag);
* local: to ONE rank's child process (the ranks agree through the ControlHook's all_reduce);
* slurm-task: to ONE task's training process (the "nodes" are this host);
* slurm: ``scancel --signal=TERM JOB``, i.e. what Slurm itself does at a time limit or a preemption
  without warning: SIGTERM to every process of the job's step, the loader workers included.

Every rank checkpoints at the next step boundary and the stage stops: inline/local record it
"interrupted"; under Slurm a SIGTERM does not requeue (only USR2 does, see test_pipeline.py), the
tasks exit and the stage is recorded failed (the job ended without results). ``runner.resume_run``
then continues the stage from that checkpoint, and every output must have the uninterrupted run's
sha256 (Slurm is compared with the local 2-rank run, like the other Slurm tests).

``FRUGALCV_RESUME_SEED=<int>`` draws other steps (the default is fixed, so a failure reproduces).
"""

import io
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_pipeline import two_node

from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.runner import PipelineFailed

pytestmark = pytest.mark.integration

EPOCHS = 2
#: optimizer steps per epoch: 1437 training digits // 64 per global batch (full batches only)
STEPS = 22
SEED = int(os.environ.get("FRUGALCV_RESUME_SEED", "1729"))
STEP_LINE = re.compile(r"^pretrain step (\d+) epoch (\d+) ", re.M)
RESUMED = re.compile(r"resumed from (\S+) \(step (\d+), epoch (\d+)\)")


def config(root, kind):
    return two_node(root, kind, checkpoint_every=5, epochs=EPOCHS, num_workers=2, log_every=1)


def outputs(root, rid) -> dict[str, dict[str, str]]:
    """{stage: {output: sha256}} of every stage of the run."""
    return {s["stage"]: {name: ref["sha256"] for name, ref in s["outputs"].items()}
            for s in runner.status(rid, str(root))["stages"]}


def draw_step(kind: str) -> int:
    """A global step after which the signal goes out: mid-epoch, clear of the epoch's ends (the stop
    lands a step or two later), and not on the 5-step checkpoint cadence."""
    rng = random.Random(f"{SEED}:{kind}")
    choices = [e * STEPS + k for e in range(EPOCHS) for k in range(2, STEPS - 5) if (e * STEPS + k) % 5 not in (0, 4)]
    return rng.choice(choices)


def run_folder(root) -> Path | None:
    runs = sorted((Path(root) / "runs").glob("*/run.json"))
    return runs[-1].parent if runs else None


def logged_step(folder: Path) -> int:
    """The newest step in the pretrain stage's rank-0 log (local/inline log, or the Slurm job's log)."""
    best = -1
    for log in [folder / "logs" / "pretrain.log", *folder.glob("slurm/*/*_0_log.out")]:
        try:
            found = STEP_LINE.findall(log.read_text(errors="replace"))
        except OSError:
            continue
        if found:
            best = max(best, int(found[-1][0]))
    return best


def stage_log(folder: Path, kind: str) -> str:
    if kind == "slurm":
        return "".join(p.read_text(errors="replace") for p in sorted(folder.glob("slurm/*/*_0_log.out")))
    return (folder / "logs" / "pretrain.log").read_text(errors="replace")


class Interrupter(threading.Thread):
    """Waits until ``progress()`` (the newest logged step) reaches ``at_step``, then calls ``send(run folder)``
    once; ``sent`` is (the step logged then, to whom it went). If the run has not come back ``grace_s``
    after the signal, ``on_hang(run folder)`` ends the stage's processes and ``hung`` says so, so that a
    stage that does not stop fails the test instead of hanging it."""

    def __init__(self, root, at_step: int, progress, send, on_hang=None, timeout_s: float = 600,
                 grace_s: float = 120):
        super().__init__(daemon=True)
        self.root, self.at_step, self.progress, self.send = root, at_step, progress, send
        self.on_hang, self.timeout_s, self.grace_s = on_hang, timeout_s, grace_s
        self.sent: tuple[int, str] | None = None
        self.hung: str | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        try:
            while not self.done.is_set() and time.monotonic() < deadline:
                folder = run_folder(self.root)
                step = self.progress(folder) if folder else -1
                if step >= self.at_step:
                    self.sent = (step, self.send(folder))
                    if not self.done.wait(self.grace_s) and self.on_hang is not None:
                        self.hung = self.on_hang(folder)
                    return
                time.sleep(0.05)
        except BaseException as e:  # reported by the test
            self.error = e


class StepSpy(io.TextIOBase):
    """sys.stdout for an inline run: passes text on, remembers the newest "pretrain step N" line.

    (The inline executor's stage log is a buffered file, written out only when the stage ends.)"""

    def __init__(self, out):
        self.out, self.step, self._line = out, -1, ""

    def write(self, text: str) -> int:
        self._line += text
        *lines, self._line = self._line.split("\n")
        for line in lines:
            if m := STEP_LINE.match(line):
                self.step = max(self.step, int(m.group(1)))
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


# ------------------------------------------------------------------------------------ senders


def to_this_process(folder: Path) -> str:
    os.kill(os.getpid(), signal.SIGTERM)
    return f"pid {os.getpid()} (this process: the inline stage)"


def _processes() -> dict[int, tuple[int, bytes, dict[bytes, bytes]]]:
    """{pid: (parent pid, command line, environment)} of the processes this user may read."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = dict(kv.split(b"=", 1) for kv in (proc / "environ").read_bytes().split(b"\0") if b"=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        found[int(proc.name)] = (ppid, cmd, env)
    return found


def _ranks(match) -> dict[int, int]:
    """{rank: pid} of the processes that ``match(cmdline, env)``, without their loader workers (forked
    children with the same command line and environment)."""
    procs = {pid: p for pid, p in _processes().items() if match(p[1], p[2])}
    return {int(env.get(b"RANK", env.get(b"SLURM_PROCID", b"0"))): pid
            for pid, (ppid, _, env) in procs.items() if ppid not in procs}


def to_one_rank(rank: int):
    """SIGTERM to one rank's process of the local executor (a child of this process)."""

    def send(folder: Path) -> str:
        spec = str(folder / "stages" / "pretrain" / "spec.json").encode()
        ranks = _ranks(lambda cmd, env: spec in cmd)
        assert sorted(ranks) == [0, 1], f"rank processes of the stage: {ranks}"
        os.kill(ranks[rank], signal.SIGTERM)
        return f"rank {rank} (pid {ranks[rank]}) of {sorted(ranks.values())}"

    return send


def _pretrain_job(folder: Path) -> str:
    return runner.status(folder.name, str(folder.parent.parent))["stages"][1]["slurm_job_ids"][-1]


def cancel_the_slurm_job(folder: Path) -> str:
    job = _pretrain_job(folder)
    alive = _ranks(lambda cmd, env: b"submitit.core._submit" in cmd and env.get(b"SLURM_JOB_ID") == job.encode())
    subprocess.run(["scancel", job], timeout=30)
    return f"Slurm job {job} still running; tasks (rank: pid) alive: {alive}; cancelled"


def kill_the_ranks(folder: Path) -> str:
    spec = str(folder / "stages" / "pretrain" / "spec.json").encode()
    alive = _ranks(lambda cmd, env: spec in cmd)
    for pid in alive.values():
        os.kill(pid, signal.SIGKILL)
    return f"rank processes (rank: pid) still alive: {alive}; killed"


def to_the_slurm_job(folder: Path) -> str:
    """What Slurm itself does on a time limit or a preemption without warning: SIGTERM to every
    process of the job's steps (the tasks and their loader workers), not to the batch script."""
    job = _pretrain_job(folder)
    subprocess.run(["scancel", "--signal=TERM", job], check=True, timeout=30)
    return f"Slurm job {job} (scancel --signal=TERM: every process of its step)"


def to_one_slurm_task(rank: int):
    """SIGTERM to one task's training process (the node is this host: found in /proc)."""

    def send(folder: Path) -> str:
        job = _pretrain_job(folder).encode()
        ranks = _ranks(lambda cmd, env: b"submitit.core._submit" in cmd and env.get(b"SLURM_JOB_ID") == job)
        assert sorted(ranks) == [0, 1], f"task processes of job {job.decode()}: {ranks}"
        os.kill(ranks[rank], signal.SIGTERM)
        return f"task {rank} (pid {ranks[rank]}) of Slurm job {job.decode()}"

    return send


# ------------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """{stage: {output: sha256}} of an uninterrupted run per executor (computed once per module)."""
    done: dict[str, dict] = {}

    def get(kind: str) -> dict:
        if kind not in done:
            root = tmp_path_factory.mktemp(f"uninterrupted-{kind}")
            t0 = time.monotonic()
            rid = runner.run_pipeline(config(root, kind), track=False, printer=print)
            done[kind] = outputs(root, rid)
            assert logged_step(Path(runner.status(rid, str(root))["run_folder"])) == EPOCHS * STEPS
            print(f"uninterrupted {kind} run: {time.monotonic() - t0:.0f}s")
        return done[kind]

    return get


@pytest.mark.parametrize("kind", ["inline", "local", "slurm-task", "slurm"])
def test_sigterm_mid_epoch_then_resume_gives_the_same_sha256_of_every_output(kind, tmp_path, request, monkeypatch,
                                                                              uninterrupted):
    executor = kind.split("-")[0]
    if executor == "slurm":
        request.getfixturevalue("slurm_cluster")
    # a Slurm run is compared with the local 2-rank run: the same 2 ranks, gloo, the same code
    expected = uninterrupted("local" if executor == "slurm" else kind)
    at = draw_step(kind)
    progress = logged_step
    if kind == "inline":
        spy = StepSpy(sys.stdout)
        monkeypatch.setattr(sys, "stdout", spy)
        progress, send = (lambda folder: spy.step), to_this_process
        # a SIGTERM outside the ControlHook's window must fail this test, not end pytest
        stray: list[int] = []
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stray.append(signum))
        request.addfinalizer(lambda: signal.signal(signal.SIGTERM, previous))
    elif kind == "local":
        send = to_one_rank(random.Random(f"{SEED}:{kind}:rank").randrange(2))
    elif kind == "slurm-task":
        send = to_one_slurm_task(random.Random(f"{SEED}:{kind}:rank").randrange(2))
    else:
        send = to_the_slurm_job
    print(f"[{kind}] SIGTERM once step {at} (epoch {at // STEPS}, step {at % STEPS} of {STEPS} done) is logged "
          f"(FRUGALCV_RESUME_SEED={SEED})")

    cfg = config(tmp_path, executor)
    on_hang = {"local": kill_the_ranks, "slurm": cancel_the_slurm_job}.get(executor)
    watcher = Interrupter(tmp_path, at, progress, send, on_hang)
    watcher.start()
    t0 = time.monotonic()
    try:
        runner.run_pipeline(cfg, track=False, printer=print)
        ended = "finished"
    except PipelineFailed as e:
        ended = str(e)
    finally:
        watcher.done.set()
        watcher.join(30)
    took = time.monotonic() - t0
    assert watcher.error is None, watcher.error
    assert watcher.sent is not None, f"the stage never logged step {at} (the run {ended})"
    assert ended != "finished", f"the run finished although SIGTERM went to {watcher.sent[1]}"
    assert watcher.hung is None, f"the stage did not end {watcher.grace_s:.0f}s after the SIGTERM: {watcher.hung}"
    if kind == "inline":
        assert not stray, "the SIGTERM arrived outside training (the ControlHook's handler was not installed)"
    print(f"[{kind}] SIGTERM sent at logged step {watcher.sent[0]} to {watcher.sent[1]}")

    folder = run_folder(tmp_path)
    rid = folder.name
    st = runner.status(rid, str(tmp_path))
    pretrain = st["stages"][1]
    assert st["stages"][0]["state"] == "finished"
    assert pretrain["state"] == "failed", pretrain
    print(f"[{kind}] interrupted run: {took:.0f}s; {pretrain['error'].splitlines()[0]}")
    if executor != "slurm":
        m = re.match(r"interrupted: preempted by SIGTERM at step (\d+); checkpoint (\S+);", pretrain["error"])
        assert m, pretrain["error"]
        assert Path(m.group(2)).exists() and m.group(2).endswith(f"step-{int(m.group(1)):08d}.pt")

    newest = max((int(p.stem.split("-")[1]) for p in (folder / "stages" / "pretrain" / "checkpoints").glob("step-*.pt")),
                 default=None)
    assert newest is not None and newest >= watcher.sent[0], (
        f"no checkpoint at the step boundary after the SIGTERM (sent at step {watcher.sent[0]}, newest checkpoint: "
        f"step {newest}); the stage ended with: {pretrain['error'][-3000:]}")

    t1 = time.monotonic()
    assert runner.resume_run(rid, str(tmp_path), printer=print) == rid
    took_resume = time.monotonic() - t1
    st = runner.status(rid, str(tmp_path))
    assert [s["state"] for s in st["stages"]] == ["finished", "finished"]
    resumed = RESUMED.findall(stage_log(folder, executor))
    assert len(resumed) == 1, resumed
    url, step, epoch = resumed[0][0], int(resumed[0][1]), int(resumed[0][2])
    assert url.endswith(f"step-{step:08d}.pt")
    if executor != "slurm":
        assert step == int(m.group(1))
    assert epoch == step // STEPS and 0 < step - epoch * STEPS < STEPS, f"not mid-epoch: step {step}, epoch {epoch}"
    assert watcher.sent[0] <= step <= watcher.sent[0] + 3, (watcher.sent, step)
    print(f"[{kind}] resumed from step {step} (epoch {epoch}, {step - epoch * STEPS} of {STEPS} steps done): "
          f"{took_resume:.0f}s")
    assert outputs(tmp_path, rid) == expected
