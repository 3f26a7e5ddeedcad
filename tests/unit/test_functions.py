"""engine.functions and engine.contexts: decorators, registry, validation, contexts."""

from __future__ import annotations

import asyncio
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine import (
    UNSET,
    ArgumentValidationError,
    ConvexError,
    Engine,
    EngineError,
    FunctionNotFound,
    ReadOnlyError,
    ReturnsValidationError,
    action,
    mutation,
    query,
    v,
)
from tests import app
from tests.app import notes


@dataclass(frozen=True)
class Identity:
    subject: str
    issuer: str = "https://test"


@pytest.fixture
def engine(db_path: Path):  # type: ignore[no-untyped-def]
    with Engine.open(
        db_path, functions=app, durability="none", env={"GREETING": "hello"}
    ) as handle:
        yield handle
        handle.check()


def test_names_follow_module_paths(engine: Engine) -> None:
    names = set(engine._runtime.registry.by_name)
    assert {"notes:add", "notes:texts", "notes:secret", "admin/users:remove"} <= names
    assert notes.add.name == "notes:add"


def test_functions_must_be_a_module(db_path: Path) -> None:
    for wrong in ([notes.add, notes.texts], {"notes:add": notes.add}, "tests.app"):
        with pytest.raises(
            EngineError, match=r"takes the module or package .* got (list|dict|str)"
        ):
            Engine.open(db_path, functions=wrong, durability="none")  # type: ignore[arg-type]
    # Nothing was left open by the refused calls: the folder opens normally.
    Engine.open(db_path, functions=notes, durability="none").close()


def test_call_by_name_or_object(engine: Engine) -> None:
    engine.mutation("notes:add", {"text": "a"})
    engine.mutation(notes.add, {"text": "b"})
    assert engine.query("notes:texts") == ["a", "b"]
    assert engine.query(notes.texts, {}) == ["a", "b"]


def test_unknown_and_internal_functions_look_the_same(engine: Engine) -> None:
    for ref in ["notes:nope", "notes:secret", notes.secret, "admin/users:remove"]:
        with pytest.raises(FunctionNotFound, match="Could not find public function"):
            engine.query(ref, {})
    assert engine.query("notes:call_secret") == "internal"


def test_an_internal_default_export_is_reported_missing_as_named(engine: Engine) -> None:
    # Found by hunt: "admin/hidden" (internal) was reported as 'admin/hidden:default' and
    # a missing "admin/nothing" as 'admin/nothing': the difference told it existed.
    for ref in ["admin/hidden", "admin/nothing", "admin/hidden:default"]:
        with pytest.raises(FunctionNotFound) as caught:
            engine.query(ref)
        assert str(caught.value).startswith(f"Could not find public function for '{ref}'. ")
        assert caught.value.name == ref
    assert engine.run(lambda ctx: ctx.run_query("admin/hidden")) == "hidden"


def test_a_missing_name_called_from_a_function_does_not_blame_visibility(
    engine: Engine,
) -> None:
    # ctx.run_* (and the scheduler) take internal functions: "check that the function is
    # not internal" sent the reader the wrong way there.
    with pytest.raises(FunctionNotFound) as caught:
        engine.run(lambda ctx: ctx.run_query("notes:nope"))
    assert str(caught.value).startswith("Could not find function for 'notes:nope'. ")
    assert "internal" not in str(caught.value)
    with pytest.raises(FunctionNotFound, match="Could not find function for 'notes:nope'"):
        engine.run(lambda ctx: ctx.scheduler.run_after(0, "notes:nope"))


def test_kind_mismatch(engine: Engine) -> None:
    with pytest.raises(EngineError, match="as Query, but it is defined as Mutation"):
        engine.query("notes:add", {"text": "x"})


def test_argument_validation(engine: Engine) -> None:
    with pytest.raises(
        ArgumentValidationError, match=r"\[M\(notes:add\)\] ArgumentValidationError"
    ):
        engine.mutation("notes:add", {"text": 5})
    with pytest.raises(ArgumentValidationError):
        engine.mutation("notes:add", {"text": "a", "extra": 1})
    with pytest.raises(ArgumentValidationError, match="must be an object"):
        engine.mutation("notes:add", ["a"])  # type: ignore[arg-type]
    assert engine.query("notes:untyped", {"anything": [1, 2]}) == {"anything": [1, 2]}


def test_return_validation(engine: Engine) -> None:
    with pytest.raises(ReturnsValidationError, match="ReturnsValidationError"):
        engine.query("notes:wrong_return")
    with pytest.raises(ReturnsValidationError, match="not a Convex value"):
        engine.query("notes:bad_return")


def test_a_function_returning_unset_returns_none_as_convex_returns_null(engine: Engine) -> None:
    # Found by review: returning UNSET (Convex's undefined, e.g. ``doc.get("x", UNSET)``)
    # raised ReturnsValidationError. convex-js returns ``result === undefined ? null :
    # result`` from every query, mutation and action (registration_impl.ts), and the
    # returns validator sees that null.
    @query
    def plain(ctx):  # type: ignore[no-untyped-def]
        return UNSET

    @query(returns=v.null())
    def checked(ctx):  # type: ignore[no-untyped-def]
        return UNSET

    @mutation(returns=v.union(v.string(), v.null()))
    def writes(ctx):  # type: ignore[no-untyped-def]
        ctx.db.insert("t", {"n": 1.0})
        return UNSET

    @action
    async def acts(ctx):  # type: ignore[no-untyped-def]
        return UNSET

    @query(returns=v.string())
    def wrong(ctx):  # type: ignore[no-untyped-def]
        return UNSET

    assert engine.query(plain) is None
    assert engine.query(checked) is None
    assert engine.mutation(writes) is None
    assert engine.action(acts) is None
    with pytest.raises(ReturnsValidationError, match="Value: null"):
        engine.query(wrong)  # checked as the null it becomes
    # Inside a value UNSET stays what it was: a field left out, an error in an array.
    with pytest.raises(ReturnsValidationError, match="not a Convex value"):
        engine.query(query(lambda ctx: [UNSET]))


