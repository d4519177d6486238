"""``verifier keys create|list|revoke``: manage the API keys in Redis."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import redis

from core.errors import VerifierError
from core.keys import ApiKey, KeyStore
from core.settings import Settings


def add_parser(sub: Any) -> None:
    """Add the ``keys`` command to the ``verifier`` parser."""
    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (the clear key is printed once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--buckets", default="",
                        help="comma-separated bucket or bucket/prefix grants, or '*' for all (default: none)")
    create.add_argument("--scopes", default="", help="comma-separated: operator")
    listing = keys_sub.add_parser("list", help="list keys (never the clear keys or their hashes)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")


def run_keys(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``verifier keys ...``."""
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    store = KeyStore(client)
    try:
        if args.keys_command == "create":
            key, clear = store.create(args.tenant, buckets=args.buckets.split(","), scopes=args.scopes.split(","))
            print(f"created key {key.id} for tenant {key.tenant}; buckets: {', '.join(key.buckets) or '(none)'}; "
                  f"scopes: {', '.join(key.scopes) or '(none)'}", file=sys.stderr)
            print("store it now: it is not kept and cannot be shown again", file=sys.stderr)
            print(clear)
            return 0
        if args.keys_command == "list":
            for key in store.list():
                print(json.dumps(_public(key)) if args.json else _row(key))
            return 0
        revoked = store.revoke(args.id)
        if revoked is None:
            print(f"verifier keys: no key {args.id!r}", file=sys.stderr)
            return 1
        print(f"revoked {revoked.id} (tenant {revoked.tenant}) at {revoked.revoked_at}")
        return 0
    except VerifierError as exc:
        print(f"verifier keys: {exc.message}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"verifier keys: Redis at {settings.redis_url} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _public(key: ApiKey) -> dict[str, Any]:
    return {"id": key.id, "tenant": key.tenant, "buckets": list(key.buckets), "scopes": list(key.scopes),
            "created_at": key.created_at, "revoked_at": key.revoked_at}


def _row(key: ApiKey) -> str:
    state = f"revoked {key.revoked_at}" if key.revoked else "active"
    return (f"{key.id}  tenant={key.tenant}  buckets={','.join(key.buckets) or '-'}  "
            f"scopes={','.join(key.scopes) or '-'}  created={key.created_at}  {state}")
