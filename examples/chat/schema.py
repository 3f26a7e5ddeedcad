"""The chat app's schema: users (synced from the identity provider), channels, messages
(optionally with a file attached, searchable by words and by meaning)."""

from __future__ import annotations

from engine import define_schema, define_table, v

schema = define_schema(
    {
        "users": define_table(
            {
                "name": v.string(),
                "externalId": v.string(),
                "role": v.optional(v.union(v.literal("admin"), v.literal("member"))),
            }
        ).index("byExternalId", ["externalId"]),
        "channels": define_table(
            {
                "name": v.string(),
                "topic": v.optional(v.string()),
            }
        ).index("by_name", ["name"]),
        "messages": define_table(
            {
                "author": v.id("users"),
                "channel": v.id("channels"),
                "body": v.string(),
                "attachment": v.optional(v.id("_storage")),
                "embedding": v.optional(v.array(v.float64())),
            }
        )
        .index("by_channel", ["channel"])
        .search_index("search_body", search_field="body", filter_fields=["channel"])
        .vector_index(
            "by_embedding", vector_field="embedding", dimensions=32, filter_fields=["channel"]
        ),
    }
)
