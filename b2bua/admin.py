"""`b2bua-admin`: the operator's tool for users, bindings, test pushes, calls and CDRs.

Every command reads the same TOML config as the service (``--config FILE``, default
``$B2BUA_CONFIG`` or ``etc/b2bua.toml``) and works on the service's database directly, except
``calls``, which asks the running service over its /status endpoint. Failures print one line
naming the problem on stderr and exit 1 (2 for a mistyped command line), never a traceback;
``--json`` always prints a single JSON list so scripts can read it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, islice
from typing import Any

from b2bua.admin_common import (
    DEFAULT_CONFIG as DEFAULT_CONFIG,
    AdminError as AdminError,
    _check_name,
    _read_password,
    load as load,
    open_store as open_store,
    print_json as print_json,
    span as span,
    table as table,
    user_aor as user_aor,
    when as when,
)
from b2bua.store import Binding, Store, UnknownUser, UserExists
from b2bua.store.user_policy import UserPolicy, UserPolicyStore

# -- check-config -----------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    from b2bua.admin_check import run_check_config
    return run_check_config(args)


# -- user -------------------------------------------------------------------------------


def cmd_user_add(args: argparse.Namespace) -> int:
    config = load(args.config)
    name = _check_name(args.name)
    with open_store(config, create=True) as store:
        if store.users.get(name, config.sip.realm) is not None:
            raise AdminError(f"user already exists: {name}")
        password = _read_password(args.password_stdin)
        try:
            store.users.add(name, config.sip.realm, password, args.display_name or None)
        except UserExists:
            raise AdminError(f"user already exists: {name}") from None
    print(f"added user {name} (sip:{name}@{config.sip.domain})")
    return 0


def _change_user(args: argparse.Namespace, change: Callable[[Store, str, str], None], done: str) -> int:
    config = load(args.config)
    name = _check_name(args.name)
    with open_store(config) as store:
        try:
            change(store, name, config.sip.realm)
        except UnknownUser:
            raise AdminError(f"no such user: {name}") from None
    print(f"{done} user {name}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    def change(store: Store, name: str, realm: str) -> None:
        if store.users.get(name, realm) is None:
            raise UnknownUser(name)
        store.users.set_password(name, realm, _read_password(args.password_stdin))
    return _change_user(args, change, "changed the password of")


def cmd_user_remove(args: argparse.Namespace) -> int:
    return _change_user(args, lambda s, n, r: s.users.remove(n, r), "removed")


def cmd_user_enable(args: argparse.Namespace) -> int:
    enabled = args.user_command == "enable"
    return _change_user(args, lambda s, n, r: s.users.set_enabled(n, r, enabled),
                        "enabled" if enabled else "disabled")


_SETTINGS = ("caller_id", "max_calls", "trunk")


def cmd_user_set(args: argparse.Namespace) -> int:
    """``user set NAME caller_id NUMBER|default``, ``max_calls N``, ``trunk yes|no``."""
    value = args.value.strip()

    def change(store: Store, name: str, realm: str) -> None:
        policies = UserPolicyStore(store.db)
        try:
            if args.setting == "caller_id":
                policies.set_caller_id(name, realm, None if value in ("", "default") else value)
            elif args.setting == "max_calls":
                if not value.isdigit():
                    raise ValueError("max_calls is a number of calls (0: no limit)")
                policies.set_max_calls(name, realm, int(value))
            else:
                if value.lower() not in ("yes", "no"):
                    raise ValueError("trunk is yes or no")
                policies.set_trunk_calls(name, realm, value.lower() == "yes")
        except ValueError as error:
            raise AdminError(f"{args.setting}: {error}") from None
    return _change_user(args, change, f"set {args.setting} = {value} for")


def cmd_user_list(args: argparse.Namespace) -> int:
    config = load(args.config)
    with open_store(config) as store:
        users = store.users.list()
        policies = UserPolicyStore(store.db)
        rules = {u.name: policies.get(u.name, u.realm) or UserPolicy(u.name) for u in users}
    if args.json:
        print_json([{"name": u.name, "realm": u.realm, "display_name": u.display_name,
                      "enabled": u.enabled, "created_at": u.created_at,
                      "caller_id": rules[u.name].number, "max_calls": rules[u.name].max_calls,
                      "trunk": rules[u.name].trunk_calls} for u in users])
    elif users:
        print(table(["NAME", "REALM", "ENABLED", "DISPLAY NAME", "CALLER ID", "MAX CALLS",
                     "TRUNK", "CREATED"],
                     [[u.name, u.realm, "yes" if u.enabled else "no", u.display_name or "",
                       rules[u.name].number, str(rules[u.name].max_calls or "-"),
                       "yes" if rules[u.name].trunk_calls else "no",
                       when(u.created_at)] for u in users]))
    else:
        print("no users")
    return 0


def cmd_user_import(args: argparse.Namespace) -> int:
    from b2bua.admin_import import run_user_import
    return run_user_import(args)


# -- bindings ---------------------------------------------------------------------------


def _source(binding: Binding) -> str:
    if not binding.source_host:
        return ""
    host = f"[{binding.source_host}]" if ":" in binding.source_host else binding.source_host
    return f"{host}:{binding.source_port}" if binding.source_port else host


def binding_json(binding: Binding, now: float) -> dict[str, Any]:
    """One binding for --json, with the whole push token (scripts need it)."""
    return {
        "id": binding.id,
        "user": binding.user or binding.aor.partition(":")[2].partition("@")[0],
        "aor": binding.aor, "contact": binding.contact,
        "expires_at": binding.expires_at, "expires_in": max(0, int(binding.expires_at - now)),
        "source": _source(binding), "transport": binding.source_transport,
        "user_agent": binding.user_agent, "instance_id": binding.instance_id,
        "push_provider": binding.push_provider, "push_package": binding.push_package,
        "push_topic": binding.push_topic, "push_token": binding.push_token,
        "push_remote_token": binding.push_remote_token,
        "push_refresh": bool(binding.push_refresh),
        # The contact expired; only the push token is kept ([push] token_lifetime).
        "kept": binding.expired(now),
        "push_unbound": _unbound_reason(binding),
        "path": list(binding.path),      # RFC 3327: a proxy in front (Kamailio) reaches it
    }


def _unbound_reason(binding: Binding) -> str | None:
    """Why a device that announced a push token has none stored, if we know."""
    from b2bua.push import canonical_provider
    from b2bua.registrar.push_token import SOURCE_DISABLED

    if binding.push_token or binding.push_source != SOURCE_DISABLED:
        return None
    provider = canonical_provider(binding.push_provider or "?")
    return f"{provider} is not enabled in the config: the phone cannot be woken"


def _push_text(binding: Binding) -> str:
    from b2bua.push import canonical_provider, redact_token

    unbound = _unbound_reason(binding)
    if unbound is not None:
        return f"none ({unbound})"

    if not binding.push_token:
        return "-"
    provider = canonical_provider(binding.push_provider or "?")
    topic = binding.push_topic or binding.push_package or "-"
    return f"{provider} {topic} {redact_token(binding.push_token)}"


def cmd_bindings(args: argparse.Namespace) -> int:
    words: list[str] = args.words
    if words and words[0] == "remove":
        if len(words) != 3:
            raise AdminError("usage: bindings remove NAME CONTACT|ID")
        return _remove_binding(args, words[1], words[2])
    if len(words) > 1:
        raise AdminError("usage: bindings [NAME] [--json] | bindings remove NAME CONTACT|ID")
    config = load(args.config)
    now = time.time()
    lifetime = config.push.token_lifetime
    with open_store(config) as store:
        if words:
            aor = user_aor(config, words[0])
            bindings: Iterable[Binding] = (store.bindings.list_for_aor(aor, now)
                                           + store.bindings.list_kept(now, lifetime, aor))
            user = aor.partition(":")[2].partition("@")[0]
            if not bindings and store.users.get(user, config.sip.realm) is None:
                raise AdminError(f"no such user: {words[0]}")
        else:
            # streamed: maybe a million rows; kept push tokens (contact expired) after them
            bindings = chain(store.bindings.iter_live(now), store.bindings.list_kept(now, lifetime))
        owners: dict[int, str] = getattr(store.bindings, "owners", {})   # cluster: who wrote it
        if args.json:
            _stream_json({**binding_json(b, now), **({"node": owners.get(b.id or 0)} if owners else {})}
                         for b in bindings)
        else:
            _stream_table(["ID", "AOR", "CONTACT", "EXPIRES IN", "SOURCE", "USER AGENT", "PUSH"],
                          ([str(b.id), b.aor, b.contact,
                            span(b.expires_at - now) if not b.expired(now) else
                            "token kept " + span(b.expires_at + lifetime - now),
                            f"{(b.source_transport or '').upper()} {_source(b)}".strip() or "-",
                            b.user_agent or "-", _push_text(b)] for b in bindings),
                          "no registered contacts")
    return 0


def _stream_json(documents: Iterable[Any]) -> None:
    """Print a JSON list item by item, exactly as ``print_json`` prints it whole."""
    out, first = sys.stdout, True
    for document in documents:
        text = json.dumps(document, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        out.write(("[\n  " if first else ",\n  ") + text)
        first = False
    out.write("[]\n" if first else "\n]\n")


def _stream_table(headers: Sequence[str], rows: Iterable[list[str]], empty: str,
                  sample: int = 1000) -> None:
    """``table`` for many rows: the column widths come from the first ``sample``
    rows (a longer cell later just pushes its line out); fewer rows print as
    ``table`` prints them."""
    rows = iter(rows)
    head = list(islice(rows, sample))
    if not head:
        print(empty)
        return
    widths = [max([len(h)] + [len(r[i]) for r in head]) for i, h in enumerate(headers)]
    for row in chain([list(headers)], head, rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _remove_binding(args: argparse.Namespace, name: str, contact: str) -> int:
    config = load(args.config)
    aor = user_aor(config, name)
    with open_store(config) as store:
        if contact.isdigit():
            binding = store.bindings.get(int(contact))
            removed = binding is not None and binding.aor == aor and \
                store.bindings.remove_by_id(int(contact))
        else:
            removed = store.bindings.remove(aor, contact)
    if not removed:
        raise AdminError(f"no binding {contact} for {aor}")
    print(f"removed binding {contact} of {aor}")
    # The service serves bindings from memory (BindingWriter); SIGHUP makes it re-read them.
    print("note: a running b2bua sees this after SIGHUP (systemctl reload b2bua)",
          file=sys.stderr)
    return 0


# -- messages ---------------------------------------------------------------------------


def cmd_messages(args: argparse.Namespace) -> int:
    """The MESSAGEs stored for sleeping phones (all users, or NAME's)."""
    config = load(args.config)
    now = time.time()
    with open_store(config) as store:
        if args.name:
            aor = user_aor(config, args.name)
            messages = store.messages.pending(aor, now)
            user = aor.partition(":")[2].partition("@")[0]
            if not messages and store.users.get(user, config.sip.realm) is None:
                raise AdminError(f"no such user: {args.name}")
        else:
            messages = store.messages.list_all(now)
    if args.json:
        print_json([{
            "id": m.id, "user": m.user, "aor": m.aor, "call_id": m.call_id, "from": m.from_uri,
            "to": m.to_uri, "content_type": m.content_type, "size": len(m.body),
            "text": _message_text(m.body, m.content_type), "received_at": m.received_at,
            "expires_at": m.expires_at} for m in messages])
    elif messages:
        print(table(
            ["ID", "USER", "FROM", "RECEIVED", "EXPIRES IN", "TYPE", "SIZE", "TEXT"],
            [[str(m.id), m.user, m.from_uri, when(m.received_at), span(m.expires_at - now),
              m.content_type or "-", str(len(m.body)),
              _message_text(m.body, m.content_type)[:40].replace("\n", " ")]
             for m in messages]))
    else:
        print("no stored messages")
    return 0


def _message_text(body: bytes, content_type: str | None) -> str:
    kind = (content_type or "text/plain").split(";", 1)[0].strip().lower()
    return body.decode("utf-8", "replace") if kind.startswith("text/") else ""


# -- push, calls, cdr -------------------------------------------------------------------


def cmd_push(args: argparse.Namespace) -> int:
    from b2bua.admin_push import run_push
    return run_push(args)


def cmd_trunks(args: argparse.Namespace) -> int:
    from b2bua.admin_calls import run_trunks
    return run_trunks(args)


def cmd_calls(args: argparse.Namespace) -> int:
    from b2bua.admin_calls import run_calls
    return run_calls(args)


def _duration(row: dict[str, Any]) -> float | None:
    if row.get("answered_at") and row.get("ended_at"):
        return float(row["ended_at"]) - float(row["answered_at"])
    return None


def cmd_cdr(args: argparse.Namespace) -> int:
    config = load(args.config)
    with open_store(config) as store:
        rows = store.cdrs.tail(args.tail)
    if args.json:
        print_json(rows)
    elif rows:
        print(table(
            ["TIME", "FROM", "TO", "STATUS", "DURATION", "ENDED BY", "PUSH"],
            [[when(r["started_at"]), r.get("from_uri") or "-", r.get("to_uri") or "-",
              " ".join(str(p) for p in (r.get("status"), r.get("reason")) if p) or "-",
              span(_duration(r)), r.get("ended_by") or "-", r.get("push_outcome") or "-"]
             for r in rows]))
    else:
        print("no call records")
    return 0


# -- command line -----------------------------------------------------------------------


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    # --config is accepted before or after the command; the later one wins.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="config file (default: $B2BUA_CONFIG or etc/b2bua.toml)")
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print one JSON list")
    parser = argparse.ArgumentParser(prog="b2bua-admin", parents=[common],
                                     description="Administer a b2bua: users, bindings, pushes, calls.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser("check-config", parents=[common], help="validate the config")
    check.add_argument("file", nargs="?", metavar="FILE", help="config file (legacy form)")
    check.set_defaults(func=cmd_check_config)

    user = commands.add_parser("user", parents=[common], help="manage users")
    user_commands = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = user_commands.add_parser("add", parents=[common], help="add a user")
    add.add_argument("--display-name", metavar="TEXT")
    passwd = user_commands.add_parser("passwd", parents=[common], help="change a password")
    for sub in (add, passwd):
        sub.add_argument("--password-stdin", action="store_true",
                         help="read the password from the first line of stdin")
    add.set_defaults(func=cmd_user_add)
    passwd.set_defaults(func=cmd_user_passwd)
    for action, func, text in (("remove", cmd_user_remove, "delete a user"),
                               ("disable", cmd_user_enable, "refuse a user's registrations"),
                               ("enable", cmd_user_enable, "allow a disabled user again")):
        user_commands.add_parser(action, parents=[common], help=text).set_defaults(func=func)
    for sub in user_commands.choices.values():
        sub.add_argument("name", metavar="NAME")
    setting = user_commands.add_parser(
        "set", parents=[common], help="caller_id NUMBER|default, max_calls N (0: none), "
                                      "trunk yes|no")
    setting.add_argument("name", metavar="NAME")
    setting.add_argument("setting", choices=_SETTINGS)
    setting.add_argument("value", metavar="VALUE")
    setting.set_defaults(func=cmd_user_set)
    user_commands.add_parser("list", parents=[common, json_flag],
                             help="list users").set_defaults(func=cmd_user_list)
    bulk = user_commands.add_parser(
        "import", parents=[common], help="add users from a CSV or JSON-lines FILE "
        "(name and password, or ha1_md5 [ha1_sha256]; display_name, enabled)")
    bulk.add_argument("file", metavar="FILE")
    bulk.add_argument("--update", action="store_true", help="replace existing users")
    bulk.set_defaults(func=cmd_user_import)

    bindings = commands.add_parser(
        "bindings", parents=[common, json_flag], help="registered contacts",
        usage="%(prog)s [NAME] [--json] | %(prog)s remove NAME CONTACT|ID")
    bindings.add_argument("words", nargs="*", metavar="NAME", help=argparse.SUPPRESS)
    bindings.set_defaults(func=cmd_bindings)

    messages = commands.add_parser("messages", parents=[common, json_flag],
                                   help="MESSAGEs stored for sleeping phones")
    messages.add_argument("name", nargs="?", metavar="NAME")
    messages.set_defaults(func=cmd_messages)

    push = commands.add_parser("push", parents=[common, json_flag],
                               help="send a test VoIP push to each device of a user")
    push.add_argument("name", metavar="NAME")
    push.set_defaults(func=cmd_push)
    commands.add_parser("calls", parents=[common, json_flag],
                        help="active calls of the running service").set_defaults(func=cmd_calls)
    commands.add_parser("trunks", parents=[common, json_flag],
                        help="trunks of the running service: registration, last failure"
                        ).set_defaults(func=cmd_trunks)
    cdr = commands.add_parser("cdr", parents=[common, json_flag], help="recent call records")
    cdr.add_argument("--tail", type=_positive, default=20, metavar="N", help="last N (default 20)")
    cdr.set_defaults(func=cmd_cdr)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not getattr(args, "config", None):
        args.config = os.environ.get("B2BUA_CONFIG") or DEFAULT_CONFIG
    try:
        result: int = args.func(args)
        return result
    except AdminError as error:
        sys.stdout.flush()
        print(f"b2bua-admin: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
