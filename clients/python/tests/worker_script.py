"""A worker process for test_worker.py: ``python worker_script.py URL QUEUE CONCURRENCY``.

Each job sleeps ``payload["sleep"]`` seconds and returns ``{"slept": …}``. Logs are one
line per record with the record's structured fields, on standard output.
"""

import logging
import sys
import time
from typing import Any

from baton import Client, Worker


class Fields(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {k: getattr(record, k, None) for k in ("event", "queue", "job_id", "attempt")}
        return f"{record.getMessage()} | {fields}"


def handler(job: Any) -> dict[str, Any]:
    time.sleep(job.payload["sleep"])
    return {"slept": job.payload["sleep"]}


if __name__ == "__main__":
    url, queue, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    output = logging.StreamHandler(sys.stdout)
    output.setFormatter(Fields())
    logging.basicConfig(level=logging.INFO, handlers=[output])
    with Client(url, api_key="bk_fake") as client:
        Worker(client, queue, handler, concurrency, wait=1).run()
