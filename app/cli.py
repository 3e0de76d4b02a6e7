"""``python -m app``: the operator's command line (API keys and namespace signing secrets).

    python -m app keys create --namespace NAME
                              [--signing-secret whsec_… | --generate-signing-secret]
    python -m app keys list [--namespace NAME] [--json]
    python -m app keys revoke ID
    python -m app keys secret --namespace NAME [--set S … | --add S … | --generate | --clear]

It is configured by the same environment as the server (``BATON_DATABASE_URL``,
``.env``; see docs/configuration.md) and applies pending migrations first, as the
server does. A new key is printed once and never again: the database keeps only
its SHA-256. Signing secrets are never printed back (only fingerprints), except a
generated one, once.

Exit status: 0 done, 1 the command could not be carried out (unknown key, database
unreachable, bad configuration), 2 the command line is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TextIO

import orjson
from starlette.datastructures import Secret

from app.db import close_database, open_database
from app.engine import iso
from app.errors import BatonError, ConfigurationError
from app.logs import configure_logging
from app.settings import Settings
from app.store import ApiKeyInfo, SecretInfo, Store
from app.tenants import DEFAULT_NAMESPACE, check_namespace
from baton.signing import InvalidSecret, decode_secret, generate_secret

PROG = "python -m app"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: The argument that reads a secret from standard input instead of the command line.
STDIN = "-"
#: The shortest signing secret accepted for a namespace (decoded bytes).
MIN_SECRET_BYTES = 16

Command = Callable[[Store, argparse.Namespace, TextIO], Awaitable[int]]


class CommandFailed(Exception):
    """The command could not be carried out; the message says why (exit status 1)."""


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Run one command; answers the exit status (never raises for expected failures)."""
    out = stdout or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_default_namespace(args)
        secrets = _read_secrets(args)
    except _UsageError as exc:
        parser.error(str(exc))  # exits with status 2
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        return _fail(str(exc))
    # The CLI's own output is the point: only warnings and errors from the libraries.
    configure_logging("debug" if settings.log_level == "debug" else "warning", "text")
    args.secrets = secrets
    try:
        return asyncio.run(_run(args.command, args, settings, out))
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Baton's operator commands. Configured by the server's environment "
        "(BATON_DATABASE_URL, .env).",
    )
    commands = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    keys = commands.add_parser(
        "keys",
        help="manage API keys and namespace signing secrets",
        description="API keys (each belongs to a namespace) and namespace signing secrets.",
    )
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create",
        help="create an API key for a namespace and print it (once)",
        description="Create an API key for a namespace. The key is printed once: Baton "
        "stores only its SHA-256.",
    )
    create.add_argument("--namespace", required=True, type=_namespace, help="namespace name")
    secret = create.add_mutually_exclusive_group()
    secret.add_argument(
        "--signing-secret",
        action="append",
        default=[],
        metavar="WHSEC",
        help="add this signing secret to the namespace ('-' reads it from standard input)",
    )
    secret.add_argument(
        "--generate-signing-secret",
        action="store_true",
        help="generate a signing secret for the namespace and print it (once)",
    )
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(command=_create)

    listing = actions.add_parser(
        "list",
        help="list API keys (never the keys themselves)",
        description="List API keys: id, namespace, prefix, created, last used, revoked.",
    )
    listing.add_argument("--namespace", type=_namespace, help="only this namespace's keys")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(command=_list)

    revoke = actions.add_parser(
        "revoke",
        help="revoke an API key (refused at once by every server process)",
        description="Revoke an API key by its id (key_…, see 'keys list').",
    )
    revoke.add_argument("id", metavar="ID", help="the key's id, e.g. key_0123456789abcdef")
    revoke.set_defaults(command=_revoke)

    secrets = actions.add_parser(
        "secret",
        help="show or change a namespace's signing secrets",
        description="A namespace's own signing secrets sign the requests of its workflows "
        "(every secret signs, for rotation); without any, the global BATON_SIGNING_SECRETS "
        "do. With no option, shows the secrets' fingerprints. Server processes pick up a "
        "change within 10 seconds.",
    )
    secrets.add_argument("--namespace", required=True, type=_namespace, help="namespace name")
    change = secrets.add_mutually_exclusive_group()
    change.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="WHSEC",
        help="replace the namespace's secrets with these (repeat for several; '-' reads "
        "one from standard input)",
    )
    change.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="WHSEC",
        help="add a secret, keeping the others (rotation); '-' reads it from standard input",
    )
    change.add_argument(
        "--generate", action="store_true", help="add a generated secret and print it (once)"
    )
    change.add_argument(
        "--clear",
        action="store_true",
        help="remove the namespace's secrets (its requests are signed with the global ones)",
    )
    secrets.set_defaults(command=_secret)
    return parser


# --------------------------------------------------------------------------- commands


