"""HTTP routes of the chat app (Convex's ``convex/http.ts``): post a message with curl.

    curl -X POST http://127.0.0.1:3210/channels/general/messages \\
         -H "Authorization: Bearer $TOKEN" -d '{"body": "hi from curl"}'
"""

from __future__ import annotations

from engine import ActionCtx, HttpRequest, HttpResponse, HttpRouter, http_action


@http_action
async def post_message(ctx: ActionCtx, request: HttpRequest) -> HttpResponse:
    """POST /channels/<name>/messages {"body": ...}: send as the Bearer token's user."""
    name, _, rest = request.path.removeprefix("/channels/").partition("/")
    if rest != "messages":
        return HttpResponse("not found", status=404)
    channel = await ctx.run_query("channels:by_name", {"name": name})
    if channel is None:
        return HttpResponse(f"no channel #{name}", status=404)
    try:
        body = request.json()["body"]
    except (ValueError, KeyError, TypeError):
        return HttpResponse('expected JSON {"body": "..."}', status=400)
    # messages:send reads the caller's identity: the request's Bearer token.
    message_id = await ctx.run_mutation("messages:send", {"channel": channel["_id"], "body": body})
    return HttpResponse.json({"id": message_id}, status=201)


http = HttpRouter()
http.route(path_prefix="/channels/", method="POST", handler=post_message)
