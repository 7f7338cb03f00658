"""Fan-out, fan-in: many jobs run at once, one job runs after all of them, with their results.

    .venv/bin/python examples/fan_in.py

`after=[ids]` stores the "report" job as `deferred` until every "count words" job has
succeeded; each parent's result is then on the report's `job.parent_results`, keyed by the
parent's id. A parent that fails for good fails the report too ("parent <id> failed"), unless
the report was created with `after_failed="run"`. The parents and the report may run in any
processes: whatever process ends the last parent hands the report over to the queue.
"""

from __future__ import annotations

from typing import Any

import kickq

TEXTS = {
    "a.txt": "kick jobs out the door",
    "b.txt": "quickly and with no broker to babysit",
    "c.txt": "a queue you can also await",
}

kickq.config(redis_namespace="fan-in-example")


def count_words(job: kickq.Job, data: dict[str, str]) -> dict[str, Any]:
    return {"file": data["file"], "words": len(data["text"].split())}


def report(job: kickq.Job, data: Any) -> dict[str, int]:
    counts = job.parent_results.values()  # one per parent, in any order
    return {count["file"]: count["words"] for count in sorted(counts, key=lambda c: c["file"])}


kickq.process("count words", count_words, concurrent_jobs=3)
kickq.process("report", report)
try:
    parents = [
        future.result(10)
        for future in kickq.create_many(
            "count words", [{"file": name, "text": text} for name, text in TEXTS.items()]
        )
    ]
    job = kickq.create("report", None, after=parents, hotjob=True).result(10)
    print(f"report {job.id}: {job.state.value}, after {len(job.parents)} parents")
    done = job.hotjob_future.result(20)
    print(f"report: {done.state.value} -> {done.result}")
finally:
    kickq.reset()
