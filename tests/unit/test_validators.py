"""engine.validators: every builder, rule and message."""

from __future__ import annotations

import pickle

import pytest

from engine import UNSET, ValidationError, mutation, pagination_opts, v
from engine.ids import encode_id
from engine.validators import validator_from_json

USERS_ID = encode_id(10001, bytes(16))
POSTS_ID = encode_id(10002, bytes(16))


def fails(validator, value, *, resolver=None) -> ValidationError:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as caught:
        validator.validate(value, resolver=resolver)
    return caught.value


@pytest.mark.parametrize(
    ("validator", "good", "bad"),
    [
        (v.string(), "x", [1, b"x", None]),
        (v.number(), 1.5, [1, True, "1"]),
        (v.float64(), float("nan"), [0]),
        (v.int64(), 1, [1.0, True]),
        (v.boolean(), True, [0, 1, None]),
        (v.null(), None, [0, False, ""]),
        (v.bytes(), b"\x00", ["x", [0]]),
        (v.array(v.int64()), [1, 2], [(1, 2.0), [1, 2.0], {}]),
        (v.literal("a"), "a", ["b", 1]),
        (v.literal(1), 1, [1.0, True]),
        (v.literal(0.0), 0.0, [-0.0, 0]),
        (v.union(v.string(), v.int64()), 3, [3.0, None]),
        (v.nullable(v.string()), None, [1]),
        (v.record(v.string(), v.int64()), {"a": 1}, [{"a": "x"}, {"$a": 1}, {"a": 1.0}, []]),
    ],
)
def test_scalars_and_containers(validator, good, bad) -> None:  # type: ignore[no-untyped-def]
    validator.validate(good)
    for value in bad:
        fails(validator, value)


def test_any_accepts_everything() -> None:
    for value in [None, 1, "x", [1], {"a": {"b": b""}}]:
        v.any().validate(value)


def test_mismatch_message_has_convex_shape() -> None:
    error = fails(v.object({"author": v.string()}), {"author": 123.0})
    assert str(error) == (
        "Value does not match validator.\nPath: .author\nValue: 123.0\nValidator: v.string()"
    )
    assert error.path == ".author"


def test_nested_paths() -> None:
    validator = v.object({"tags": v.array(v.object({"name": v.string()}))})
    error = fails(validator, {"tags": [{"name": "a"}, {"name": 5}]})
    assert error.path == ".tags[1].name"
    assert "Path: .tags[1].name" in str(error)


def test_objects_are_exact() -> None:
    validator = v.object({"body": v.string(), "n": v.optional(v.int64())})
    validator.validate({"body": "x"})
    validator.validate({"body": "x", "n": 1})
    error = fails(validator, {"n": 1})
    assert str(error).startswith(
        "Object is missing the required field `body`. Consider wrapping the field validator "
        "in `v.optional(...)` if this is expected."
    )
    error = fails(validator, {"body": "x", "x": 1})
    assert str(error).startswith("Object contains extra field `x` that is not in the validator.")
    fails(validator, {"body": "x", "n": None})  # optional means absent, not None


def test_literal_message() -> None:
    error = fails(v.literal("a"), "c")
    assert str(error).startswith('`"c"` does not match literal validator `v.literal("a")`')


def test_ids_check_syntax_and_table() -> None:
    validator = v.id("users")
    validator.validate(USERS_ID)
    fails(validator, "not-an-id")
    fails(validator, 5)
    names = {10001: "users", 10002: "posts"}.get
    validator.validate(USERS_ID, resolver=names)
    error = fails(validator, POSTS_ID, resolver=names)
    assert str(error) == (
        f'Found ID "{POSTS_ID}" from table `posts`, which does not match the '
        'table name in validator `v.id("users")`.'
    )
    # An id of no existing table matches no table (found by review: it passed), and
    # Convex reports it as a plain mismatch.
    error = fails(validator, USERS_ID, resolver={}.get)
    assert str(error).startswith("Value does not match validator.\n\nValue: ")
    # An id of a system table says so, as Convex does.
    error = fails(validator, encode_id(1, bytes(16)), resolver={1: "_storage"}.get)
    assert "from a system table, which does not match" in str(error)


def test_reprs_read_as_source() -> None:
    validator = v.object(
        {
            "name": v.string(),
            "age": v.optional(v.int64()),
            "kind": v.union(v.literal("a"), v.null()),
        }
    )
    assert repr(validator) == (
        'v.object({"name": v.string(), "age": v.optional(v.int64()), '
        '"kind": v.union(v.literal("a"), v.null())})'
    )
    assert repr(v.record(v.string(), v.any())) == "v.record(v.string(), v.any())"
    assert repr(v.id("users")) == 'v.id("users")'


