"""`medbridge users add`, `medbridge clients add`, `medbridge token`, `medbridge launch`.

Each goes through the server running on the data directory (its `/admin` routes), so
an account, a client or a token is made by the same code, in the same store, as the
server's own; with no server running they say so and exit 2. Shapes scripts rely on:
the token is the last line `token` prints, the launch value the last line of `launch`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Admin = Callable[[str, dict[str, Any]], dict[str, Any]]
NO_SERVER = 2
REFUSED = 1


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = commands.add_parser("users", help="user accounts of the authorization server")
    user_actions = users.add_subparsers(dest="users_command", required=True)
    add_user = user_actions.add_parser("add", help="add a user who signs in to authorize apps")
    add_user.add_argument("name")
    add_user.add_argument("--password-file", type=Path, required=True,
                          help="file whose first line is the password")  # fmt: skip
    add_user.add_argument("--fhir-user", required=True,
                          help="Patient/ID, Practitioner/ID or RelatedPerson/ID")  # fmt: skip
    add_user.add_argument("--data-dir", type=Path, help="data directory (MEDBRIDGE_DATA_DIR)")

    clients = commands.add_parser("clients", help="apps registered with the authorization server")
    client_actions = clients.add_subparsers(dest="clients_command", required=True)
    add_client = client_actions.add_parser("add", help="register an app")
    add_client.add_argument("client_id", metavar="ID")
    kind = add_client.add_mutually_exclusive_group(required=True)
    kind.add_argument("--public", action="store_true", help="no secret: PKCE only")
    kind.add_argument("--secret-file", type=Path, help="confidential: first line the secret")
    kind.add_argument("--jwks-file", type=Path, help="confidential: its public JWK Set")
    kind.add_argument("--jwks-url", help="confidential: where its public JWK Set is")
    add_client.add_argument("--redirect-uri", nargs="+", action="extend", default=[],
                            dest="redirect_uris", metavar="URI",
                            help="exact redirect URIs (repeatable)")  # fmt: skip
    add_client.add_argument("--scope", required=True, help="scopes it may be granted")
    add_client.add_argument("--data-dir", type=Path, help="data directory (MEDBRIDGE_DATA_DIR)")

    token = commands.add_parser("token", help="mint an access token (printed as the last line)")
    token.add_argument("--scope", required=True)
    token.add_argument("--patient", help="launch context: a Patient id")
    token.add_argument("--user", help="a user NAME or Practitioner/ID (fhirUser)")
    token.add_argument("--client", help="a registered client id (default medbridge-admin)")
    token.add_argument("--data-dir", type=Path, help="data directory (MEDBRIDGE_DATA_DIR)")

    launch = commands.add_parser(
        "launch", help="an EHR launch context: the `launch` value (last line) for an app"
    )
    launch.add_argument("--patient", required=True, help="the Patient id in context")
    launch.add_argument("--encounter", help="the Encounter id in context")
    launch.add_argument("--user", help="the user NAME who must sign in to use it")
    launch.add_argument("--client", help="the only client id that may use it")
    launch.add_argument("--data-dir", type=Path, help="data directory (MEDBRIDGE_DATA_DIR)")


def run(args: argparse.Namespace, admin: Admin | None) -> int:
    if admin is None:
        print("no MedBridge server runs on this data directory: start `medbridge serve` "
              "(with the same --data-dir) and run this again", file=sys.stderr)  # fmt: skip
        return NO_SERVER
    try:
        name, payload = _request(args)
    except (OSError, ValueError) as error:
        print(f"refused: {error}", file=sys.stderr)
        return REFUSED
    try:
        answer = admin(name, payload)
    except RuntimeError as error:
        print(f"refused: {error}", file=sys.stderr)
        return REFUSED
    if args.command == "token":
        details = {
            key: answer[key] for key in ("expires_in", "scope", "patient") if answer.get(key)
        }
        print(json.dumps(details))
        print(answer["access_token"])
    elif args.command == "launch":
        print(json.dumps({key: value for key, value in answer.items() if key != "launch"}))
        print(answer["launch"])
    else:
        print(json.dumps(answer))
    return 0


def _request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.command == "users":
        password = _first_line(args.password_file)
        return "users/add", {"name": args.name, "password": password, "fhir_user": args.fhir_user}
    if args.command == "clients":
        payload: dict[str, Any] = {"client_id": args.client_id, "scope": args.scope,
                                   "redirect_uris": args.redirect_uris}  # fmt: skip
        if args.secret_file is not None:
            payload["secret"] = _first_line(args.secret_file)
        if args.jwks_file is not None:
            payload["jwks"] = json.loads(args.jwks_file.read_text())
        if args.jwks_url is not None:
            payload["jwks_url"] = args.jwks_url
        return "clients/add", payload
    if args.command == "launch":
        payload = {"patient": args.patient, "encounter": args.encounter, "user": args.user,
                   "client": args.client}  # fmt: skip
    else:
        payload = {"scope": args.scope, "patient": args.patient, "user": args.user,
                   "client": args.client}  # fmt: skip
    return args.command, {key: value for key, value in payload.items() if value is not None}


def _first_line(path: Path) -> str:
    lines = path.read_text().splitlines()
    if not lines or not lines[0]:
        raise ValueError(f"{path}: the first line is empty")
    return lines[0]
