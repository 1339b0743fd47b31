"""The floor's web page: `andon ui` and its accounts (`andon users`)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from andon.web.auth import Users

from andon.cli.common import JsonOption, make_console, print_json
from andon.cli.root import app


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: the plant network, behind TLS)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="default ANDON_UI_PORT (8070)")] = None,
) -> None:
    """The floor's web page: review queue, alerts, plant dashboard, part lookup, reports over HTTP.
    Users log in with an account from `andon users add`; each sees only their plants.

    Example: andon ui --port 8070
    """
    from andon.httpkit import run_server
    from andon.settings import get_settings
    from andon.web.app import build_floor, create_app

    floor = build_floor()
    port = port or get_settings().ui_port
    if not floor.users.list():
        sys.stderr.write("andon: no accounts yet: add one with `andon users add NAME --plants plant-a`\n")
    sys.stderr.write(f"andon: the floor's page on http://{host}:{port}/ ({len(floor.plants)} plants)\n")
    run_server(create_app(floor), host, port)


users_app = typer.Typer(help="Accounts of the floor's web page (`andon ui`), each scoped to plants.",
                        no_args_is_help=True)  # fmt: skip
app.add_typer(users_app, name="users")


def _users() -> Users:
    from andon.web.auth import installation_users

    return installation_users()


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="the login name")],
    plants: Annotated[str, typer.Option(help="plants this user may see, comma-separated ('*' for all)")],
    password_stdin: Annotated[bool, typer.Option(help="read the password from stdin (scripts)")] = False,
) -> None:
    """Add (or reset) an account: a scrypt hash of the password and the plants it may see.

    Example: andon users add j.doe --plants plant-a
    """
    from andon.config import list_plants
    from andon.errors import ConfigError

    wanted = [p.strip() for p in plants.split(",") if p.strip()]
    unknown = [p for p in wanted if p != "*" and p not in list_plants()]
    if unknown:
        raise ConfigError(f"no plant {', '.join(unknown)} (plants: {', '.join(list_plants())})")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    user = _users().add(name, password, wanted)
    make_console().print(f"{user.name}: may see {', '.join(user.plants)}")


@users_app.command("list")
def users_list(as_json: JsonOption = False) -> None:
    """Accounts and their plants (never the hashes).

    Example: andon users list
    """
    users = _users().list()
    if as_json:
        print_json([{"name": u.name, "plants": list(u.plants)} for u in users])
        return
    for u in users:
        make_console().print(f"{u.name}: {', '.join(u.plants)}")


@users_app.command("remove")
def users_remove(name: Annotated[str, typer.Argument(help="the login name")]) -> None:
    """Remove an account (its sessions end at their next request).

    Example: andon users remove j.doe
    """
    from andon.errors import ConfigError

    if not _users().remove(name):
        raise ConfigError(f"no account {name[:64]!r}")
    make_console().print(f"removed {name}")