def test_arguments_given_as_unset_are_no_arguments_as_convex_parse_args(engine: Engine) -> None:
    # Found by review: convex-js's parseArgs takes undefined arguments as {} (None did
    # already); UNSET, Convex's undefined, was "must be an object. Received: UNSET".
    @query(args={"x": v.optional(v.string())})
    def optional_x(ctx, x="none"):  # type: ignore[no-untyped-def]
        return x

    assert engine.query(optional_x, UNSET) == "none"  # type: ignore[arg-type]
    assert engine.query(optional_x, None) == "none"  # type: ignore[arg-type]
    with pytest.raises(ArgumentValidationError, match="must be an object"):
        engine.query(optional_x, [])  # type: ignore[arg-type]


def test_queries_cannot_write(engine: Engine) -> None:
    with pytest.raises((AttributeError, ReadOnlyError)):
        engine.query("notes:try_write")


def test_nested_mutation_rolls_back_only_itself(engine: Engine) -> None:
    assert engine.mutation("notes:parent") == "CHILD_FAILED"
    assert sorted(engine.query("notes:texts")) == ["child", "parent"]


def test_an_action_run_from_inside_a_mutation_is_refused(engine: Engine) -> None:
    # Found by the storage hunt: engine.action from a mutation's body committed the
    # action's writes even when the mutation then failed (Convex's mutations cannot
    # run actions), and its snapshots could deadlock with a map resize.
    class Boom(Exception):
        pass

    def body(ctx):  # type: ignore[no-untyped-def]
        with pytest.raises(EngineError, match="from inside a running query or mutation"):
            engine.action("notes:add_and_count", {"text": "from inside"})
        for finish in (engine.finish_scheduled_functions, engine.finish_all_scheduled_functions):
            with pytest.raises(EngineError, match="from inside a running query or mutation"):
                finish()
        raise Boom

    with pytest.raises(Boom):
        engine.run(body)
    assert engine.query("notes:texts") == []


def test_convex_error_keeps_data_and_rolls_back(engine: Engine) -> None:
    with pytest.raises(ConvexError) as caught:
        engine.mutation("notes:fail_with_data")
    assert caught.value.data == {"code": "NOPE", "n": 1}
    assert engine.query("notes:texts") == []


def test_convex_error_message_is_the_data_as_convex_writes_it() -> None:
    # convex-js's ConvexError message is stringifyValueForError(data): JSON.stringify
    # with no spaces, keys in their order, an Int64 (a bigint) as "<n>n", bytes (an
    # ArrayBuffer) as {}, NaN and infinities as null, whole floats without ".0", and
    # past 16,384 characters cut with "[...truncated]". Ours was json.dumps with
    # sorted keys and spaces: '{"code": 1, "a": ...}'.
    assert str(ConvexError("plain text")) == "plain text"
    assert str(ConvexError({"z": 1, "a": [2.0, 2.5, -0.0]})) == '{"z":"1n","a":[2,2.5,0]}'
    assert str(ConvexError([b"x", math.nan, math.inf, None, True, "é"])) == (
        '[{},null,null,null,true,"é"]'
    )
    assert str(ConvexError([1e21, 1e-7, 123456789.125])) == "[1e+21,1e-7,123456789.125]"
    long = str(ConvexError(["x" * 20_000]))
    assert len(long) == 16_384 and long.endswith("[...truncated]")


def test_convex_error_data_must_be_a_convex_value() -> None:
    # Found by hunt: any object was accepted as data, so a caller could receive a set
    # or a custom object, where Convex fails to serialize it.
    from engine import ValidationError

    assert ConvexError(("a", 1)).data == ["a", 1]
    assert ConvexError({"tags": (b"x",)}).data == {"tags": [b"x"]}
    with pytest.raises(ValidationError, match=r"ConvexError data must be a Convex value") as bad:
        ConvexError({"ok": 1, "tags": {1, 2}})
    assert bad.value.path == "$.tags"
    with pytest.raises(ValidationError):
        ConvexError(object())


def test_convex_error_data_crosses_an_action_intact(engine: Engine) -> None:
    with pytest.raises(ConvexError) as caught:
        engine.action("notes:mutation_error_in_action")
    assert caught.value.data == {"code": "NOPE", "n": 1}
    assert engine.query("notes:texts") == []


def test_arguments_and_results_over_16_mib_are_refused(engine: Engine) -> None:
    # Found by hunt: Convex's FUNCTION_MAX_ARGS_SIZE / FUNCTION_MAX_RESULT_SIZE (16 MiB
    # each) were not enforced.
    from engine import LimitExceeded

    big = "x" * (16 << 20)
    with pytest.raises(LimitExceeded, match=r"Arguments for notes:add are too large") as args:
        engine.mutation("notes:add", {"text": big})
    assert args.value.limit == "TooLargeFunctionArguments"
    with pytest.raises(LimitExceeded, match=r"Function notes:long_text return value is too"):
        engine.query("notes:long_text", {"n": float(16 << 20)})
    assert len(engine.query("notes:long_text", {"n": float((16 << 20) - 10)})) == (16 << 20) - 10
    # A nested call's failure is its caller's to catch, as any function error.
    assert engine.mutation("notes:catches_a_long_text", {"n": float(16 << 20)}) == (
        "TooLargeFunctionResult"
    )
    assert engine.query("notes:texts") == ["kept"]


