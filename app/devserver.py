"""``make run``: Baton served for local development, with the defaults that needs.

``python -m app.devserver [--host H] [--port P]`` runs ``app.main:app`` under
uvicorn, as ``uvicorn app.main:app`` would, plus:

- ``BATON_ALLOW_PRIVATE_NETWORKS=true``, so step handlers on localhost work (the
  server says so in its log);
- ``BATON_PUBLIC_URL`` defaults to the address it serves on (``PORT=18000 make
  run`` gives async steps ``http://127.0.0.1:18000/v1/callbacks/…``), unless it
  is set;
- stopping it with Ctrl-C or SIGTERM is a normal end: uvicorn shuts down
  gracefully and the process exits with status 0 (uvicorn alone ends by
  raising the signal again, which ``make`` reports as ``Error 130``/``143``).

The Procfile and production starts run uvicorn directly, with none of this.
"""

from __future__ import annotations

import argparse
import os
import signal

import uvicorn

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.devserver", description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    options = parser.parse_args(argv)
    # Read by the settings of the app this process serves (app.settings), as if the
    # user had exported them.
    os.environ["BATON_ALLOW_PRIVATE_NETWORKS"] = "true"
    os.environ.setdefault("BATON_PUBLIC_URL", f"http://{options.host}:{options.port}")
    # uvicorn restores the handlers it found once it has shut down, then raises the
    # signal it was stopped by again: found here, they make that a normal exit.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda signum, frame: None)
    uvicorn.Server(uvicorn.Config("app.main:app", host=options.host, port=options.port)).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