def test_object_helpers() -> None:
    base = v.object({"a": v.string(), "b": v.int64(), "c": v.boolean()})
    base.pick("a").validate({"a": "x"})
    base.omit("a").validate({"b": 1, "c": True})
    base.extend({"d": v.null()}).validate({"a": "x", "b": 1, "c": False, "d": None})
    base.partial().validate({})
    with pytest.raises(TypeError):
        v.string().pick("a")


def test_json_round_trip() -> None:
    validator = v.object(
        {
            "a": v.array(v.union(v.literal(1), v.id("t"))),
            "b": v.optional(v.record(v.string(), v.bytes())),
            "c": v.nullable(v.float64()),
            "d": v.any(),
            "e": v.boolean(),
        }
    )
    again = validator_from_json(validator.to_json())
    assert again == validator and repr(again) == repr(validator)


@pytest.mark.parametrize("name", ["not valid", "ñame", "名前", "x" * 65, "__", "_", "$x", "1a", ""])
def test_field_names_must_be_identifiers(name: str) -> None:
    # Convex's IdentifierFieldName: ASCII [A-Za-z_][A-Za-z0-9_]*, at most 64 characters,
    # not all underscores (found by review: str.isidentifier() let the non-ASCII and the
    # long ones through, giving schemas no document can satisfy).
    with pytest.raises(ValidationError, match="Invalid field name"):
        v.object({name: v.string()})
    v.object({"x" * 64: v.string(), "_a": v.string(), "a_1": v.string()})


def test_pagination_opts_accepts_python_ints() -> None:
    pagination_opts.validate({"numItems": 10, "cursor": None})
    pagination_opts.validate(
        {"numItems": 10.0, "cursor": "c", "endCursor": None, "maximumRowsRead": 100}
    )
    fails(pagination_opts, {"numItems": "10", "cursor": None})
    fails(pagination_opts, {"numItems": 10})


def test_object_helpers_keep_optionality() -> None:
    # Convex's VObject.pick/omit/extend/partial keep isOptional (found by review).
    inner = v.optional(v.object({"a": v.string(), "b": v.int64()}))
    for derived in (
        inner.pick("a"),
        inner.omit("b"),
        inner.extend({"c": v.null()}),
        inner.partial(),
    ):
        assert derived.is_optional
        v.object({"x": derived}).validate({})
    assert not v.object({"a": v.string()}).partial().is_optional
    assert repr(v.optional(v.optional(v.string()))) == "v.optional(v.string())"
    with pytest.raises(ValidationError, match=r"Cannot pick \['zz'\]"):
        inner.pick("zz")


def test_validate_takes_values_into_the_value_model_first() -> None:
    # validate() accepts what a function call accepts, and refuses what it refuses.
    v.bytes().validate(bytearray(b"x"))
    v.array(v.int64()).validate((1, 2))
    v.object({"a": v.optional(v.string())}).validate({"a": UNSET})
    for validator, value in [
        (v.int64(), 2**70),
        (v.any(), {1, 2}),
        (v.any(), object()),
        (v.string(), "\ud800"),
        (v.any(), {1: 2}),
        (v.record(v.string(), v.any()), {1: "a"}),
    ]:
        fails(validator, value)


def test_record_definitions_follow_convex_rules() -> None:
    for keys in (
        v.int64(),
        v.number(),
        v.any(),
        v.literal("a"),
        v.union(v.string(), v.literal("a")),
    ):
        with pytest.raises(ValidationError, match="InvalidRecordType"):
            v.record(keys, v.string())
    with pytest.raises(ValidationError, match="cannot have optional values"):
        v.record(v.string(), v.optional(v.string()))
    with pytest.raises(ValidationError, match="cannot have optional keys"):
        v.record(v.optional(v.string()), v.string())
    v.record(v.union(v.string(), v.id("users")), v.string()).validate({"k": "x"})
    with pytest.raises(ValidationError, match="outside the Int64 range"):
        v.literal(2**70)


def test_equal_validators_accept_the_same_values() -> None:
    for a, b in [
        (v.literal(1), v.literal(1.0)),
        (v.literal(True), v.literal(1)),
        (v.literal(0.0), v.literal(-0.0)),
    ]:
        assert a != b
    assert v.literal(1) == v.literal(1)
    assert hash(v.object({"a": v.string()})) == hash(v.object({"a": v.string()}))
    assert v.object({"a": v.string()}) == v.object({"a": v.string()})