def test_an_action_returning_an_unawaited_call_is_told_to_await_it(tmp_path: Path) -> None:
    # Found by hunt: it failed return validation as "not a Convex value", and Python
    # warned later that the coroutine was never awaited.
    with Engine.open(tmp_path / "db", functions=app, durability="none", scheduler=False) as e:
        with pytest.raises(EngineError, match=r"notes:forgets_await .* did you forget `await`"):
            e.action("notes:forgets_await", {"text": "x"})
        e.run(lambda ctx: ctx.scheduler.run_after(0, notes.forgets_await, {"text": "y"}))
        assert e.finish_scheduled_functions() == 1
        job = e.query(lambda ctx: ctx.db.system.query("_scheduled_functions").first())
        assert job["state"]["kind"] == "failed"
        assert "did you forget `await`" in job["state"]["error"]
        assert e.query("notes:texts") == []


def test_nested_calls_stop_eight_levels_down_with_convexs_message(engine: Engine) -> None:
    # Found by hunt: the message was our own; Convex's is the one users search for.
    from engine import LimitExceeded

    assert engine.query("notes:deep", {"level": 8.0}) == "bottom"
    with pytest.raises(LimitExceeded, match=r"^Cross component call depth limit exceeded\. Do"):
        engine.query("notes:deep", {"level": 9.0})


def test_clock_random_and_env(engine: Engine) -> None:
    now, again, rand, greeting = engine.mutation("notes:clock")
    assert now == again and isinstance(now, float)
    assert 0 <= rand < 1
    assert greeting == "hello"
    assert engine.mutation("notes:clock")[2] != rand


def test_identity_reaches_functions_and_actions(engine: Engine) -> None:
    assert engine.query("notes:who") is None
    assert engine.query("notes:who", auth=Identity("user_1")) == "user_1"
    result = engine.action("notes:add_and_count", {"text": "t"}, auth=Identity("user_2"))
    assert result == {"count": 1, "who": "user_2"}
    with pytest.raises(EngineError, match="no identity providers"):
        engine.query("notes:who", auth="a.raw.token")


def test_run_is_an_admin_mutation_that_can_call_internal_functions(engine: Engine) -> None:
    note = engine.mutation("notes:add", {"text": "x"})
    engine.run(lambda ctx: ctx.run_mutation("admin/users:remove", {"id": note}))
    assert engine.query("notes:texts") == []


def test_async_host_keeps_the_loop_serving(engine: Engine) -> None:
    async def main() -> tuple[int, list[str]]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)  # the ticker starts
        before = ticks
        for i in range(10):  # one at a time: a blocking call would never yield to the loop
            await engine.amutation("notes:add", {"text": str(i)})
        during = ticks - before
        await asyncio.gather(*(engine.amutation("notes:add", {"text": str(i)}) for i in range(10)))
        texts = await engine.aquery("notes:texts")
        result = await engine.aaction("notes:add_and_count", {"text": "z"})
        stop.set()
        await task
        assert result["count"] == 21
        return during, texts

    during, texts = asyncio.run(main())
    assert len(texts) == 20
    # The loop ran other work while each mutation committed: at least once per await
    # (a blocking call inside the coroutine would give 0, whatever the machine's load;
    # the old bound, > 20 ticks over a gather, missed once on a loaded machine).
    assert during >= 10


def test_blocking_action_refuses_inside_event_loop(engine: Engine) -> None:
    async def main() -> None:
        with pytest.raises(EngineError, match="aaction"):
            engine.action("notes:add_and_count", {"text": "x"})

    asyncio.run(main())


def test_many_threads_call_concurrently(engine: Engine) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(10):
                engine.mutation("notes:add", {"text": f"{i}-{j}"})
                engine.query("notes:texts")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(engine.query("notes:texts")) == 80


def test_unregistered_function_objects_can_be_called(db_path: Path) -> None:
    @query(args={})
    def hello(ctx):  # type: ignore[no-untyped-def]
        return "hi"

    @mutation
    def put(ctx, x):  # type: ignore[no-untyped-def]
        return ctx.db.insert("t", {"x": x})

    with Engine.open(db_path, durability="none") as engine:
        assert engine.query(hello) == "hi"
        assert isinstance(engine.mutation(put, {"x": 1}), str)


def test_decorator_rules() -> None:
    with pytest.raises(EngineError, match="must be `async def`"):
        from engine import action

        action(lambda ctx: None)
    with pytest.raises(EngineError, match="cannot be called directly"):
        notes.add(None)


def test_generator_handlers_are_refused_when_defined(engine: Engine) -> None:
    # Found by review: a query or mutation with a `yield` returned a generator, so its
    # body never ran (a mutation wrote nothing) and the call failed with "generator ...
    # is not a Convex value"; an `async def` action with a `yield` was refused as not
    # being `async def`.
    def rows(ctx):  # type: ignore[no-untyped-def]
        ctx.db.insert("notes", {"text": "never"})
        yield 1

    async def chunks(ctx):  # type: ignore[no-untyped-def]
        yield 1

    for decorator, handler in [(query, rows), (mutation, rows), (action, chunks)]:
        with pytest.raises(EngineError, match=r"is a generator \(it has `yield`\)") as info:
            decorator(handler)
        assert "return a list" in str(info.value)
    for decorator, handler in [(query, chunks), (mutation, chunks), (action, rows)]:
        with pytest.raises(EngineError, match=r"is a generator \(it has `yield`\)"):
            decorator(handler)


