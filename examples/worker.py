"""A queue worker: makes thumbnails for the jobs of the ``thumbnails`` queue.

Run it with a Baton server that serves queues (DESIGN §7)::

    BATON_API_KEY=$(head -n 1 data/api-key) .venv/bin/python -m examples.worker

and enqueue work from anywhere::

    .venv/bin/baton jobs enqueue thumbnails --payload '{"image": "cat.png", "width": 200}'

It claims up to four jobs at once (long polls while the queue is empty), heartbeats
their leases, and stops gracefully on Ctrl-C or SIGTERM: no new claims, the jobs it
holds finish, exit 0. Structured log fields (``event``, ``job_id``, …) go to the log
line.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from baton import Client, Fatal, Retry, Worker

QUEUE = "thumbnails"
#: Widths the pretend renderer can make.
WIDTHS = range(16, 2049)


class Busy(Exception):
    """The renderer is overloaded; try again later."""


def render(image: str, width: int) -> str:
    """Pretend to render a thumbnail; the name of the file it would write."""
    time.sleep(0.1)
    digest = hashlib.sha256(f"{image}:{width}".encode()).hexdigest()[:12]
    return f"thumbs/{digest}-{width}.png"


def make_thumbnail(job: Any) -> dict[str, Any]:
    """The handler: the job's result, or ``Fatal`` / ``Retry`` to steer a failure."""
    image, width = job.payload.get("image"), job.payload.get("width", 200)
    if not isinstance(image, str) or not image:
        raise Fatal("payload.image must be a file name")  # retrying cannot help
    if not isinstance(width, int) or width not in WIDTHS:
        raise Fatal(f"payload.width must be a whole number from {WIDTHS[0]} to {WIDTHS[-1]}")
    try:
        path = render(image, width)
    except Busy:
        raise Retry("renderer busy", after=30) from None
    return {"thumbnail": path, "width": width}


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s [%(event)s job=%(job_id)s]",
        defaults={"event": "-", "job_id": "-"},
    )
    with Client() as client:  # BATON_URL and BATON_API_KEY
        Worker(client, QUEUE, make_thumbnail, concurrency=4).run()


if __name__ == "__main__":
    main()