def test_object_fields_are_checked_in_sorted_order_as_convex_does() -> None:
    # crates/common/src/schemas/validator.rs: the ObjectValidator is a BTreeMap; each
    # field in sorted order is checked (value, or absence) before the next, extra
    # fields come last, the smallest first.
    both_wrong = v.object({"b": v.string(), "a": v.string()})
    error = fails(both_wrong, {"b": 2, "a": 1})
    assert error.path == ".a"
    assert (
        str(error) == "Value does not match validator.\nPath: .a\nValue: 1\nValidator: v.string()"
    )
    # a bad value of "a" before the missing "b", and before an extra field
    two = v.object({"b": v.string(), "a": v.string()})
    assert fails(two, {"a": 1}).path == ".a"
    assert fails(v.object({"a": v.string()}), {"z": 1, "a": 1}).path == ".a"
    # a missing "a" before a bad value of "b"
    error = fails(two, {"b": 1})
    assert error.path == ""
    assert str(error).startswith("Object is missing the required field `a`.")
    # extra fields in sorted order, whatever the dict's order
    error = fails(v.object({"a": v.string()}), {"z": 1, "y": 2, "a": "x"})
    assert str(error).startswith(
        "Object contains extra field `y` that is not in the validator.\n\n"
    )


def test_record_failures_name_keys_or_values_as_convex_does() -> None:
    record = v.record(v.string(), v.float64())
    error = fails(record, {"k": "x"})
    assert error.path == ".values()"
    assert str(error) == (
        'Value does not match validator.\nPath: .values()\nValue: "x"\nValidator: v.float64()'
    )
    nested = v.object({"m": record})
    assert fails(nested, {"m": {"b": 1.0, "a": "x"}}).path == ".m.values()"
    users = v.record(v.id("users"), v.float64())
    assert fails(users, {"notanid": 1.0}).path == ".keys()"
    # keys are sorted, and each key is checked before its value
    assert fails(users, {"zzz": 1.0, USERS_ID: "x"}).path == ".values()"
    assert fails(users, {"000": "x", USERS_ID: 1.0}).path == ".keys()"
    # only the key validator judges a key: "" and "_x" are valid nested keys
    record.validate({"_x": 1.0, "": 2.0})


def test_literal_and_union_failures_in_convex_shape() -> None:
    error = fails(v.object({"n": v.literal("a")}), {"n": "c"})
    assert error.path == ".n"
    assert str(error) == '`"c"` does not match literal validator `v.literal("a")`.Path: .n'
    # a one-member union reports its member's failure (validator.rs: validators.len() == 1)
    error = fails(v.union(v.object({"a": v.string()})), {"a": 1})
    assert error.path == ".a"
    error = fails(v.union(v.string()), 1)
    assert str(error) == "Value does not match validator.\n\nValue: 1\nValidator: v.string()"


def test_literals_of_enum_members_are_their_plain_values() -> None:
    # Found by review: v.literal(Role.ADMIN) raised TypeError although a StrEnum member
    # is a str everywhere else in the value model (convert() stores it as the plain str),
    # which broke the usual v.union(*(v.literal(r) for r in Role)).
    import enum

    class Role(enum.StrEnum):
        ADMIN = "admin"
        MEMBER = "member"

    class Level(enum.IntEnum):
        ONE = 1

    roles = v.union(*(v.literal(role) for role in Role))
    assert repr(roles) == 'v.union(v.literal("admin"), v.literal("member"))'
    assert roles.to_json()["value"][0] == {"type": "literal", "value": "admin"}
    assert type(roles.to_json()["value"][0]["value"]) is str
    roles.validate("admin")
    roles.validate(Role.MEMBER)
    fails(roles, "owner")
    one = v.literal(Level.ONE)
    assert repr(one) == "v.literal(1)" and one == v.literal(1)
    one.validate(1)
    fails(one, 1.0)
    fails(one, True)
    assert v.literal(Level.ONE) != v.literal(True)
    with pytest.raises(TypeError):
        v.literal(None)


@pytest.mark.parametrize("table", ["", "a b", "1users", "users!", "___", "x" * 65, "é"])
def test_id_validators_name_a_valid_table(table: str) -> None:
    # Found by review: v.id() took any string, so v.id("user s") was defined and its
    # check accepted any syntactically valid id when no resolver was given. Convex parses
    # the table name of an id validator as a TableName (an identifier; system tables
    # start with "_") and refuses the validator.
    with pytest.raises(ValidationError, match="Invalid table name"):
        v.id(table)
    v.id("users")
    v.id("_storage")
    # A stored validator stays readable whatever rules were in force when it was stored.
    assert repr(validator_from_json({"type": "id", "tableName": table})) == f'v.id("{table}")'