def test_a_decorator_given_something_else_than_a_function_says_how_to_write_it() -> None:
    # @query({"n": v.int64()}) (args passed positionally, as Convex's query({args, handler})
    # takes an object) or @mutation("send") made a FunctionDef of the dict or str, and the
    # decorator then failed with "AttributeError: 'dict' object has no attribute '__module__'".
    for decorator, given in [
        (query, {"n": v.int64()}),
        (mutation, "send"),
        (action, {"args": {}, "handler": None}),
        (query, 1),
    ]:
        with pytest.raises(EngineError, match=r"args=\{\.\.\.\}") as info:
            decorator(given)
        assert repr(given) in str(info.value)


def _run_with_a_commit_between(engine: Engine, body: Any) -> None:
    """Run ``body(ctx, pause)`` as a mutation; its first ``pause()`` lets another thread
    commit a note and returns once it has (later ones do nothing)."""
    gate = threading.Event()
    committed = threading.Event()

    def pause() -> None:
        if not gate.is_set():
            gate.set()
            assert committed.wait(10)

    def other_commit() -> None:
        gate.wait(10)
        engine.mutation(notes.add, {"text": "x"})
        committed.set()

    other = threading.Thread(target=other_commit)
    other.start()
    engine.run(lambda ctx: body(ctx, pause))
    other.join()


def test_determinism_under_forced_conflicts(engine: Engine) -> None:
    """A conflicting mutation re-runs on a fresh snapshot with the same arguments."""
    seen: list[int] = []

    def body(ctx: Any, pause: Any) -> None:
        rows = ctx.db.query("notes").collect()
        seen.append(len(rows))
        pause()  # another thread commits a note we have read around
        ctx.db.insert("notes", {"text": f"saw {len(rows)}"})

    _run_with_a_commit_between(engine, body)
    assert seen[0] == 0 and seen[-1] == 1  # the re-run saw the concurrent commit
    assert sorted(engine.query("notes:texts")) == ["saw 1", "x"]


def test_a_read_made_by_a_nested_query_conflicts_for_its_caller(engine: Engine) -> None:
    """The caller reads nothing itself: what its ``ctx.run_query`` read is in the
    transaction's read set, so a commit that changes it makes the caller re-run."""
    seen: list[list[str]] = []

    def body(ctx: Any, pause: Any) -> None:
        texts = ctx.run_query(notes.texts, {})
        seen.append(texts)
        pause()
        ctx.db.insert("log", {"saw": len(texts)})

    _run_with_a_commit_between(engine, body)
    assert seen == [[], ["x"]]
    assert engine.query(lambda ctx: [d["saw"] for d in ctx.db.query("log").collect()]) == [1]


def test_an_engine_call_from_inside_a_function_is_refused(engine: Engine) -> None:
    engine.mutation("notes:add", {"text": "a"})
    calls = {
        "query in query": lambda: engine.query(lambda ctx: engine.query("notes:texts")),
        "mutation in query": lambda: engine.query(
            lambda ctx: engine.mutation("notes:add", {"text": "b"})
        ),
        "query in mutation": lambda: engine.run(lambda ctx: engine.query("notes:texts")),
        "mutation in mutation": lambda: engine.run(lambda ctx: engine.run(lambda inner: None)),
    }
    for name, call in calls.items():
        with pytest.raises(EngineError, match="from inside a running query or mutation"):
            call()
        # The refusal left the thread free for the next top-level call.
        assert engine.query("notes:texts") == ["a"], name
    with pytest.raises(ZeroDivisionError):
        engine.query(lambda ctx: 1 / 0)
    assert engine.query(lambda ctx: len(ctx.db.query("notes").collect())) == 1


def test_actions_fetches_subscriptions_and_async_twins_inside_a_function_are_refused(
    engine: Engine,
) -> None:
    # Found by hunt: Engine.action inside a mutation ran, and its run_mutation committed
    # from a worker thread, outside the running transaction (and again on each retry).
    engine.mutation("notes:add", {"text": "a"})
    action = ("notes:add_and_count", {"text": "b"})
    stored = engine.store_file(b"x")
    calls = {
        "action in mutation": lambda: engine.run(lambda ctx: engine.action(*action)),
        "action in query": lambda: engine.query(lambda ctx: engine.action(*action)),
        "aaction in mutation": lambda: engine.run(lambda ctx: asyncio.run(engine.aaction(*action))),
        "fetch in mutation": lambda: engine.run(lambda ctx: engine.fetch("/notes")),
        # The async twins run the call on another thread, where it was not seen as nested.
        "amutation in mutation": lambda: engine.run(
            lambda ctx: asyncio.run(engine.amutation("notes:add", {"text": "b"}))
        ),
        "arun in mutation": lambda: engine.run(
            lambda ctx: asyncio.run(engine.arun(lambda inner: inner.db.insert("notes", {})))
        ),
        "aquery in query": lambda: engine.query(
            lambda ctx: asyncio.run(engine.aquery("notes:texts"))
        ),
        "astore_file in mutation": lambda: engine.run(
            lambda ctx: asyncio.run(engine.astore_file(b"x"))
        ),
        # Found by review: aget_file was missed, and deadlocked against a map resize.
        "aget_file in mutation": lambda: engine.run(
            lambda ctx: asyncio.run(engine.aget_file(stored))
        ),
        "subscribe in query": lambda: engine.query(lambda ctx: engine.subscribe("notes:texts")),
        # Found by the docs audit: an empty set was returned, naming no refusal.
        "subscribe_set in query": lambda: engine.query(lambda ctx: engine.subscribe_set({})),
    }
    for name, call in calls.items():
        with pytest.raises(EngineError, match="from inside a running query or mutation"):
            call()
        assert engine.query("notes:texts") == ["a"], name
    assert engine.action(*action) == {"count": 2, "who": None}


