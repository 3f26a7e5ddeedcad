"""``python -m examples.chat``: run the chat app end to end on a temporary database."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

from engine import ConvexError, Engine

from . import functions
from .schema import schema


@dataclass(frozen=True)
class DemoIdentity:
    """A stand-in for auth.UserIdentity: the host already verified who this is."""

    subject: str
    issuer: str = "https://demo.example"
    name: str | None = None

    @property
    def token_identifier(self) -> str:
        return f"{self.issuer}|{self.subject}"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="convexlite-demo-") as folder:
        started = time.perf_counter()
        with Engine.open(folder, schema=schema, functions=functions) as db:
            print(f"opened a database in {folder}")
            ada = DemoIdentity("user_ada", name="Ada")
            grace = DemoIdentity("user_grace", name="Grace")
            for who in (ada, grace):
                user_id = db.mutation("users:store", auth=who)
                print(f"stored user {who.name}: {user_id}")
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
                who = ada if i % 2 == 0 else grace
                db.mutation(
                    "messages:send",
                    {"channel": general, "body": f"message {i} from {who.name}"},
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
            report = db.check()
            counts = {name: t["documents"] for name, t in report["tables"].items()}
            print(f"Engine.check(): ok, documents per table {counts}")
        print(f"done in {time.perf_counter() - started:.2f}s")


if __name__ == "__main__":
    main()