def test_record_keys_may_be_nested_unions_of_strings_and_ids() -> None:
    # Found by review: only a flat union of v.string()/v.id() was accepted as a record's
    # key validator. Convex accepts any key validator that is a subset of v.string()
    # without string literals (Validator::is_subset recurses into unions), so nested
    # unions pass; a literal anywhere inside is still refused.
    keys = v.union(v.union(v.string(), v.id("users")), v.id("posts"))
    v.record(keys, v.int64()).validate({"k": 1})
    with pytest.raises(ValidationError, match="InvalidRecordType"):
        v.record(v.union(v.union(v.string(), v.literal("a"))), v.int64())
    with pytest.raises(ValidationError, match="InvalidRecordType"):
        v.record(v.union(v.union(v.int64())), v.int64())


def test_record_key_errors_use_convex_two_messages() -> None:
    # String-literal keys got "record keys are strings, so the key validator must be
    # v.string(), ..." although the literals are strings; Convex (schemas/json.rs) says
    # "Records cannot have string literal keys" for them and names the key type otherwise.
    keys = v.union(v.literal("a"), v.literal("b"))
    with pytest.raises(ValidationError) as caught:
        v.record(keys, v.float64())
    assert str(caught.value).startswith(
        "InvalidRecordType: Records cannot have string literal keys"
    )
    assert "v.object" in str(caught.value)  # the fix: an object with optional fields
    with pytest.raises(ValidationError) as caught:
        v.record(v.int64(), v.float64())
    assert str(caught.value).startswith(
        "InvalidRecordType: Records can only have string keys. Your validator contains a "
        "record with key typed as `v.int64()`, which is not a subtype of `v.string()`"
    )


def test_a_python_type_where_a_validator_belongs_is_named_with_its_field_and_fix() -> None:
    # Found by a first-time user: {"title": str} raised "Expected a validator ... got
    # <class 'str'>" without saying which field, in a dict of dozens, or what to write.
    with pytest.raises(
        TypeError, match=r"^Field 'title': .*got <class 'str'>: write v\.string\(\)$"
    ):
        v.object({"title": str, "n": v.int64()})
    with pytest.raises(TypeError, match=r"^Field 'a\.b\.c': .*: write v\.int64\(\) \(an int"):
        v.object({"a": {"b": {"c": int}}})
    with pytest.raises(TypeError, match=r"got 'number': write v\.number\(\)$"):
        mutation(args={"price": "number"})(lambda ctx, price: price)
    with pytest.raises(TypeError, match=r"^Expected a validator .* got 5$"):
        v.array(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="write v.bytes()") as raised:
        v.object({"x": bytes})
    copy = pickle.loads(pickle.dumps(raised.value))
    assert (type(copy), str(copy)) == (type(raised.value), str(raised.value))


def test_v_object_of_something_else_than_a_dict_says_what_it_takes() -> None:
    # v.object([...]) (or of a validator) raised "AttributeError: 'list' object has no
    # attribute 'items'" from inside the builder.
    for given in [[("a", v.string())], v.object({"a": v.string()}), None, "a"]:
        with pytest.raises(TypeError, match=r"^v\.object\(\) takes a dict of field names"):
            v.object(given)  # type: ignore[arg-type]


def test_none_for_an_optional_field_says_to_leave_it_out_or_patch_unset() -> None:
    # In JavaScript `undefined` leaves an optional field out; in Python None is null, a
    # value, and the Convex message alone did not say how to clear the field.
    validator = v.object({"a": v.string(), "b": v.optional(v.string())})
    with pytest.raises(ValidationError) as raised:
        validator.validate({"a": "x", "b": None})
    message = str(raised.value)
    assert message.startswith("Value does not match validator.\nPath: .b\nValue: null\n")
    assert message.endswith(
        "leave the optional field `b` out, or patch it with engine.UNSET to remove it.)"
    )
    # Only for None in an optional field: a required field, or another value, is as before.
    for value in ({"a": None}, {"a": "x", "b": 1}):
        with pytest.raises(ValidationError) as raised:
            validator.validate(value)
        assert "engine.UNSET" not in str(raised.value)
    validator.validate({"a": "x"})
    v.object({"b": v.optional(v.nullable(v.string()))}).validate({"b": None})


