"""Baton's peers in ``make bench``: BullMQ, Celery and DBOS measured in the same run as Baton.

See bench/README.md ("Peers"). Each peer is one script run in its own
environment under ``bench/.peers/`` (installed by :mod:`bench.peers.install`);
:mod:`bench.peers.suite` starts them, runs the workloads and collects results.
"""