def test_an_engine_call_from_a_subscribed_query_is_refused(engine: Engine) -> None:
    # Found by hunt: subscriptions run queries outside Database.open_query, so a
    # subscribed query could commit a mutation through the engine (a query that wrote).
    @query(args={})
    def writes_through_the_engine(ctx):  # type: ignore[no-untyped-def]
        return engine.mutation("notes:add", {"text": "from a query"})

    with (
        engine.subscribe(writes_through_the_engine) as subscription,
        pytest.raises(EngineError, match="from inside a running query or mutation"),
    ):
        subscription.value  # noqa: B018
    assert engine.query("notes:texts") == []
    # The thread that subscribed is free again for engine calls.
    engine.mutation("notes:add", {"text": "after"})
    assert engine.query("notes:texts") == ["after"]


def test_functions_made_by_a_factory_are_named_by_the_module_exporting_them(
    engine: Engine,
) -> None:
    # Found by review: only handlers defined in the exporting module were registered.
    from tests.app import pets

    assert engine.mutation("pets:create", {"doc": {"name": "rex"}})
    assert engine.query("pets:count") == 1
    assert engine.query(pets.count) == 1
    assert pets.create.name == "pets:create"
    assert engine.action("pets:count_from_action") == 1


def test_actions_call_functions_by_object_whatever_their_name(
    engine: Engine, db_path: Path
) -> None:
    # Found by review: an action's ctx.run_query(fn) went by the name another engine
    # had given fn, which this engine's registry does not know.
    from engine import action, query

    @query(args={})
    def stray(ctx):  # type: ignore[no-untyped-def]
        return "stray"

    @action(args={})
    async def calls_stray(ctx):  # type: ignore[no-untyped-def]
        return await ctx.run_query(stray, {})

    stray.name = "elsewhere:stray"  # as another engine's registry would name it
    assert engine.query(stray) == "stray"
    assert engine.action(calls_stray) == "stray"


@query(args={"text": v.string()})
def echo(ctx, text):  # type: ignore[no-untyped-def]
    """Returns its argument: what a call took (the two tests below)."""
    return text


@action(args={"text": v.string()})
async def echo_action(ctx, text):  # type: ignore[no-untyped-def]
    return text


def test_an_actions_calls_take_their_arguments_when_made(engine: Engine) -> None:
    # Found by review: ctx.run_query / run_mutation / run_action were coroutine functions,
    # so they read their arguments when first awaited (a mutation's on a worker thread),
    # not when called: calls made in a loop that reused one dict all ran with its last
    # value, and a change racing the worker thread could reach the function. Convex
    # serializes the arguments when the call is made.
    @mutation(args={"text": v.string(), "tags": v.array(v.string())})
    def add_tagged(ctx, text, tags):  # type: ignore[no-untyped-def]
        ctx.db.insert("notes", {"text": f"{text}:{','.join(tags)}"})

    @action(args={})
    async def fan_out(ctx):  # type: ignore[no-untyped-def]
        args: dict[str, Any] = {"text": "", "tags": []}
        writes, reads, runs = [], [], []
        for text in ["a", "b", "c"]:
            args["text"] = text
            args["tags"].append(text)
            writes.append(ctx.run_mutation(add_tagged, args))
            reads.append(ctx.run_query(echo, {"text": args["text"]}))
            runs.append(ctx.run_action(echo_action, {"text": args["text"]}))
        return [await asyncio.gather(*reads), await asyncio.gather(*runs), await writes[0]] + [
            await w for w in writes[1:]
        ]

    assert engine.action(fan_out) == [["a", "b", "c"], ["a", "b", "c"], None, None, None]
    assert sorted(engine.query("notes:texts")) == ["a:a", "b:a,b", "c:a,b,c"]


def test_the_hosts_async_calls_take_their_arguments_when_made(engine: Engine) -> None:
    # Engine.aquery / amutation / aaction were coroutine functions: the arguments were
    # read when the call was first awaited, so calls made in a loop that reused one dict
    # and gathered all ran with its last value. A Convex client serializes them at once.
    async def host() -> list[Any]:
        args: dict[str, Any] = {"text": ""}
        calls = []
        for text in ["a", "b", "c"]:
            args["text"] = text
            calls.append(engine.amutation("notes:add", args))
            calls.append(engine.aquery(echo, args))
            calls.append(engine.aaction(echo_action, args))
        args["text"] = "changed"
        return list(await asyncio.gather(*calls))

    results = asyncio.run(host())
    assert results[1::3] == ["a", "b", "c"] and results[2::3] == ["a", "b", "c"]
    assert sorted(engine.query("notes:texts")) == ["a", "b", "c"]


def test_v_id_arguments_and_results_must_be_ids_of_that_table(engine: Engine) -> None:
    # Found by review: args and returns checked only that the id was well formed.
    from tests.app import pets

    pet = engine.mutation(pets.create, {"doc": {"name": "rex"}})
    note = engine.mutation("notes:add", {"text": "a"})
    assert engine.query(pets.echo_pet, {"id": pet}) == pet
    with pytest.raises(ArgumentValidationError, match="from table `notes`, which does not"):
        engine.query(pets.echo_pet, {"id": note})
    from engine import ids

    unknown = ids.encode_id(55_555, bytes(16))
    with pytest.raises(
        ArgumentValidationError, match=r"Value does not match validator\.\nPath: \.id\n"
    ):
        engine.query(pets.echo_pet, {"id": unknown})