def test_an_int_for_a_float_or_a_whole_float_for_an_int_says_which_python_type_to_pass() -> None:
    # In JavaScript 1 is a float; a Python caller passing priority=1 to v.number() got
    # "Value: 1 / Validator: v.float64()" and no word that an int is a Convex Int64.
    with pytest.raises(ValidationError) as raised:
        v.object({"p": v.number()}).validate({"p": 1})
    assert str(raised.value).endswith(
        "Validator: v.float64()\n(A Python int is a Convex Int64: pass a float, 1.0, or "
        "declare v.int64().)"
    )
    with pytest.raises(ValidationError, match=r"pass an int, 2, or declare v\.float64\(\)"):
        v.int64().validate(2.0)
    # Other mismatches keep Convex's message alone.
    for validator, value in ((v.int64(), 2.5), (v.number(), "1"), (v.number(), True)):
        with pytest.raises(ValidationError) as raised:
            validator.validate(value)
        assert "(A Python" not in str(raised.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_literal_of_a_non_finite_float_is_refused(value: float) -> None:
    # Convex refuses them (UnsupportedFloatLiteral: its ValidatorJSON holds a literal as
    # a JSON number); accepting them gave validators whose repr, v.literal(nan), is no
    # Python source and that Convex would reject.
    with pytest.raises(ValidationError, match="UnsupportedFloatLiteral"):
        v.literal(value)
    # A schema stored before the rule still reads back.
    again = validator_from_json({"type": "literal", "value": value})
    again.validate(value)


def test_record_json_is_convex_validator_json() -> None:
    # convex-js and the backend write a record's values as a field type
    # ({"fieldType": ..., "optional": false}), as an object's fields.
    record = v.record(v.string(), v.int64())
    assert record.to_json() == {
        "type": "record",
        "keys": {"type": "string"},
        "values": {"fieldType": {"type": "bigint"}, "optional": False},
    }
    assert validator_from_json(record.to_json()) == record
    # The form stored by earlier versions (values as a bare validator) still reads.
    old = {"type": "record", "keys": {"type": "string"}, "values": {"type": "bigint"}}
    assert validator_from_json(old) == record


def test_to_json_cannot_change_the_validator() -> None:
    # to_json() handed out the validator's own dicts (v.string()'s is shared by every
    # string validator): changing the result changed what every later schema stored.
    obj = v.object({"a": v.string(), "b": v.array(v.int64())})
    json = obj.to_json()
    json["value"]["a"]["fieldType"]["type"] = "number"
    json["value"]["b"]["fieldType"]["value"]["type"] = "string"
    v.string().to_json()["type"] = "bytes"
    assert v.string().to_json() == {"type": "string"}
    assert obj.to_json()["value"]["a"]["fieldType"] == {"type": "string"}
    assert obj.to_json()["value"]["b"]["fieldType"] == {
        "type": "array",
        "value": {"type": "bigint"},
    }
    assert validator_from_json(obj.to_json()) == obj


def test_literal_of_a_string_no_value_can_hold_is_refused() -> None:
    # A lone surrogate is no Convex string: v.literal("\ud800") was accepted, matched
    # nothing, and an Engine.open with it in a schema raised a raw UnicodeEncodeError
    # (storing the schema).
    with pytest.raises(ValidationError, match="lone surrogate"):
        v.literal("\ud800")
    assert repr(v.literal("é\u2028")) == 'v.literal("é\u2028")'


def test_an_id_of_another_system_table_is_reported_as_convex_does() -> None:
    # Convex reports any id of a system table that is not the validator's table as
    # "from a system table" (ValidationError::SystemTableReference), also when the
    # validator names a system table itself; this said "from table `_scheduled_functions`".
    job = encode_id(2, bytes(16))
    names = {1: "_storage", 2: "_scheduled_functions"}.get
    error = fails(v.id("_storage"), job, resolver=names)
    assert str(error) == (
        f'Found ID "{job}" from a system table, which does not match the table name in '
        'validator `v.id("_storage")`.'
    )
    v.id("_storage").validate(encode_id(1, bytes(16)), resolver=names)


def test_the_int_hint_is_only_given_for_a_float_an_int64_can_hold() -> None:
    # v.int64() given 1e308 suggested "pass an int, 1000000000000000010979...", a
    # 309-digit int that is itself refused (outside Int64); 2.0 still gets the hint.
    message = str(fails(v.int64(), 1e308))
    assert "pass an int" not in message and len(message) < 200
    assert "pass an int, 2, or declare v.float64()" in str(fails(v.int64(), 2.0))
    assert "pass an int" not in str(fails(v.int64(), 2.0**63))
    assert "pass an int, -9223372036854775808," in str(fails(v.int64(), -(2.0**63)))