async def _create(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    info, key = await store.create_api_key(args.namespace, signing_secrets=args.secrets)
    generated = args.secrets if args.generate_signing_secret else []
    if args.json:
        document = {**_key_document(info), "key": str(key)}
        if generated:
            document["signingSecret"] = str(generated[0])
        out.write(orjson.dumps(document).decode() + "\n")
    else:
        out.write(f"id:             {info.id}\n")
        out.write(f"namespace:      {info.namespace}\n")
        out.write(f"key:            {key}\n")
        if generated:
            out.write(f"signing secret: {generated[0]}\n")
    shown = "key and signing secret are shown" if generated else "key is shown"
    sys.stderr.write(
        f"The {shown} only this once: store {'them' if generated else 'it'} now "
        "(Baton keeps only a hash of the key).\n"
    )
    return EXIT_OK


async def _list(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    keys = await store.list_api_keys(args.namespace)
    if args.json:
        out.write(orjson.dumps([_key_document(k) for k in keys]).decode() + "\n")
        return EXIT_OK
    rows = [("ID", "NAMESPACE", "PREFIX", "CREATED", "LAST USED", "REVOKED")]
    rows += [
        (
            k.id,
            k.namespace,
            f"{k.prefix}…",
            _when(k.created_at),
            _when(k.last_used_at),
            _when(k.revoked_at),
        )
        for k in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")
    if not keys:
        sys.stderr.write("No API keys are stored (BATON_API_KEYS keys are not listed).\n")
    return EXIT_OK


async def _revoke(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    found = await store.revoke_api_key(args.id)
    if found is None:
        raise CommandFailed(f"no API key has the id {args.id!r} (see '{PROG} keys list')")
    info, revoked = found
    if revoked:
        out.write(f"revoked {info.id} (namespace {info.namespace}, {info.prefix}…)\n")
    else:
        out.write(f"{info.id} was already revoked at {_when(info.revoked_at)}\n")
    return EXIT_OK


async def _secret(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    namespace = args.namespace
    if args.clear or args.set:
        infos = await store.set_namespace_secrets(namespace, args.secrets, replace=True)
    elif args.add or args.generate:
        infos = await store.set_namespace_secrets(namespace, args.secrets, replace=False)
    else:
        infos = await store.namespace_secret_info(namespace)
    if args.generate:
        out.write(f"signing secret: {args.secrets[0]}\n")
        sys.stderr.write("The signing secret is shown only this once: store it now.\n")
    _print_secrets(namespace, infos, out)
    return EXIT_OK


def _print_secrets(namespace: str, infos: Sequence[SecretInfo], out: TextIO) -> None:
    if not infos:
        out.write(
            f"namespace {namespace} has no signing secrets of its own: its requests are "
            "signed with BATON_SIGNING_SECRETS\n"
        )
        return
    noun = "secret signs" if len(infos) == 1 else f"{len(infos)} secrets sign"
    out.write(f"namespace {namespace}: {noun} every request\n")
    for info in infos:
        out.write(f"  fingerprint {info.fingerprint}  added {_when(info.created_at)}\n")


# --------------------------------------------------------------------------- plumbing


async def _run(command: Command, args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    try:
        await open_database(settings.database_url)
    except ConfigurationError as exc:
        return _fail(str(exc))
    except Exception as exc:
        return _fail(f"could not open the database: {_describe(exc)}")
    try:
        return await command(Store(), args, out)
    except CommandFailed as exc:
        return _fail(str(exc))
    except (BatonError, OSError) as exc:
        return _fail(_describe(exc))
    except Exception as exc:
        # Database errors arrive as the driver's own exceptions: say what failed, no trace.
        return _fail(f"the database refused the command: {_describe(exc)}")
    finally:
        await close_database()


class _UsageError(Exception):
    """The command line is wrong in a way argparse cannot see (exit status 2)."""


def _namespace(value: str) -> str:
    try:
        return check_namespace(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid namespace {value!r}: {exc}") from exc


def _check_default_namespace(args: argparse.Namespace) -> None:
    changes_secrets = args.action == "secret" or (
        args.action == "create" and (args.signing_secret or args.generate_signing_secret)
    )
    if changes_secrets and args.namespace == DEFAULT_NAMESPACE:
        raise _UsageError(
            "the default namespace signs with BATON_SIGNING_SECRETS; "
            "give other namespaces their own secrets"
        )


def _read_secrets(args: argparse.Namespace) -> list[Secret]:
    """The signing secrets the command adds or sets, checked (and generated if asked)."""
    if args.action == "create":
        given: list[str] = args.signing_secret
        generate = args.generate_signing_secret
    elif args.action == "secret":
        given = args.set or args.add
        generate = args.generate
    else:
        return []
    if generate:
        return [Secret(generate_secret())]
    values = []
    for position, value in enumerate(given, start=1):
        if value == STDIN:
            value = sys.stdin.readline().strip()
        try:
            key = decode_secret(value)
        except InvalidSecret as exc:
            # Never repeat the value: it may be a real secret with a typo.
            raise _UsageError(f"signing secret #{position} is not valid: {exc}") from None
        if len(key) < MIN_SECRET_BYTES:
            raise _UsageError(
                f"signing secret #{position} is too short: it must decode to at least "
                f"{MIN_SECRET_BYTES} bytes (--generate makes a good one)"
            )
        values.append(Secret(value))
    return values


def _key_document(info: ApiKeyInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "namespace": info.namespace,
        "prefix": info.prefix,
        "createdAt": iso(info.created_at),
        "lastUsedAt": iso(info.last_used_at),
        "revokedAt": iso(info.revoked_at),
    }


def _when(value: datetime | None) -> str:
    return iso(value) or "-"


def _describe(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _fail(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return EXIT_FAILED