def test_a_returned_id_of_a_table_created_in_the_same_mutation_is_valid(engine: Engine) -> None:
    from engine import mutation, v

    @mutation(args={}, returns=v.id("fresh"))
    def make(ctx):  # type: ignore[no-untyped-def]
        return ctx.db.insert("fresh", {"n": 1})

    @mutation(args={}, returns=v.id("fresh"))
    def wrong(ctx):  # type: ignore[no-untyped-def]
        return ctx.db.insert("other_fresh", {"n": 1})

    assert engine.mutation(make)
    with pytest.raises(ReturnsValidationError, match="from table `other_fresh`"):
        engine.mutation(wrong)


def test_every_run_gets_fresh_arguments(engine: Engine) -> None:
    # Found by review: a handler that changed its list/object arguments changed them for
    # the re-run after a conflict, and for the caller.
    from tests.app import pets

    calls: list[int] = []

    def conflict_once() -> None:
        calls.append(1)
        if len(calls) == 1:  # a concurrent commit to what the mutation just read
            worker = threading.Thread(
                target=lambda: engine.mutation(pets.create, {"doc": {"name": "x"}})
            )
            worker.start()
            worker.join()

    pets.after_read.append(conflict_once)
    try:
        args = {"tags": ["a"], "meta": {"n": 0}}
        seen = engine.mutation(pets.mutate_args, args)
    finally:
        pets.after_read.clear()
    assert len(calls) == 2  # it did conflict and re-run
    assert seen == [["a"], {"n": 0}]  # the re-run saw the arguments as called
    assert args == {"tags": ["a"], "meta": {"n": 0}}  # and the caller's are untouched


