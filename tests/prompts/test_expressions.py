"""Prompt expressions: parsing, canonical form, errors, fuzzy evaluation and refinement phrases.

Pure Python and numpy: no model is needed. Morphology is checked against scipy.ndimage run
here with an explicitly built disk.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fastclipseg.prompts.expressions import (
    MAX_RADIUS,
    REFINEMENT_OPENINGS,
    And,
    ExpressionError,
    Group,
    Modifiers,
    Not,
    Or,
    Term,
    combine,
    evaluate,
    parse,
    refinement,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

A, B, C, D = Term("a"), Term("b"), Term("c"), Term("d")


def disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def random_maps(names, shape=(23, 31), seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    maps = {}
    for name in names:
        m = rng.random(shape, dtype=np.float32)
        m[rng.random(shape) < 0.05] = 0.0  # exact extremes too
        m[rng.random(shape) < 0.05] = 1.0
        maps[name] = m
    return maps


# ------------------------------------------------------------------------------------------
# Parsing

VALID = [
    ("a dog", Term("a dog")),
    ("  a \t  dog  ", Term("a dog")),
    ("salt and pepper", Term("salt and pepper")),
    ("And or not", Term("And or not")),
    ("ANDROID NOTEBOOK ORCHID", Term("ANDROID NOTEBOOK ORCHID")),
    ("a AND b", And(A, B)),
    ("a OR b", Or(A, B)),
    ("NOT a", Not(A)),
    ("NOT NOT a", Not(Not(A))),
    ("a AND b OR c", Or(And(A, B), C)),
    ("a OR b AND c", Or(A, And(B, C))),
    ("NOT a AND b", And(Not(A), B)),
    ("a OR NOT b AND c", Or(A, And(Not(B), C))),
    ("a AND b AND c", And(And(A, B), C)),
    ("a OR b OR c", Or(Or(A, B), C)),
    ("a AND (b AND c)", And(A, And(B, C))),
    ("(a OR b) AND c", And(Or(A, B), C)),
    ("NOT (a OR b)", Not(Or(A, B))),
    ("((a))", A),
    ("NOT(a)AND(b)", And(Not(A), B)),
    ("a AND b OR c AND d", Or(And(A, B), And(C, D))),
    ("(a OR (b AND (c OR d)))", Or(A, And(B, Or(C, D)))),
    ('"salt AND pepper"', Term("salt AND pepper")),
    ('"(left) side" OR a', Or(Term("(left) side"), A)),
    ('the "NOT" gate', Term("the NOT gate")),
    ('"  spaced   out  "', Term("spaced out")),
    ("一只猫 AND NOT 狗", And(Term("一只猫"), Not(Term("狗")))),
    ("一只猫\u3000AND\u3000狗", And(Term("一只猫"), Term("狗"))),
    ("café\nOR\tnaïve", Or(Term("café"), Term("naïve"))),
    ("a cat {+5}", Term("a cat", Modifiers(radius=5))),
    ("a cat{-3}", Term("a cat", Modifiers(radius=-3))),
    ("a cat {t=0.3}", Term("a cat", Modifiers(threshold=0.3))),
    ("a cat { t = .5 }", Term("a cat", Modifiers(threshold=0.5))),
    ("a cat {T=1}", Term("a cat", Modifiers(threshold=1.0))),
    ("a cat {t=0}", Term("a cat", Modifiers(threshold=0.0))),
    ("a cat {+5, t=0.3}", Term("a cat", Modifiers(5, 0.3))),
    ("a cat {t=0.3,+5}", Term("a cat", Modifiers(5, 0.3))),
    ("a cat {+0}", Term("a cat")),
    (f"a cat {{-{MAX_RADIUS}}}", Term("a cat", Modifiers(radius=-MAX_RADIUS))),
    ("(a OR b) {+2}", Group(Or(A, B), Modifiers(2))),
    ("(a) {t=0.5}", Group(A, Modifiers(threshold=0.5))),
    ("((a){+1}){-2}", Group(Group(A, Modifiers(1)), Modifiers(-2))),
    ("(a OR b) {+0}", Or(A, B)),
    ("NOT a collar {+5}", Not(Term("a collar", Modifiers(5)))),
    (
        "(a dog OR a cat) AND NOT a collar {+5}",
        And(Or(Term("a dog"), Term("a cat")), Not(Term("a collar", Modifiers(5)))),
    ),
]


@pytest.mark.parametrize(("text", "tree"), VALID, ids=[text for text, _ in VALID])
def test_parse_valid(text, tree):
    assert parse(text) == tree


@pytest.mark.parametrize("text", [text for text, _ in VALID])
def test_canonical_round_trip(text):
    expr = parse(text)
    assert parse(str(expr)) == expr
    assert str(parse(str(expr))) == str(expr)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("  a   dog AND(b)", "a dog AND b"),
        ("(a OR b) AND c", "(a OR b) AND c"),
        ("a OR (b AND c)", "a OR b AND c"),
        ("a AND (b AND c)", "a AND (b AND c)"),
        ("(a AND b) AND c", "a AND b AND c"),
        ("a OR (b OR c)", "a OR (b OR c)"),
        ("NOT (a AND b)", "NOT (a AND b)"),
        ("NOT (a)", "NOT a"),
        ('"salt AND pepper" OR "plain words"', '"salt AND pepper" OR plain words'),
        ('"a (b)"', '"a (b)"'),
        ("a {t=0.30, +5}", "a {+5, t=0.3}"),
        ("a {-3}", "a {-3}"),
        ("(a OR b){ +2 }", "(a OR b) {+2}"),
    ],
)
def test_canonical_form(text, canonical):
    assert str(parse(text)) == canonical


def test_terms_distinct_in_first_appearance_order():
    expr = parse("b AND a {+1} OR NOT (c OR b {t=0.2}) AND a")
    assert expr.terms() == ["b", "a", "c"]
    assert parse('"x AND y"').terms() == ["x AND y"]


def test_is_plain():
    assert parse("a dog").is_plain
    assert parse("((a dog))").is_plain
    assert parse("a dog {+0}").is_plain
    assert not parse("a dog {+1}").is_plain
    assert not parse("a dog {t=0.5}").is_plain
    assert not parse("NOT a dog").is_plain
    assert not parse("a AND b").is_plain
    assert not parse("(a dog) {+1}").is_plain


def test_tree_is_immutable_and_hashable():
    expr = parse("a AND b {+1}")
    with pytest.raises(dataclasses.FrozenInstanceError):
        expr.left = B
    assert hash(expr) == hash(parse("a AND b {+1}"))
    assert len({parse("a AND b"), parse("(a) AND (b)")}) == 1


def test_node_construction_is_validated():
    assert Term("  a   dog ").text == "a dog"
    with pytest.raises(ValueError, match="empty prompt"):
        Term("   ")
    with pytest.raises(ValueError, match="double quote"):
        Term('a "dog"')
    with pytest.raises(TypeError, match="string"):
        Term(3)
    with pytest.raises(TypeError, match="Modifiers"):
        Term("a", {"radius": 1})
    with pytest.raises(TypeError, match="Expression"):
        And("a", B)
    with pytest.raises(TypeError, match="Expression"):
        Not(None)
    with pytest.raises(ValueError, match="needs modifiers"):
        Group(A, Modifiers())
    with pytest.raises(TypeError, match="whole number"):
        Modifiers(radius=1.5)
    with pytest.raises(TypeError, match="whole number"):
        Modifiers(radius=True)
    with pytest.raises(ValueError, match="too large"):
        Modifiers(radius=MAX_RADIUS + 1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        Modifiers(threshold=1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        Modifiers(threshold=float("nan"))
    with pytest.raises(TypeError):
        parse(b"a dog")


# ------------------------------------------------------------------------------------------
# Syntax errors

ERRORS = [
    ("a cat AND", 10, "expected a prompt, '(' or NOT"),
    ("a cat AND   ", 10, "expected a prompt, '(' or NOT"),
    ("(a cat", 7, "expected ')' to close the '(' at column 1"),
    ("a AND (b OR (c)", 16, "expected ')' to close the '(' at column 7"),
    ("a cat)", 6, "unmatched ')'"),
    ("AND a cat", 1, "expected a prompt, '(' or NOT, got AND"),
    ("a AND OR b", 7, "expected a prompt, '(' or NOT, got OR"),
    ("NOT", 4, "expected a prompt, '(' or NOT"),
    ("()", 2, "empty parentheses"),
    ("(a) b", 5, "expected AND, OR, a modifier such as {+5} or the end of the expression"),
    ("(a {+1} b)", 9, "expected AND, OR or ')'"),
    ("a {+1} {+2}", 8, "only one set of braces"),
    ("{+1} a", 1, "expected a prompt, '(' or NOT"),
    ("a cat {+x}", 8, "dilation radius must be a whole number of pixels, got 'x'"),
    ("a cat {-1.5}", 8, "erosion radius must be a whole number of pixels"),
    ("a cat {+513}", 8, "too large: at most 512 pixels"),
    ("a cat {t=2}", 8, "threshold t must be between 0 and 1, got 2"),
    ("a cat {t=-0.1}", 8, "threshold t must be a number between 0 and 1"),
    ("a cat {t=abc}", 8, "threshold t must be a number between 0 and 1, got 'abc'"),
    ("a cat {+1, size=3}", 12, "unknown modifier 'size=3'"),
    ("a cat {5}", 8, "unknown modifier '5'"),
    ("a cat {}", 7, "empty modifier"),
    ("a cat {+1,}", 11, "empty modifier"),
    ("a cat {+1, -2}", 12, "given twice"),
    ("a cat {t=0.1, t=0.2}", 15, "given twice"),
    ("a cat {+1", 7, "unclosed '{'"),
    ("a cat }", 7, "unexpected '}'"),
    ('a "cat', 3, "unclosed quote"),
    ('"" AND a', 1, "empty prompt"),
    ('a AND "   "', 7, "empty prompt"),
    ("", 1, "empty expression"),
    ("   ", 1, "empty expression"),
    ("一只猫 AND", 8, "expected a prompt, '(' or NOT"),
]


@pytest.mark.parametrize(("text", "column", "fragment"), ERRORS, ids=[repr(t) for t, _, _ in ERRORS])
def test_syntax_errors_name_column_and_expectation(text, column, fragment):
    with pytest.raises(ExpressionError) as caught:
        parse(text)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.column == column
    message = str(error)
    assert fragment in message
    assert f"column {column}" in message


def test_error_message_shows_caret_under_column():
    with pytest.raises(ExpressionError) as caught:
        parse("a cat AND")
    lines = str(caught.value).splitlines()
    assert lines[1] == "  a cat AND"
    assert lines[2] == "  " + " " * 9 + "^"


def test_caret_under_column_with_tabs_newlines_and_wide_spaces():
    with pytest.raises(ExpressionError) as caught:
        parse("a\tAND\nb\u3000AND")
    lines = str(caught.value).splitlines()
    assert len(lines) == 3 and lines[1] == "  a AND b\u3000AND"
    assert lines[2].index("^") == 2 + len("a AND b") + 2 + 3


def test_caret_accounts_for_wide_characters():
    with pytest.raises(ExpressionError) as caught:
        parse("一只猫 AND")
    caret_line = str(caught.value).splitlines()[2]
    assert caret_line.index("^") == 2 + 2 * 3 + 1 + 3  # 3 wide chars, a space, 'AND'


def test_too_deep_nesting_is_a_clear_error():
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse("(" * 300 + "a" + ")" * 300)
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse("NOT " * 300 + "a")
    # A flat chain is not nesting (issue 14; tests/test_bad_input.py has the long-chain cases).
    assert parse(" AND ".join(["a"] * 300)).terms() == ["a"]
    assert parse("NOT " * 50 + "a").terms() == ["a"]


# ------------------------------------------------------------------------------------------
# Evaluation

ALGEBRA = [
    ("a", lambda a, b, c: a),
    ("a AND b", lambda a, b, c: np.minimum(a, b)),
    ("a OR b", lambda a, b, c: np.maximum(a, b)),
    ("NOT a", lambda a, b, c: 1 - a),
    ("NOT NOT a", lambda a, b, c: 1 - (1 - a)),
    ("a AND NOT b", lambda a, b, c: np.minimum(a, 1 - b)),
    ("a OR b AND c", lambda a, b, c: np.maximum(a, np.minimum(b, c))),
    ("(a OR b) AND c", lambda a, b, c: np.minimum(np.maximum(a, b), c)),
    ("NOT (a OR b) OR c", lambda a, b, c: np.maximum(1 - np.maximum(a, b), c)),
    ("a {t=0.5}", lambda a, b, c: (a > 0.5).astype(np.float32)),
    ("a {t=0.5} OR b", lambda a, b, c: np.maximum((a > 0.5).astype(np.float32), b)),
    ("(a AND b) {t=0.25}", lambda a, b, c: (np.minimum(a, b) > 0.25).astype(np.float32)),
    ("a {t=0}", lambda a, b, c: (a > 0).astype(np.float32)),
    ("a {t=1}", lambda a, b, c: np.zeros_like(a)),
]


@pytest.mark.parametrize(("text", "formula"), ALGEBRA, ids=[text for text, _ in ALGEBRA])
def test_evaluate_matches_hand_algebra(text, formula):
    maps = random_maps("abc")
    result = evaluate(parse(text), maps)
    assert result.dtype == np.float32
    assert result.shape == maps["a"].shape
    np.testing.assert_array_equal(result, formula(maps["a"], maps["b"], maps["c"]).astype(np.float32))


@pytest.mark.parametrize("radius", [1, 2, 3, 5, 8, 17, 40])
@pytest.mark.parametrize("shape", [(23, 31), (7, 50), (1, 9), (9, 1)])
def test_dilation_and_erosion_match_scipy_disk(radius, shape):
    p = random_maps("a", shape=shape, seed=radius)["a"]
    footprint = disk(radius)
    np.testing.assert_array_equal(
        evaluate(f"a {{+{radius}}}", {"a": p}), ndimage.grey_dilation(p, footprint=footprint, mode="nearest")
    )
    np.testing.assert_array_equal(
        evaluate(f"a {{-{radius}}}", {"a": p}), ndimage.grey_erosion(p, footprint=footprint, mode="nearest")
    )


@pytest.mark.parametrize("radius", [1, 2, 3, 6, 12])
def test_dilating_one_bright_pixel_gives_a_disk(radius):
    p = np.zeros((41, 41), np.float32)
    p[20, 20] = 0.75
    result = evaluate(f"a {{+{radius}}}", {"a": p})
    expected = np.zeros_like(p)
    expected[20 - radius : 21 + radius, 20 - radius : 21 + radius] = disk(radius) * np.float32(0.75)
    np.testing.assert_array_equal(result, expected)
    # In a corner, the part of the disk inside the image.
    corner = np.zeros((41, 41), np.float32)
    corner[0, 0] = 1.0
    grown = evaluate(f"a {{+{radius}}}", {"a": corner})
    np.testing.assert_array_equal(grown[: radius + 1, : radius + 1], disk(radius)[radius:, radius:])
    assert grown.sum() == disk(radius)[radius:, radius:].sum()


def test_image_edge_is_neutral_and_largest_radius_works():
    ones, zeros = np.ones((20, 30), np.float32), np.zeros((20, 30), np.float32)
    np.testing.assert_array_equal(evaluate(f"a {{-{MAX_RADIUS}}}", {"a": ones}), ones)
    np.testing.assert_array_equal(evaluate(f"a {{+{MAX_RADIUS}}}", {"a": zeros}), zeros)
    p = random_maps("a", shape=(20, 30))["a"]
    np.testing.assert_array_equal(evaluate(f"a {{+{MAX_RADIUS}}}", {"a": p}), np.full_like(p, p.max()))


def test_threshold_is_applied_before_morphology_whatever_the_written_order():
    p = random_maps("a")["a"]
    expected = ndimage.grey_dilation((p > 0.6).astype(np.float32), footprint=disk(2), mode="nearest")
    for text in ("a {+2, t=0.6}", "a {t=0.6, +2}"):
        np.testing.assert_array_equal(evaluate(text, {"a": p}), expected)


def test_group_and_term_modifiers():
    maps = random_maps("ab")
    a, b = maps["a"], maps["b"]
    grown = ndimage.grey_dilation(np.maximum(a, b), footprint=disk(3), mode="nearest")
    np.testing.assert_array_equal(evaluate("(a OR b) {+3}", maps), grown)
    shrunk_b = ndimage.grey_erosion(b, footprint=disk(2), mode="nearest")
    np.testing.assert_array_equal(evaluate("a AND NOT b {-2}", maps), np.minimum(a, 1 - shrunk_b))


def test_same_term_with_different_modifiers_uses_one_map():
    p = random_maps("a")["a"]
    expr = parse("a {t=0.5} OR a {-1}")
    assert expr.terms() == ["a"]
    expected = np.maximum((p > 0.5).astype(np.float32), ndimage.grey_erosion(p, footprint=disk(1), mode="nearest"))
    np.testing.assert_array_equal(evaluate(expr, {"a": p}), expected)


def test_evaluate_leaves_inputs_alone_and_returns_a_new_array():
    maps = random_maps("ab")
    before = {k: v.copy() for k, v in maps.items()}
    result = evaluate("a", maps)
    assert result is not maps["a"] and not np.shares_memory(result, maps["a"])
    evaluate("NOT a {+2} AND b {t=0.5}", maps)
    for key in maps:
        np.testing.assert_array_equal(maps[key], before[key])


def test_evaluate_accepts_float64_and_extra_entries():
    maps = {k: v.astype(np.float64) for k, v in random_maps("ab").items()}
    maps["unused"] = np.zeros((2, 2))
    result = evaluate("a OR b", maps)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, np.maximum(maps["a"], maps["b"]).astype(np.float32))


def test_evaluate_validates_inputs():
    maps = random_maps("ab")
    with pytest.raises(ValueError, match="lack a map for 'c'"):
        evaluate("a AND c", maps)
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate("a AND b", {"a": maps["a"], "b": maps["b"][:5]})
    with pytest.raises(ValueError, match="2-D"):
        evaluate("a", {"a": maps["a"][None]})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate("a", {"a": maps["a"] * 2})
    with pytest.raises(ValueError, match="NaN"):
        evaluate("a", {"a": np.full((3, 3), np.nan, np.float32)})
    with pytest.raises(TypeError, match="mapping"):
        evaluate("a", [maps["a"]])
    with pytest.raises(TypeError, match="Expression"):
        evaluate(42, maps)
    with pytest.raises(ExpressionError):
        evaluate("a AND", maps)


# ------------------------------------------------------------------------------------------
# Refinement phrases and combine()

EXPECTED_OPENINGS = {
    "and_not": ["exclude", "without", "except", "but not", "minus", "not"],
    "and": ["only", "focus on", "within", "just"],
    "or": ["and", "plus", "also", "add", "include"],
}


def test_opening_table_is_complete():
    assert REFINEMENT_OPENINGS == {
        opening: operation for operation, openings in EXPECTED_OPENINGS.items() for opening in openings
    }


@pytest.mark.parametrize(
    ("opening", "operation"),
    [(opening, operation) for operation, openings in EXPECTED_OPENINGS.items() for opening in openings],
)
@pytest.mark.parametrize("case", [str.lower, str.upper, str.title])
def test_refinement_openings(opening, operation, case):
    assert refinement(f"{case(opening)} the red  car ") == (operation, "the red car")
    assert refinement(f"  {case(opening)}   a dog") == (operation, "a dog")


def test_refinement_details():
    assert refinement("BUT   NOT the leash") == ("and_not", "the leash")
    assert refinement("Focus\ton the face") == ("and", "the face")
    assert refinement("not notebooks") == ("and_not", "notebooks")
    assert refinement("and salt and pepper") == ("or", "salt and pepper")
    assert refinement("exclude 一只猫") == ("and_not", "一只猫")


@pytest.mark.parametrize("text", ["remove the dog", "notebook on the desk", "andes", "onlyone", "the dog", "", "  "])
def test_refinement_rejects_unknown_openings(text):
    with pytest.raises(ExpressionError) as caught:
        refinement(text)
    message = str(caught.value)
    for opening in REFINEMENT_OPENINGS:
        assert f"'{opening}'" in message


@pytest.mark.parametrize("text", ["exclude", "only   ", "but not", "Focus on "])
def test_refinement_needs_a_prompt(text):
    with pytest.raises(ExpressionError, match="empty prompt"):
        refinement(text)


def test_refinement_type_error():
    with pytest.raises(TypeError):
        refinement(None)


def test_combine_matches_formulas():
    maps = random_maps(["prev", "new"])
    prev, new = maps["prev"], maps["new"]
    np.testing.assert_array_equal(combine("and_not", prev, new), np.minimum(prev, 1 - new))
    np.testing.assert_array_equal(combine("and", prev, new), np.minimum(prev, new))
    np.testing.assert_array_equal(combine("or", prev, new), np.maximum(prev, new))
    for operation in ("and_not", "and", "or"):
        assert combine(operation, prev, new).dtype == np.float32
    operation, _ = refinement("without the collar")
    np.testing.assert_array_equal(combine(operation, prev, new), evaluate("prev AND NOT new", maps))


def test_combine_validates():
    prev = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match="operation must be one of"):
        combine("xor", prev, prev)
    with pytest.raises(ValueError, match="differ in shape"):
        combine("or", prev, np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        combine("or", prev, prev - 1)


# ------------------------------------------------------------------------------------------
# Properties

TERM_TEXTS = ["a dog", "a cat", "salt and pepper", "salt AND pepper", "(left) side", "一只猫", "ANDROID"]
modifiers = st.builds(
    Modifiers,
    radius=st.integers(-3, 3),
    threshold=st.none() | st.floats(0.0, 1.0),
)
leaves = st.builds(Term, st.sampled_from(TERM_TEXTS), modifiers)
expressions = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.builds(Not, children),
        st.builds(And, children, children),
        st.builds(Or, children, children),
        st.builds(Group, children, modifiers.filter(bool)),
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(expr=expressions, seed=st.integers(0, 2**32 - 1))
def test_evaluate_stays_in_unit_interval(expr, seed):
    result = evaluate(expr, random_maps(TERM_TEXTS, shape=(9, 11), seed=seed))
    assert result.dtype == np.float32 and result.shape == (9, 11)
    assert result.min() >= 0.0 and result.max() <= 1.0


@settings(max_examples=300, deadline=None)
@given(expr=expressions)
def test_canonical_form_round_trips(expr):
    assert parse(str(expr)) == expr
