"""``python -m examples.chat``: run the chat app end to end on a temporary database."""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.request
from datetime import timedelta

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import auth
from engine import ConvexError, Engine

from . import functions
from .schema import schema

ISSUER = "https://demo.clerk.accounts.dev"


class DemoIssuer:
    """Stands in for Clerk: signs RS256 session tokens with a key made for this run."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, user_id: str, name: str) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user_id,
            "aud": "convex",
            "name": name,
            "iat": now,
            "exp": now + 60,
            "sid": f"sess_{user_id}",
            "v": 2,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "ins_demo"})


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="convexlite-demo-") as folder:
        started = time.perf_counter()
        issuer = DemoIssuer()
        auth_config = auth.AuthConfig(
            providers=[auth.ClerkProvider(issuer=ISSUER, public_key=issuer.public_pem)]
        )
        with Engine.open(folder, schema=schema, functions=functions, auth=auth_config) as db:
            print(f"opened a database in {folder}")
            ada = issuer.token("user_ada", "Ada")
            grace = issuer.token("user_grace", "Grace")
            try:
                db.query("users:me", auth=issuer.token("user_x", "X")[:-4] + "AAAA")
            except auth.AuthError as error:
                print(f"tampered token refused: {type(error).__name__}")
            for who in (ada, grace):
                user_id = db.mutation("users:store", auth=who)
                me = db.query("users:me", auth=who)
                print(f"stored user {me['name']} (verified Clerk-style token): {user_id}")
            general = db.mutation("channels:create", {"name": "general", "topic": "chat"}, auth=ada)
            print(f"created channel #general: {general}")
            try:
                db.mutation("channels:create", {"name": "general"}, auth=grace)
            except ConvexError as error:
                print(f"second #general refused with ConvexError {error.data}")
            try:
                db.mutation("messages:send", {"channel": general, "body": "hi"})
            except ConvexError as error:
                print(f"anonymous send refused with ConvexError {error.data}")
            for i in range(25):
                who, name = (ada, "Ada") if i % 2 == 0 else (grace, "Grace")
                db.mutation(
                    "messages:send",
                    {"channel": general, "body": f"message {i} from {name}"},
                    auth=who,
                )
            print("sent 25 messages")
            cursor = None
            page_number = 0
            while True:
                page = db.query(
                    "messages:list_channel",
                    {"channel": general, "paginationOpts": {"numItems": 10, "cursor": cursor}},
                )
                page_number += 1
                bodies = [m["body"] for m in page["page"]]
                print(
                    f"page {page_number}: {len(bodies)} messages, newest first: "
                    f"{bodies[:2]}{' ...' if len(bodies) > 2 else ''}"
                )
                if page["isDone"]:
                    break
                cursor = page["continueCursor"]
            result = db.action("messages:summarize", {"channel": "general"}, auth=ada)
            print(f"action summarize: {result}")
            job = db.mutation(
                "messages:remind",
                {"channel": general, "body": "stand-up in 5", "seconds": 0.0},
                auth=grace,
            )
            db.finish_scheduled_functions()  # the background worker would run it too
            state = db.run(lambda ctx: ctx.db.system.get(job))["state"]
            newest = db.query(
                "messages:list_channel",
                {"channel": general, "paginationOpts": {"numItems": 1, "cursor": None}},
            )["page"][0]["body"]
            print(f"scheduled reminder ran: job state {state}, newest message {newest!r}")
            # The hourly cron (functions/crons.py) runs at the top of the hour: move the
            # clock on an hour to run it now.
            db.finish_scheduled_functions(advance=timedelta(hours=1))
            topic = db.query("channels:by_name", {"name": "general"})["topic"]
            print(f"cron 'refresh topics' ran: #general topic {topic!r}")
            hits = db.query("messages:search", {"channel": general, "text": "stand"})
            print(f"full-text search for 'stand' in #general: {hits}")
            near = db.action("messages:similar", {"channel": general, "text": "reminder: stand-up"})
            print(f"vector search near 'reminder: stand-up' in #general: {near[0]!r} first")
            with db.serve_http("127.0.0.1", 0) as server:
                message = db.action(
                    "messages:attach",
                    {"channel": general, "name": "notes.txt", "text": "agenda: ship it"},
                    auth=ada,
                )
                url = db.query("messages:attachment_url", {"message": message})
                with urllib.request.urlopen(url, timeout=10) as response:
                    body = response.read().decode()
                print(f"attached a file; downloaded over HTTP from {server.url}: {body!r}")
                request = urllib.request.Request(
                    f"{server.url}/channels/general/messages",
                    data=json.dumps({"body": "posted over HTTP"}).encode(),
                    headers={"Authorization": f"Bearer {grace}"},
                    method="POST",
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    status, answer = response.status, json.loads(response.read())
                newest = db.query(
                    "messages:list_channel",
                    {"channel": general, "paginationOpts": {"numItems": 1, "cursor": None}},
                )["page"][0]
                author = db.run(lambda ctx: ctx.db.get(newest["author"]))["name"]
                print(
                    f"HTTP action POST /channels/general/messages: {status}, "
                    f"{newest['body']!r} by {author} (id {answer['id']})"
                )
            report = db.check()
            counts = {name: t["documents"] for name, t in report["tables"].items()}
            print(f"Engine.check(): ok, documents per table {counts}")
            size = db.backup(os.path.join(folder, "backup"))
        with Engine.open(os.path.join(folder, "backup")) as copy:
            copied = copy.check()["tables"]["messages"]["documents"]
            print(f"Engine.backup(): a {size // 1024} KiB copy, {copied} messages, checks ok")
        print(f"done in {time.perf_counter() - started:.2f}s")


if __name__ == "__main__":
    main()