def test_flat_arguments_are_passed_without_a_copy_yet_stay_the_callers(engine: Engine) -> None:
    # handler_args passes flat arguments as they are: the ** call binds them, so a
    # handler taking **kwargs gets a dict of its own.
    @query(args={"n": v.int64(), "s": v.string()})
    def change_kwargs(ctx, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["n"] += 1
        kwargs["extra"] = True
        return kwargs

    args = {"n": 1, "s": "x"}
    assert engine.query(change_kwargs, args) == {"n": 2, "s": "x", "extra": True}
    assert engine.query(change_kwargs, args) == {"n": 2, "s": "x", "extra": True}
    assert args == {"n": 1, "s": "x"}


def test_async_handlers_given_as_inline_functions_are_refused(engine: Engine) -> None:
    # Found by review: engine.run(async fn) returned a coroutine and wrote nothing, silently.
    async def insert(ctx):  # type: ignore[no-untyped-def]
        ctx.db.insert("notes", {"text": "never"})

    for call in (
        lambda: engine.run(insert),
        lambda: engine.query(insert),
        lambda: engine.mutation(insert),
        lambda: asyncio.run(engine.arun(insert)),
    ):
        with pytest.raises(EngineError, match="returned an awaitable"):
            call()
    assert engine.query("notes:texts") == []


def test_inline_actions_run_with_an_action_context(engine: Engine) -> None:
    # engine.action(async_fn), as convex-test's t.action(async ctx => ...): internal
    # functions are callable from it, and the caller's identity reaches them.
    async def body(ctx):  # type: ignore[no-untyped-def]
        await ctx.run_mutation("notes:add", {"text": "inline"})
        return await ctx.run_query("notes:secret"), await ctx.run_query("notes:who")

    assert engine.action(body, auth=Identity("user_3")) == ("internal", "user_3")
    assert asyncio.run(engine.aaction(body)) == ("internal", None)
    assert engine.query("notes:texts") == ["inline", "inline"]
    with pytest.raises(EngineError, match="must be an async function"):
        engine.action(lambda ctx: 1)
    with pytest.raises(EngineError, match="takes no arguments"):
        engine.action(body, {"x": 1})

    async def run_action_inline(ctx):  # type: ignore[no-untyped-def]
        return await ctx.run_action(body)  # only the host may pass an inline function

    with pytest.raises(EngineError, match="Expected a function name or a decorated function"):
        engine.action(run_action_inline)


def test_nested_calls_take_ids_of_tables_the_transaction_created(engine: Engine) -> None:
    # Found by review: a nested call's v.id arguments were checked against the snapshot's
    # tables only, so an id of a table the mutation had just created was refused.
    from engine import internal_mutation, v

    @internal_mutation(args={"id": v.id("brand_new")})
    def takes(ctx, id):  # type: ignore[no-untyped-def]
        return id

    def parent(ctx):  # type: ignore[no-untyped-def]
        return ctx.run_mutation(takes, {"id": ctx.db.insert("brand_new", {})})

    assert engine.run(parent)


def test_handlers_that_cannot_take_their_declared_args_are_refused_when_defined() -> None:
    # Each of these failed on some call with a raw TypeError (found by review).
    from engine import v

    def takes_x(ctx, x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(EngineError, match="does not take the argument 'y'"):
        query(args={"x": v.string(), "y": v.string()})(takes_x)
    with pytest.raises(EngineError, match="optional .* has no default"):
        query(args={"x": v.optional(v.string())})(takes_x)
    with pytest.raises(EngineError, match="name of the handler's context parameter"):
        query(args={"ctx": v.string()})(lambda ctx, **rest: None)
    with pytest.raises(EngineError, match="args must be a dict of validators or a v.object"):
        query(args=v.string())(takes_x)
    with pytest.raises(EngineError, match="must take the context as its first parameter"):
        query(lambda: None)
    # Found by hunt: a parameter without a default that args does not declare failed
    # every call with a raw TypeError.
    with pytest.raises(EngineError, match="takes the parameter 'y', which its args do not"):
        query(args={"x": v.string()})(lambda ctx, x, y: x)
    with pytest.raises(EngineError, match="takes the parameter 'y'"):
        query(args={"x": v.string()})(lambda ctx, x, *, y: x)

    # Convex's JavaScript shape, handler(ctx, args), is told the Python one (the advice
    # was to declare a field 'args').
    def create(ctx, args):  # type: ignore[no-untyped-def]
        return args["title"]

    with pytest.raises(EngineError, match=r"keyword parameters.*def create\(ctx, title, n\)"):
        mutation(args={"title": v.string(), "n": v.int64()})(create)
    with pytest.raises(EngineError, match="positional-only"):
        query(args={})(lambda ctx, x, /: x)
    query(args={"x": v.string()})(lambda ctx, x, y=1, *, z=2: x)
    # What works: defaults for optional args, **kwargs, a context under another name.
    query(args={"x": v.optional(v.string())})(lambda ctx, x=None: x)
    query(args={"x": v.string(), "y": v.int64()})(lambda ctx, **rest: rest)
    query(args={"ctx": v.string()})(lambda c, ctx: ctx)


def test_unvalidated_functions_refuse_arguments_their_handler_does_not_take(
    engine: Engine,
) -> None:
    @query
    def no_args(ctx):  # type: ignore[no-untyped-def]
        return "ok"

    @query
    def anything(ctx, **args):  # type: ignore[no-untyped-def]
        return sorted(args)

    @query
    def needs_x(ctx, x, y=0, **rest):  # type: ignore[no-untyped-def]
        return x

    assert engine.query(no_args) == "ok"
    with pytest.raises(ArgumentValidationError, match="takes no argument 'x'"):
        engine.query(no_args, {"x": 1})
    assert engine.query(no_args, {"x": UNSET}) == "ok"  # absent, as undefined in Convex
    assert engine.query(anything, {"b": 1, "a": 2}) == ["a", "b"]
    # Found by hunt: a missing argument the handler needs was a raw TypeError.
    with pytest.raises(
        ArgumentValidationError, match=r"\[Q\(.*needs_x\)\] .* needs the argument 'x'"
    ):
        engine.query(needs_x, {"y": 1})
    with pytest.raises(ArgumentValidationError, match="needs the argument 'x'"):
        engine.query(needs_x, {"x": UNSET})  # an UNSET field is absent
    assert engine.query(needs_x, {"x": 3}) == 3
    # Found by hunt: an argument named like the context parameter of a **kwargs handler
    # was a raw TypeError ("got multiple values for argument 'ctx'").
    with pytest.raises(ArgumentValidationError, match="'ctx' has the name of the handler's"):
        engine.query(anything, {"ctx": 1})
    with pytest.raises(ArgumentValidationError, match="'ctx' has the name of the handler's"):
        engine.query(needs_x, {"x": 1, "ctx": 1})
    with pytest.raises(ArgumentValidationError, match="takes no argument 'ctx'"):
        engine.query(no_args, {"ctx": 1})


def test_args_v_any_leaves_the_arguments_unvalidated(engine: Engine) -> None:
    # Found by review: args=v.any() raised EngineError when the function was defined.
    # Convex accepts it: an args validator of type any is ArgsValidator::Unvalidated
    # (crates/model/src/modules/function_validators.rs), as omitting args is.
    from engine import v

    @query(args=v.any())
    def anything(ctx, **args):  # type: ignore[no-untyped-def]
        return sorted(args)

    @query(args=v.any())
    def no_args(ctx):  # type: ignore[no-untyped-def]
        return "ok"

    assert anything.args is None
    assert engine.query(anything, {"b": 1, "a": 2}) == ["a", "b"]
    assert engine.query(no_args) == "ok"
    with pytest.raises(ArgumentValidationError, match="takes no argument 'x'"):
        engine.query(no_args, {"x": 1})
    with pytest.raises(ArgumentValidationError, match="must be an object"):
        engine.query(anything, [1])  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="args must be a dict of validators or a v.object"):
        query(args=v.optional(v.any()))(lambda ctx, **rest: rest)


def test_arguments_and_results_are_converted_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # validate() converts what it is given; the runtime converts first and must not
    # pay for it twice (a query returning 5,000 validated rows cost 1.5x).
    from engine import validators

    calls = 0
    original = validators.convert

    def counting(value):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return original(value)

    monkeypatch.setattr(validators, "convert", counting)
    engine.mutation("notes:add", {"text": "x"})
    assert engine.query("notes:texts") == ["x"]
    assert calls == 0


def test_open_refuses_an_auth_configuration_that_cannot_verify(db_path: Path) -> None:
    # auth=[provider] or an issuer URL opened, then every call with a token raised
    # "'list' object has no attribute 'verify'".
    for wrong, said in [
        ([object()], r"got list: wrap the providers in auth\.AuthConfig"),
        ("https://a.clerk.accounts.dev", r"got str: write auth\.AuthConfig\(providers="),
        (
            {"issuer": "x"},
            r"takes an identity-provider configuration \(auth\.AuthConfig\), got dict$",
        ),
    ]:
        with pytest.raises(EngineError, match=said):
            Engine.open(db_path, auth=wrong, durability="none")
    assert not db_path.exists() or not any(db_path.iterdir())  # refused before opening


def test_raw_credentials_and_plain_data_are_not_a_verified_identity(engine: Engine) -> None:
    # Found by review: any non-str auth= was trusted as verified, so a forged token passed
    # as bytes, or a client-supplied dict, reached functions as an identity.
    for forged in (b"eyJhbGciOi.forged.token", {"tokenIdentifier": "x|admin"}, ["admin"]):
        with pytest.raises(EngineError, match="auth= takes a token"):
            engine.query("notes:texts", auth=forged)
        with pytest.raises(EngineError, match="auth= takes a token"):
            engine.fetch("/notes", auth=forged)
    assert engine.query("notes:texts", auth=Identity("user")) == []
    # The fix fits what was passed: a dict was told to "decode a bytes token to str".
    with pytest.raises(EngineError, match="got bytes: decode a bytes token to str first"):
        engine.query("notes:texts", auth=b"token")
    with pytest.raises(EngineError, match="got dict: verify the caller first") as raised:
        engine.query("notes:texts", auth={"subject": "x"})
    assert "bytes" not in str(raised.value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_child_draws_its_own_ctx_random(db_path: Path) -> None:
    # Found by hunt: the generator that seeds each run's ctx.random was inherited by a
    # fork child, so parent and child functions drew the same "random" numbers.
    from tests.race.test_fork import in_child

    def draw() -> float:
        with Engine.open(db_path, durability="none") as engine:
            value: float = engine.query(lambda ctx: ctx.random.random())
        return value

    Engine.open(db_path, durability="none").close()  # the folder exists before the fork
    child = in_child(draw)
    assert child != draw()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PORT": 8080}, r"environment variables are strings.*'PORT': int 8080"),
        ({1: "x"}, r"environment variables are strings"),
        (["A=1"], r"expects a mapping of names to strings.*got list"),
    ],
)
def test_env_holds_strings_only_as_in_convex(db_path: Path, env: Any, expected: str) -> None:
    """Convex's environment variables are strings: anything else is refused at open,
    before the folder is created."""
    with pytest.raises(EngineError, match=expected):
        Engine.open(db_path, durability="none", env=env)
    assert not db_path.exists()


