"""Processes whose clocks disagree: kickq's clock follows Redis's, so none skews another's jobs.

A skewed process is simulated by moving both of its clocks: freezegun (ticking) moves what
kickq's timers read, and `kickq._model.clock.host_time`, the host's real clock the offset to Redis's
TIME is measured with, is moved by the same amount. To that process its host's clock is off.
"""

from __future__ import annotations

import datetime
import logging
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from freezegun import freeze_time

import kickq
import kickq._engine.runtime
import kickq._engine.skew
import kickq._model.clock
from support import wait_until

SKEW = 30.0
HANDLER_SLEEP = 1.0  # long enough for a skewed timer to meet the run in progress


def real_now() -> float:
    """The host's real clock, which neither freezegun nor a test's skew moves."""
    return time.clock_gettime(time.CLOCK_REALTIME)


def started_at(job: kickq.Job, data: object) -> float:
    """A handler: sleeps a little, returns when it started on the host's real clock."""
    began = real_now()
    time.sleep(HANDLER_SLEEP)
    return began


# A kickq process whose host's clock is off by its first argument (seconds): see the module's
# docstring. Its role: "idle" (kickq's timer alone), "worker" or "create".
CHILD = """
import datetime, sys, time
from freezegun import freeze_time
import kickq, kickq._model.clock

skew, role = float(sys.argv[1]), sys.argv[2]
real_host = kickq._model.clock.host_time
kickq._model.clock.host_time = lambda: real_host() + skew
freeze_time(
    datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=skew), tick=True
).start()

def started_at(job, data):
    began = time.clock_gettime(time.CLOCK_REALTIME)
    time.sleep(<SLEEP>)
    return began

if role == "create":  # jobs with a delay, and the real time just before creating them
    before = time.clock_gettime(time.CLOCK_REALTIME)
    futures = [kickq.create(sys.argv[3], delay=float(sys.argv[4])) for _ in range(3)]
    print(before, *[future.result(10).id for future in futures], flush=True)
    kickq.reset()
    sys.exit(0)
if role == "worker":
    kickq.process(sys.argv[3], started_at, concurrent_jobs=4)
kickq.get("0" * 32).exception(10)  # the engine is up: its clock checked, its timer running
print("ready", flush=True)
sys.stdin.read()  # until the test is done with it
kickq.reset()
""".replace("<SLEEP>", repr(HANDLER_SLEEP))