@action
async def _reads_ctx_attribute(ctx: Any, name: str) -> str:
    try:
        getattr(ctx, name)
    except AttributeError as error:
        return str(error)
    return "found"


def test_a_context_attribute_of_another_kind_of_function_says_where_it_is(
    engine: Engine,
) -> None:
    # Found by a first-time user: a query's ctx.db.insert raised "'DatabaseReader' object
    # has no attribute 'insert'", and a mutation's ctx.run_action no more than that.
    def missing(kind: str, fn: Any) -> str:
        with pytest.raises(AttributeError) as raised:
            engine.query(fn) if kind == "query" else engine.mutation(fn)
        return str(raised.value)

    assert "ctx.db.insert is not available in a query" in missing(
        "query", lambda ctx: ctx.db.insert("t", {})
    )
    assert "schedule from a mutation or an action" in missing("query", lambda ctx: ctx.scheduler)
    assert "ctx.run_mutation is not available in a query" in missing(
        "query", lambda ctx: ctx.run_mutation
    )
    assert "ctx.storage.delete is not available in a query" in missing(
        "query", lambda ctx: ctx.storage.delete
    )
    assert "ctx.storage.store is not available in a mutation: it is in actions only" in (
        missing("mutation", lambda ctx: ctx.storage.store)
    )
    assert "ctx.scheduler.run_after(0, ...)" in missing("mutation", lambda ctx: ctx.run_action)
    # Other names keep Python's message; what exists is unaffected.
    assert missing("query", lambda ctx: ctx.nope) == "'QueryCtx' object has no attribute 'nope'"
    assert missing("query", lambda ctx: ctx.db.nope).endswith("no attribute 'nope'")
    assert engine.mutation(lambda ctx: ctx.scheduler is not None and ctx.db.insert is not None)
    said = engine.action(_reads_ctx_attribute, {"name": "db"})
    assert said.startswith("ctx.db is not available in an action") and "ctx.run_query" in said
    assert engine.action(_reads_ctx_attribute, {"name": "scheduler"}) == "found"


def test_arguments_sharing_one_list_many_times_are_too_large(engine: Engine) -> None:
    # A value is a tree to Convex: 8192 references to one list of 8192 references to
    # 8192 floats is 4.4 TB by its measure. convert() stops walking it past 64 MiB, and
    # the call is refused as Convex refuses large arguments.
    from engine import LimitExceeded

    shared: Any = [[[1.5] * 8192] * 8192] * 8192
    with pytest.raises(LimitExceeded, match=r"\(actual: more than 64 MiB") as args:
        engine.mutation("notes:add", {"text": shared})
    assert args.value.limit == "TooLargeFunctionArguments"


def test_an_action_keeps_its_outcome_when_the_engine_closes_as_it_returns(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: after an action, Engine.action reads the head to catch the
    # subscriptions up, outside any counted call; a close() landing just then made that
    # read raise LMDB's error from a finally, in place of the action's own result.
    from engine.errors import StorageError

    subscription = engine.subscribe("notes:texts")
    db = engine._db
    read = db.storage.read
    caller = threading.current_thread()

    def closed_meanwhile(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not caller:  # the subscription worker
            return read(*args, **kwargs)
        db.closing = True  # close() began as the action returned
        raise StorageError("LMDB error: Attempt to operate on closed/deleted/dropped object")

    monkeypatch.setattr(db.storage, "read", closed_meanwhile)
    try:
        assert engine.action("notes:add_and_count", {"text": "x"})["count"] == 1
    finally:
        monkeypatch.undo()
        db.closing = False
        subscription.close()