class Child:
    """A skewed kickq process that lives until `stop()`; what it logged is in `log`."""

    def __init__(self, env: dict[str, str], skew: float, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(skew), *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = ""

    def ready(self) -> None:
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            self.stop()
            pytest.fail(f"the skewed process did not start: {self.log}")

    def stop(self) -> None:
        if self.process.returncode is None:
            self.log = self.process.communicate("", timeout=30)[1]


@pytest.fixture
def children(subprocess_env: dict[str, str]) -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        if child.process.returncode is None:
            child.process.kill()
            child.process.communicate(timeout=10)


def start_child(made: list[Child], env: dict[str, str], skew: float, *args: str) -> Child:
    child = Child(env, skew, *args)
    made.append(child)
    child.ready()
    return child


def hold_the_first_check(r: redis.Redis) -> None:
    """Redis answers nobody for 0.3 s: what the next engine is asked for meanwhile comes before
    its first clock check is done."""
    r.execute_command("CLIENT", "PAUSE", "300", "ALL")


def warned_of(log: str, skew: float) -> bool:
    """Whether a process logged the WARNING that names its skew (ahead or behind)."""
    side = "ahead of" if skew > 0 else "behind"
    found = re.search(rf"clock is (\d+\.\d+) s {side} the clock of the Redis", log)
    return found is not None and abs(float(found.group(1)) - abs(skew)) < 1.0


@pytest.mark.both_backends
def test_a_fast_process_does_not_ghost_the_healthy_runs_of_another(
    subprocess_env: dict[str, str], children: list[Child]
) -> None:
    """A process 30 s fast that only runs kickq's timer: the runs here (1 s each, a 20 s
    process_timeout) are not ghosted by it; each job runs once and succeeds."""
    child = start_child(children, subprocess_env, SKEW, "idle")
    kickq.process("steady", started_at, concurrent_jobs=4)
    jobs = [
        kickq.create("steady", process_timeout=20, ghost_interval=0).result(10) for _ in range(4)
    ]
    done = [kickq.wait(job.id, timeout=30).result(40) for job in jobs]
    child.stop()
    assert [[run.state for run in job.runs] for job in done] == [["success"]] * 4
    assert warned_of(child.log, SKEW), child.log


@pytest.mark.both_backends
def test_a_slow_worker_s_runs_are_not_ghosted_and_it_stays_listed(
    subprocess_env: dict[str, str], children: list[Child]
) -> None:
    """A worker process 30 s slow: its runs' deadlines are on Redis's clock, so this process
    does not ghost them; its heartbeat keeps it in workers()."""
    child = start_child(children, subprocess_env, -SKEW, "worker", "slowpoke")
    jobs = [
        kickq.create("slowpoke", process_timeout=20, ghost_interval=0).result(10) for _ in range(4)
    ]
    done = [kickq.wait(job.id, timeout=30).result(40) for job in jobs]
    listed = kickq.workers().result(10)
    child.stop()
    assert [[run.state for run in job.runs] for job in done] == [["success"]] * 4
    assert [worker.names for worker in listed] == [("slowpoke",)]
    assert warned_of(child.log, -SKEW), child.log


def test_a_fast_process_does_not_start_delayed_jobs_early(
    subprocess_env: dict[str, str], children: list[Child]
) -> None:
    """Jobs delayed 3 s here start no sooner for a process 30 s fast running its timer (to
    within the clocks' bound of agreement)."""
    start_child(children, subprocess_env, SKEW, "idle")
    kickq.process("patient", started_at, concurrent_jobs=3)
    before = real_now()
    jobs = [kickq.create("patient", delay=3).result(10) for _ in range(3)]
    done = [kickq.wait(job.id, timeout=30).result(40) for job in jobs]
    assert all(job.state == "success" for job in done)
    earliest = before + 3 - 2 * kickq._engine.skew.BOUND
    assert all(job.result >= earliest for job in done), [job.result - before for job in done]


@pytest.mark.both_backends
@pytest.mark.parametrize("skew", [SKEW, -SKEW], ids=["fast", "slow"])
def test_a_skewed_creator_s_delays_count_on_redis_s_clock(
    subprocess_env: dict[str, str], skew: float
) -> None:
    """Jobs delayed 3 s by a process 30 s fast or slow (its first calls) start 3 s later:
    not at once, not 30 s late."""
    kickq.process("delayed", started_at, concurrent_jobs=3)
    made = subprocess.run(
        [sys.executable, "-c", CHILD, str(skew), "create", "delayed", "3"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    before, *ids = made.stdout.split()
    done = [kickq.wait(job_id, timeout=20).result(30) for job_id in ids]
    assert all(job.state == "success" for job in done)
    earliest = float(before) + 3 - 2 * kickq._engine.skew.BOUND
    assert all(job.result >= earliest for job in done), [job.result - float(before) for job in done]
    assert warned_of(made.stderr, skew), made.stderr


def test_under_freezegun_the_check_leaves_frozen_time_alone() -> None:
    """The offset is measured with the host's real clock: under a frozen clock it is about
    zero, and frozen time still drives every time kickq records."""
    frozen_at = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    with freeze_time(frozen_at):
        job = kickq.create("frozen").result(10)
        assert kickq._engine.runtime.get().clock_check.measured
    assert job.create_time == frozen_at
    assert kickq._model.clock.offset() == 0.0


def test_a_wait_begun_before_the_correction_keeps_its_timeout(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A process 30 s slow whose first call is a wait with a 20 s timeout: the correction
    that follows (+30 s) moves the wait's deadline too, so it does not time out at once, and
    the job's end resolves it."""
    job = kickq.create("awaited").result(10)
    unserved = kickq.create("unserved").result(10)
    # the next call starts an engine whose clock is not checked yet
    kickq._engine.runtime.shutdown()
    real_host = kickq._model.clock.host_time
    monkeypatch.setattr(kickq._model.clock, "host_time", lambda: real_host() - SKEW)
    skewed = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=SKEW)
    hold_the_first_check(r)
    with caplog.at_level(logging.WARNING, "kickq"), freeze_time(skewed, tick=True):
        waiting = kickq.wait(job.id, timeout=20)
        wait_until(lambda: kickq._model.clock.offset() > SKEW - 1, what="the correction")
        # a wait begun after the correction times out: the timer has passed the first
        # wait's deadline too, had it stayed where it was set (20 s before this one's)
        probe = kickq.wait(unserved.id, timeout=0.5)
        assert isinstance(probe.exception(10), kickq.HotjobTimeout)
        assert not waiting.done()
        kickq.process("awaited", lambda job, data: "done")
        assert waiting.result(30).result == "done"
    assert warned_of(caplog.text, -SKEW), caplog.text


@pytest.mark.parametrize("moved", [SKEW, -SKEW])
def test_a_wait_listed_while_the_clock_is_being_corrected_keeps_its_timeout(
    r: redis.Redis, moved: float
) -> None:
    """The clock moves first and its deadlines a moment later: a wait (and a hotjob) listed in
    between still times out `timeout` seconds after it began, not `moved` seconds off."""
    job = kickq.create("unserved").result(10)
    engine = kickq._engine.runtime.get()
    kickq._model.clock.set_offset(moved)
    try:
        waiting = kickq.wait(job.id, timeout=20)
        hot = kickq.create("unserved", hotjob=True, hotjob_timeout=20).result(10)
        engine._clock_moved(moved)  # what the clock check does right after
        deadlines = [when for when, _, _, what in engine.waits._deadlines if what == "timeout"]
        assert len(deadlines) == 2
        for deadline in deadlines:
            left = (deadline - kickq._model.clock.now()).total_seconds()
            assert 15 < left <= 20, left
        assert not waiting.done() and not hot.hotjob_future.done()
    finally:
        kickq._model.clock.set_offset(0.0)
        engine._clock_moved(-moved)


def test_creates_decided_after_the_first_check_keep_their_place(r: redis.Redis) -> None:
    """An engine's first creates wait for its clock check, then go out where they were asked
    for: before a count asked for after them, and in order."""
    # the next call starts an engine whose clock is not checked yet
    kickq._engine.runtime.shutdown()
    hold_the_first_check(r)
    futures = [kickq.create("ordered", i) for i in range(5)]
    counted = kickq.jobs(name="ordered").count()
    assert counted.result(10) == 5
    assert [future.result(10).data for future in futures] == list(range(5))
    taken: list[int] = []
    kickq.process("ordered", lambda job, data: taken.append(data))
    wait_until(lambda: len(taken) == 5, what="every job run")
    assert taken == list(range(5))


def test_kickq_reads_time_only_through_its_clock_module() -> None:
    """No module but _clock reads the time (wall clock, monotonic, counters) and none but
    _skew asks Redis's: every timer follows one clock, which freezegun drives."""
    package = pathlib.Path(kickq.__file__).parent
    reads = re.compile(
        r"\b(time\.(time|time_ns|monotonic|monotonic_ns|perf_counter|perf_counter_ns|"
        r"process_time|clock_gettime|clock_gettime_ns)|datetime\.(now|utcnow|today)|"
        r"date\.today)\(|\.time\(\)|[\"']TIME[\"']"
    )
    allowed = {"_model/clock.py", "_engine/skew.py"}  # the clock, and the check of Redis's TIME
    found = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        if path.relative_to(package).as_posix() not in allowed
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if reads.search(line)
    ]
    assert found == []
