"""Prompt expressions: combine several text prompts into one mask with fuzzy logic.

CLIPSeg answers one prompt at a time with a per-pixel probability map. An expression such as
``(a dog OR a cat) AND NOT a collar {+5}`` names several prompts; the caller runs the model on
each distinct prompt (:meth:`Expression.terms`) and :func:`evaluate` combines the maps pixel by
pixel, so confidence survives the combination instead of being thresholded away early.

Language
--------
* Operators are UPPER CASE keywords, so ordinary lower-case words stay plain text
  ("salt and pepper" is one prompt). Precedence NOT > AND > OR; AND and OR are left-associative;
  parentheses group.

  ============  =============  ======================
  operator      meaning        per pixel
  ============  =============  ======================
  ``A AND B``   both           ``min(a, b)``
  ``A OR B``    either         ``max(a, b)``
  ``NOT A``     not            ``1 - a``
  ============  =============  ======================

* Parentheses and NOT nest at most ``MAX_DEPTH`` (200) levels deep; a chain of AND / OR
  (``a OR b OR c ...``) is not nesting and may be any length.
* A prompt (term) is free text: any words other than the keywords, without parentheses, braces
  or double quotes. Whitespace around it is stripped and inside it collapsed to single spaces.
  Double quotes make keywords and parentheses literal: ``"salt AND pepper"`` is one prompt
  (a term may mix quoted and unquoted parts; a quote cannot contain a double quote).
* Modifiers in braces follow a term or a parenthesised group:

  ===================  ========================================================
  ``{+5}``             dilate by 5 pixels (grey-scale, disk of radius 5)
  ``{-3}``             erode by 3 pixels (grey-scale, disk of radius 3)
  ``{t=0.3}``          threshold: the map becomes hard 0/1, ``p > 0.3``
  ``{+5, t=0.3}``      both: the threshold is always applied first, then the
                       dilation or erosion, in whichever order they are written
  ===================  ========================================================

  Radii are whole numbers of pixels of the probability map, at most 512; ``t`` lies in [0, 1].
  Each kind may appear once per braces. Modifiers on a term apply to that term's map before
  it is combined (``NOT a collar {+5}`` is "not within 5 pixels of a collar"); on a group,
  to the group's combined map. Pixels outside the image neither grow into nor eat into it.
  Morphology equals ``scipy.ndimage.grey_dilation`` / ``grey_erosion`` with a disk footprint
  and ``mode="nearest"``, computed by a faster decomposition (see ``_disk_morphology``).

Refinement phrases
------------------
Interactive sessions refine the previous mask with a short phrase; :func:`refinement` splits
it into an operation and a prompt, and :func:`combine` applies the operation:

==============================================  ===========  ============================
phrase starts with (any case)                   operation    result
==============================================  ===========  ============================
exclude, without, except, but not, minus, not   ``and_not``  ``min(previous, 1 - new)``
only, focus on, within, just                    ``and``      ``min(previous, new)``
and, plus, also, add, include                   ``or``       ``max(previous, new)``
==============================================  ===========  ============================

The opening must be a whole word ("notebook" is not "not"); the rest of the phrase,
whitespace-normalised and with any article kept, is the prompt.
e.g. ``refinement("without the leash") == ("and_not", "the leash")``.
"""

from __future__ import annotations

import abc
import functools
import itertools
import math
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import lark
import numpy as np

from ..ops.validation import check_threshold

__all__ = [
    "MAX_RADIUS",
    "And",
    "Expression",
    "ExpressionError",
    "Group",
    "Modifiers",
    "Not",
    "Or",
    "Term",
    "combine",
    "evaluate",
    "parse",
    "refinement",
]

#: Largest dilation or erosion radius, in pixels.
MAX_RADIUS = 512
#: Most levels of parentheses and NOT that parse() accepts (chains of AND / OR are not nesting).
MAX_DEPTH = 200
KEYWORDS = frozenset({"AND", "OR", "NOT"})
# Characters a bare (unquoted) term cannot contain; the grammar's WORD excludes the same set.
_SPECIAL = frozenset('(){}"')


class ExpressionError(ValueError):
    """A prompt expression or refinement phrase that cannot be understood.

    ``reason`` says what was wrong in plain words; ``column`` (1-based, or None) is where, and
    the message repeats the text with a caret under that column.
    """

    def __init__(self, reason: str, text: str | None = None, column: int | None = None) -> None:
        self.reason = reason
        self.text = text
        self.column = column
        message = reason
        if text is not None and column is not None:
            shown, at = _excerpt(text, column)
            message = f"{reason} (column {column})\n  {_display(shown)}\n  {_caret_padding(shown, at)}^"
        super().__init__(message)


#: Characters shown either side of the column when a long expression is quoted in an error.
_CONTEXT = 70


def _excerpt(text: str, column: int) -> tuple[str, int]:
    """The text around `column` (all of it when short; "..." marks what is left out), and the
    column within what is shown: an error in a 2000-term expression quotes one line, not all."""
    if len(text) <= 2 * _CONTEXT + 20:
        return text, column
    start = max(0, column - 1 - _CONTEXT)
    end = min(len(text), column - 1 + _CONTEXT)
    prefix, suffix = ("..." if start else ""), ("..." if end < len(text) else "")
    return prefix + text[start:end] + suffix, column - start + len(prefix)


def _display(text: str) -> str:
    """The text on one line: line breaks, tabs and other control characters shown as one space each."""
    return "".join(" " if unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp") else ch
                   for ch in text)


def _caret_padding(text: str, column: int) -> str:
    """Spaces reaching the given column, two per wide (East Asian) character so the caret lines up."""
    return "".join("  " if unicodedata.east_asian_width(ch) in ("W", "F") else " " for ch in text[: column - 1])


# --------------------------------------------------------------------------------------------
# The tree


@dataclass(frozen=True)
class Modifiers:
    """What to do to a map before it is combined: threshold first, then dilate or erode.

    ``radius`` > 0 dilates by that many pixels, < 0 erodes, 0 leaves the map alone;
    ``threshold`` (None for none) turns the map into hard 0/1 by ``p > threshold``.
    """

    radius: int = 0
    threshold: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.radius, bool) or not isinstance(self.radius, (int, np.integer)):
            raise TypeError(f"radius must be a whole number of pixels, got {self.radius!r}")
        if abs(self.radius) > MAX_RADIUS:
            raise ValueError(f"radius {self.radius} is too large: at most {MAX_RADIUS} pixels")
        object.__setattr__(self, "radius", int(self.radius))
        if self.threshold is not None:
            object.__setattr__(self, "threshold", check_threshold(self.threshold))

    def __bool__(self) -> bool:
        return self.radius != 0 or self.threshold is not None

    def __str__(self) -> str:
        """``{+5, t=0.3}``, or ``""`` for no modifiers."""
        parts = []
        if self.radius:
            parts.append(f"{self.radius:+d}")
        if self.threshold is not None:
            parts.append(f"t={self.threshold!r}")
        return "{" + ", ".join(parts) + "}" if parts else ""

    def apply(self, probability: np.ndarray) -> np.ndarray:
        """The map thresholded (if asked) and then dilated or eroded (if asked)."""
        if self.threshold is not None:
            probability = (probability > self.threshold).astype(np.float32)
        if self.radius:
            probability = _disk_morphology(probability, self.radius)
        return probability


NO_MODIFIERS = Modifiers()


class Expression(abc.ABC):
    """A parsed prompt expression: an immutable tree of Term, Not, And, Or and Group nodes.

    Nodes compare equal by structure, so ``parse(str(e)) == e``.

    A flat chain such as ``a OR b OR ... OR z`` is a left-deep tree as deep as it is long, so
    nothing that walks a tree recurses: printing, comparing, hashing, evaluating and listing the
    terms all use explicit stacks (and take time linear in the size of the tree).
    """

    __slots__ = ()

    def children(self) -> tuple[Expression, ...]:
        return ()

    def terms(self) -> list[str]:
        """The distinct prompt texts, in order of first appearance: what to run the model on."""
        found: dict[str, None] = {}
        stack: list[Expression] = [self]
        while stack:
            node = stack.pop()
            if isinstance(node, Term):
                found.setdefault(node.text)
            stack.extend(reversed(node.children()))
        return list(found)

    @property
    def is_plain(self) -> bool:
        """True when the expression is one prompt without modifiers (the ordinary path does)."""
        return False

    # -- each node's own part; the walks below do the rest ------------------------------------

    @abc.abstractmethod
    def _apply(self, operands: list[np.ndarray], maps: Mapping[str, np.ndarray]) -> np.ndarray:
        """This node's map from its children's maps (in order) and, for a term, `maps`."""

    @abc.abstractmethod
    def _text_parts(self) -> list[str | Expression]:
        """The canonical text as literal strings and child nodes, in order."""

    @abc.abstractmethod
    def _repr_parts(self) -> list[str | Expression]:
        """The repr as literal strings and child nodes, in order."""

    @abc.abstractmethod
    def _label(self) -> tuple:
        """This node alone (kind and own fields, no children): a step of `_postfix`."""

    # -- the walks --------------------------------------------------------------------------

    def _postorder(self) -> Iterator[Expression]:
        """Every node, children (left to right) before their parent."""
        stack: list[tuple[Expression, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            children = node.children()
            if expanded or not children:
                yield node
            else:
                stack.append((node, True))
                stack.extend((child, False) for child in reversed(children))

    def _postfix(self) -> Iterator[tuple]:
        """The tree as a flat sequence of node labels; with each kind's arity it fixes the tree."""
        return (node._label() for node in self._postorder())

    def _evaluate(self, maps: Mapping[str, np.ndarray]) -> np.ndarray:
        """This expression's probability map, from each term's map in `maps`."""
        values: list[np.ndarray] = []
        for node in self._postorder():
            count = len(node.children())
            operands = values[len(values) - count :] if count else []
            del values[len(values) - count :]
            values.append(node._apply(operands, maps))
        return values[0]

    def _render(self, parts: Callable[[Expression], list[str | Expression]]) -> str:
        pieces: list[str] = []
        stack: list[str | Expression] = [self]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                pieces.append(item)
            else:
                stack.extend(reversed(parts(item)))
        return "".join(pieces)

    def __str__(self) -> str:
        return self._render(lambda node: node._text_parts())

    def __repr__(self) -> str:
        return self._render(lambda node: node._repr_parts())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Expression):
            return NotImplemented
        missing = object()
        return all(a == b for a, b in itertools.zip_longest(self._postfix(), other._postfix(), fillvalue=missing))

    def __hash__(self) -> int:
        return hash(tuple(self._postfix()))

    def __reduce__(self):
        # pickle and copy.deepcopy would recurse through a long chain; the flat postfix does not.
        return (_from_postfix, (tuple(self._postfix()),))


def _from_postfix(labels: tuple) -> Expression:
    """The tree `Expression._postfix` flattened (used to unpickle)."""
    values: list[Expression] = []
    for label in labels:
        kind = label[0]
        if kind == "Term":
            values.append(Term(label[1], Modifiers(label[2], label[3])))
        elif kind == "Group":
            values.append(Group(values.pop(), Modifiers(label[1], label[2])))
        elif kind == "Not":
            values.append(Not(values.pop()))
        else:
            right = values.pop()
            values.append((And if kind == "And" else Or)(values.pop(), right))
    if len(values) != 1:
        raise ValueError(f"not a flattened expression: {len(values)} trees")
    return values[0]


def _check_node(value: object, name: str) -> None:
    if not isinstance(value, Expression):
        raise TypeError(f"{name} must be an Expression node, got {type(value).__name__}")


def _check_modifiers(value: object) -> None:
    if not isinstance(value, Modifiers):
        raise TypeError(f"modifiers must be a Modifiers, got {type(value).__name__}")


# The nodes' eq, hash and repr come from Expression (no recursion): eq=False, repr=False.


@dataclass(frozen=True, eq=False, repr=False)
class Term(Expression):
    """One prompt, with optional modifiers. The text is whitespace-normalised on construction."""

    text: str
    modifiers: Modifiers = field(default=NO_MODIFIERS)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"term text must be a string, got {type(self.text).__name__}")
        text = " ".join(self.text.split())
        if not text:
            raise ValueError("empty prompt: a term needs some text")
        if '"' in text:
            raise ValueError(f"a prompt cannot contain a double quote: {text!r}")
        object.__setattr__(self, "text", text)
        _check_modifiers(self.modifiers)

    @property
    def is_plain(self) -> bool:
        return not self.modifiers

    def _text_parts(self) -> list[str | Expression]:
        words = self.text.split(" ")
        needs_quotes = any(word in KEYWORDS or _SPECIAL.intersection(word) for word in words)
        text = f'"{self.text}"' if needs_quotes else self.text
        return [f"{text} {self.modifiers}" if self.modifiers else text]

    def _repr_parts(self) -> list[str | Expression]:
        return [f"Term(text={self.text!r}, modifiers={self.modifiers!r})"]

    def _label(self) -> tuple:
        return ("Term", self.text, self.modifiers.radius, self.modifiers.threshold)

    def _apply(self, operands: list[np.ndarray], maps: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.modifiers.apply(maps[self.text])


@dataclass(frozen=True, eq=False, repr=False)
class Not(Expression):
    """``NOT operand``: 1 - p."""

    operand: Expression

    def __post_init__(self) -> None:
        _check_node(self.operand, "operand")

    def children(self) -> tuple[Expression, ...]:
        return (self.operand,)

    def _text_parts(self) -> list[str | Expression]:
        return ["NOT ", *_wrap(self.operand, (And, Or))]

    def _repr_parts(self) -> list[str | Expression]:
        return ["Not(operand=", self.operand, ")"]

    def _label(self) -> tuple:
        return ("Not",)

    def _apply(self, operands: list[np.ndarray], maps: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.float32(1.0) - operands[0]


@dataclass(frozen=True, eq=False, repr=False)
class _Binary(Expression):
    """An operator with a left and a right operand."""

    left: Expression
    right: Expression

    def __post_init__(self) -> None:
        _check_node(self.left, "left")
        _check_node(self.right, "right")

    def children(self) -> tuple[Expression, ...]:
        return (self.left, self.right)

    def _repr_parts(self) -> list[str | Expression]:
        return [f"{type(self).__name__}(left=", self.left, ", right=", self.right, ")"]

    def _label(self) -> tuple:
        return (type(self).__name__,)


@dataclass(frozen=True, eq=False, repr=False)
class And(_Binary):
    """``left AND right``: pixel-wise minimum."""

    def _text_parts(self) -> list[str | Expression]:
        # Left-associative: a right operand that is itself an AND keeps its parentheses.
        return [*_wrap(self.left, (Or,)), " AND ", *_wrap(self.right, (And, Or))]

    def _apply(self, operands: list[np.ndarray], maps: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.minimum(operands[0], operands[1])


@dataclass(frozen=True, eq=False, repr=False)
class Or(_Binary):
    """``left OR right``: pixel-wise maximum."""

    def _text_parts(self) -> list[str | Expression]:
        return [self.left, " OR ", *_wrap(self.right, (Or,))]

    def _apply(self, operands: list[np.ndarray], maps: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.maximum(operands[0], operands[1])


@dataclass(frozen=True, eq=False, repr=False)
class Group(Expression):
    """``(operand) {modifiers}``: modifiers applied to a combined map.

    Parentheses without modifiers only group, so they leave no node; a Group always has
    modifiers (which keeps the tree, and so equality, canonical).
    """

    operand: Expression
    modifiers: Modifiers

    def __post_init__(self) -> None:
        _check_node(self.operand, "operand")
        _check_modifiers(self.modifiers)
        if not self.modifiers:
            raise ValueError("a Group needs modifiers; without them use the operand itself")

    def children(self) -> tuple[Expression, ...]:
        return (self.operand,)

    def _text_parts(self) -> list[str | Expression]:
        return ["(", self.operand, f") {self.modifiers}"]

    def _repr_parts(self) -> list[str | Expression]:
        return ["Group(operand=", self.operand, f", modifiers={self.modifiers!r})"]

    def _label(self) -> tuple:
        return ("Group", self.modifiers.radius, self.modifiers.threshold)

    def _apply(self, operands: list[np.ndarray], maps: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.modifiers.apply(operands[0])


def _wrap(node: Expression, kinds: tuple[type, ...]) -> list[str | Expression]:
    """The node, in parentheses when it is one of `kinds` (binds more loosely)."""
    return ["(", node, ")"] if isinstance(node, kinds) else [node]


# --------------------------------------------------------------------------------------------
# Parsing

_GRAMMAR = r"""
    ?start: or_expr
    ?or_expr: and_expr
        | or_expr _OR and_expr -> or_
    ?and_expr: not_expr
        | and_expr _AND not_expr -> and_
    ?not_expr: atom
        | _NOT not_expr -> not_
    ?atom: term
        | _LPAR or_expr _RPAR [MODS] -> group
    term: (WORD | STRING)+ [MODS]

    _AND: "AND"
    _OR: "OR"
    _NOT: "NOT"
    _LPAR: "("
    _RPAR: ")"
    WORD: /[^\s(){}"]+/
    STRING: /"[^"]*"/
    MODS: /\{[^}]*\}/
    WS: /\s+/
    %ignore WS
"""


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    """The LALR parser, built once.

    The basic (not contextual) lexer, so keywords are recognised in every parser state: lark
    re-types a WORD that is exactly AND, OR or NOT as that keyword.
    """
    # Positions on tree nodes: a nesting error points at its '(' or NOT.
    return lark.Lark(_GRAMMAR, parser="lalr", lexer="basic", maybe_placeholders=True, propagate_positions=True)


_OPERAND_TERMINALS = {"WORD", "STRING", "_LPAR", "_NOT"}
_EXPECT_OPERAND = "a prompt, '(' or NOT"


def parse(text: str) -> Expression:
    """Parse a prompt expression; a mistake raises ExpressionError naming the column."""
    if not isinstance(text, str):
        raise TypeError(f"expression must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ExpressionError(f"empty expression: expected {_EXPECT_OPERAND}", text, 1)
    try:
        tree = _parser().parse(text)
    except lark.UnexpectedToken as error:
        raise _token_error(text, error) from None
    except lark.UnexpectedCharacters as error:
        raise _character_error(text, error.pos_in_stream or 0) from None
    _check_depth(tree, text)
    return _build(tree, text)


def _describe_token(token: lark.Token) -> str:
    kind = token.type
    if kind == "$END":
        return "the end of the expression"
    if kind == "MODS":
        return f"the modifier {token.value}"
    if kind == "WORD":
        return f"the prompt word {token.value!r}"
    if kind == "STRING":
        return f"the quoted prompt {token.value}"
    return {"_AND": "AND", "_OR": "OR", "_NOT": "NOT", "_LPAR": "'('", "_RPAR": "')'"}.get(kind, repr(token.value))


def _token_error(text: str, error: lark.UnexpectedToken) -> ExpressionError:
    """Turn lark's UnexpectedToken into plain words: what was expected, what came instead.

    LALR merges look-ahead sets, so ')' versus the end is decided from the text itself: ')'
    only where a '(' is still open.
    """
    token, expected = error.token, set(error.expected)
    at_end = token.type == "$END"
    position = len(text.rstrip()) if at_end else token.start_pos or 0
    column = position + 1
    got = _describe_token(token)
    if expected & _OPERAND_TERMINALS and not expected & {"_AND", "_OR"}:
        empty_parens = token.type == "_RPAR" and text[:position].rstrip().endswith("(")
        prefix = "empty parentheses: " if empty_parens else ""
        return ExpressionError(f"{prefix}expected {_EXPECT_OPERAND}, got {got}", text, column)
    opened = _unclosed_paren(text[:position])
    if at_end and opened:
        return ExpressionError(f"expected ')' to close the '(' at column {opened}", text, column)
    options = ["AND", "OR"]
    if "MODS" in expected:
        options.append("a modifier such as {+5}")
    options.append("')'" if opened else "the end of the expression")
    wanted = ", ".join(options[:-1]) + " or " + options[-1]
    if token.type == "_RPAR":
        return ExpressionError(f"unmatched ')': expected {wanted}", text, column)
    if token.type == "MODS":
        return ExpressionError(f"expected {wanted}, got {got} (only one set of braces per prompt)", text, column)
    return ExpressionError(f"expected {wanted}, got {got}", text, column)


def _unclosed_paren(text: str) -> int | None:
    """The 1-based column of the last '(' left open (quoted text skipped), or None."""
    open_at: list[int] = []
    in_quotes = False
    for index, ch in enumerate(text):
        if ch == '"':
            in_quotes = not in_quotes
        elif not in_quotes and ch == "(":
            open_at.append(index + 1)
        elif not in_quotes and ch == ")" and open_at:
            open_at.pop()
    return open_at[-1] if open_at else None


def _character_error(text: str, position: int) -> ExpressionError:
    """The lexer only stops at an unclosed '{' or '"', or a stray '}'."""
    ch = text[position]
    if ch == "{":
        reason = "unclosed '{': expected '}' after the modifiers"
    elif ch == '"':
        reason = "unclosed quote: expected a closing '\"'"
    elif ch == "}":
        reason = "unexpected '}' without a matching '{'"
    else:  # not reachable with this grammar, kept so any other character still gets a clear error
        reason = f"unexpected character {ch!r}"
    return ExpressionError(reason, text, position + 1)


_NESTING = frozenset({"group", "not_"})


def _check_depth(tree: lark.Tree, text: str) -> None:
    """Refuse more than MAX_DEPTH levels of real nesting: parentheses and NOT.

    A chain of AND / OR (``a OR b OR c ...``) is not nesting, however long: it is a deep tree,
    but every walk over the tree is iterative, so only parentheses and NOT count. The error
    points at the '(' or NOT that opens one level too many.
    """
    stack: list[tuple[lark.Tree, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in _NESTING:
            depth += 1
            if depth > MAX_DEPTH:
                raise ExpressionError(
                    f"expression is nested too deeply: more than {MAX_DEPTH} levels of parentheses and NOT",
                    text, node.meta.start_pos + 1,
                )
        # Reversed, so the leftmost offending '(' or NOT is found first.
        stack.extend((child, depth) for child in reversed(node.children) if isinstance(child, lark.Tree))


def _build(tree: lark.Tree, text: str) -> Expression:
    """The lark parse tree as Expression nodes (children before parents, with a stack: a long
    chain is as deep as it is long)."""
    values: list[Expression] = []
    stack: list[tuple[lark.Tree, bool]] = [(tree, False)]
    while stack:
        node, expanded = stack.pop()
        kind, children = node.data, list[Any](node.children)
        if kind == "term":
            values.append(_build_term(children, text))
            continue
        subtrees = [child for child in children if isinstance(child, lark.Tree)]
        if not expanded:
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(subtrees))
            continue
        operands = values[len(values) - len(subtrees) :]
        del values[len(values) - len(subtrees) :]
        if kind == "or_":
            values.append(Or(*operands))
        elif kind == "and_":
            values.append(And(*operands))
        elif kind == "not_":
            values.append(Not(operands[0]))
        elif kind == "group":
            modifiers = _parse_modifiers(children[1], text)
            values.append(Group(operands[0], modifiers) if modifiers else operands[0])
        else:
            raise AssertionError(f"unexpected parse node {kind!r}")  # the grammar makes no other
    return values[0]


def _build_term(children: list[Any], text: str) -> Term:
    *parts, mods = children
    words = []
    for part in parts:
        if part.type == "STRING":
            inner = part.value[1:-1].strip()
            if not inner:
                raise ExpressionError("empty prompt: the quotes contain no text", text, (part.start_pos or 0) + 1)
            words.append(inner)
        else:
            words.append(part.value)
    return Term(" ".join(words), _parse_modifiers(mods, text))


_RADIUS = re.compile(r"([+-])\s*(.*)", re.DOTALL)
_THRESHOLD = re.compile(r"[tT]\s*=\s*(.*)", re.DOTALL)
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_MODIFIER_HELP = "+N (dilate N pixels), -N (erode N pixels) or t=X (threshold, 0 <= X <= 1)"


def _parse_modifiers(token: lark.Token | None, text: str) -> Modifiers:
    """The ``{...}`` token (or None) as Modifiers, with errors pointing inside the braces."""
    if token is None:
        return NO_MODIFIERS
    brace = token.start_pos or 0
    body_start = brace + 1
    body = token.value[1:-1]
    if not body.strip():
        raise ExpressionError(f"empty modifier: expected {_MODIFIER_HELP}", text, brace + 1)
    radius: int | None = None
    threshold: float | None = None
    offset = 0
    for item in body.split(","):
        stripped = item.strip()
        column = body_start + offset + (len(item) - len(item.lstrip())) + 1
        offset += len(item) + 1
        if not stripped:
            raise ExpressionError(f"empty modifier: expected {_MODIFIER_HELP}", text, column)
        if match := _RADIUS.fullmatch(stripped):
            sign, value = match.groups()
            if not value.isascii() or not value.isdigit():
                raise ExpressionError(
                    f"{'dilation' if sign == '+' else 'erosion'} radius must be a whole number of pixels, "
                    f"got {value!r}",
                    text,
                    column,
                )
            if int(value) > MAX_RADIUS:
                raise ExpressionError(
                    f"radius {value} is too large: at most {MAX_RADIUS} pixels", text, column
                )
            if radius is not None:
                raise ExpressionError("dilation/erosion given twice in one set of braces", text, column)
            radius = int(value) if sign == "+" else -int(value)
        elif match := _THRESHOLD.fullmatch(stripped):
            value = match.group(1).strip()
            if not _NUMBER.fullmatch(value):
                raise ExpressionError(f"threshold t must be a number between 0 and 1, got {value!r}", text, column)
            number = float(value)
            if not 0.0 <= number <= 1.0:
                raise ExpressionError(f"threshold t must be between 0 and 1, got {value}", text, column)
            if threshold is not None:
                raise ExpressionError("threshold t given twice in one set of braces", text, column)
            threshold = number
        else:
            raise ExpressionError(f"unknown modifier {stripped!r}: expected {_MODIFIER_HELP}", text, column)
    return Modifiers(radius or 0, threshold)


# --------------------------------------------------------------------------------------------
# Evaluation


def _as_map(value: object, name: str) -> np.ndarray:
    """A 2-D float32 array of probabilities in [0, 1], or a clear error."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be an HxW array of probabilities, got {type(value).__name__}") from error
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D HxW map, got shape {array.shape}")
    if array.size and not (np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0):
        raise ValueError(f"{name} must hold probabilities in [0, 1] (no NaN or infinity)")
    return array


def evaluate(expr: Expression | str, probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
    """Combine the terms' HxW probability maps as the expression says; returns HxW float32 in [0, 1].

    ``probabilities`` maps each term text (see :meth:`Expression.terms`) to its map; extra
    entries are ignored. A string expression is parsed first. The inputs are not modified and
    the result never shares memory with them.
    """
    if isinstance(expr, str):
        expr = parse(expr)
    _check_node(expr, "expr")
    if not isinstance(probabilities, Mapping):
        raise TypeError(f"probabilities must be a mapping of prompt -> map, got {type(probabilities).__name__}")
    terms = expr.terms()
    missing = [term for term in terms if term not in probabilities]
    if missing:
        raise ValueError(f"probabilities lack a map for {', '.join(map(repr, missing))}")
    maps = {term: _as_map(probabilities[term], f"probabilities[{term!r}]") for term in terms}
    shapes = {term: m.shape for term, m in maps.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{term!r}: {shape}" for term, shape in shapes.items())
        raise ValueError(f"probability maps differ in shape ({listed}); all must be the same HxW")
    result = expr._evaluate(maps)
    if any(result is m for m in maps.values()):  # a plain term: hand back a copy, not the input
        result = result.copy()
    return result


def _disk_morphology(probability: np.ndarray, radius: int) -> np.ndarray:
    """Grey-scale dilation (radius > 0) or erosion (< 0) by the disk ``x² + y² <= r²``.

    Equal, value for value, to ``scipy.ndimage.grey_dilation`` / ``grey_erosion`` with that disk
    as footprint and ``mode="nearest"`` (the tests check this), but computed as a max (min) over
    horizontal segments, one per disk row, each widened one pixel at a time from the last: about
    4r whole-array operations instead of (2r+1)² per pixel, so a radius of 30 on a 352x352 map
    takes milliseconds rather than a second, and the largest radius stays usable. "nearest"
    means the outside repeats the border, which a disk never sees past the inside: the image
    edge neither grows a region nor eats into it.
    """
    r = abs(radius)
    reduce = np.maximum if radius > 0 else np.minimum
    segment = probability.astype(np.float32, copy=True)  # each pixel reduced over [x - width, x + width]
    width = 0
    result = np.full_like(segment, -np.inf if radius > 0 else np.inf)  # reduce's identity
    for dy in range(r, -1, -1):  # the disk's row at height ±dy is widest as |dy| shrinks
        wanted = math.isqrt(r * r - dy * dy)
        while width < wanted:
            previous = segment.copy()
            reduce(segment[:, 1:], previous[:, :-1], out=segment[:, 1:])
            reduce(segment[:, :-1], previous[:, 1:], out=segment[:, :-1])
            width += 1
        _reduce_shifted_rows(result, segment, dy, reduce)
        if dy:
            _reduce_shifted_rows(result, segment, -dy, reduce)
    return result


def _reduce_shifted_rows(result: np.ndarray, rows: np.ndarray, dy: int, reduce) -> None:
    """In place: ``result[i] = reduce(result[i], rows[clip(i + dy)])`` for every row i."""
    height = rows.shape[0]
    k = min(abs(dy), height)
    if dy >= 0:
        reduce(result[: height - k], rows[k:], out=result[: height - k])
        reduce(result[height - k :], rows[height - 1], out=result[height - k :])
    else:
        reduce(result[k:], rows[: height - k], out=result[k:])
        reduce(result[:k], rows[0], out=result[:k])


# --------------------------------------------------------------------------------------------
# Refinement phrases

#: Phrase opening -> operation, as tabled in the module docstring.
REFINEMENT_OPENINGS: dict[str, str] = {
    "exclude": "and_not",
    "without": "and_not",
    "except": "and_not",
    "but not": "and_not",
    "minus": "and_not",
    "not": "and_not",
    "only": "and",
    "focus on": "and",
    "within": "and",
    "just": "and",
    "and": "or",
    "plus": "or",
    "also": "or",
    "add": "or",
    "include": "or",
}
_OPENING = re.compile(
    r"\s*("
    + "|".join(
        r"\s+".join(map(re.escape, opening.split()))
        for opening in sorted(REFINEMENT_OPENINGS, key=len, reverse=True)
    )
    + r")(?=\s|$)",
    re.IGNORECASE,
)


def refinement(text: str) -> tuple[str, str]:
    """Split a refinement phrase into (operation, prompt): ``"without the leash"`` ->
    ``("and_not", "the leash")``. The opening is matched in any case and must be a whole word;
    the rest, whitespace-normalised, is the prompt (articles kept)."""
    if not isinstance(text, str):
        raise TypeError(f"refinement phrase must be a string, got {type(text).__name__}")
    match = _OPENING.match(text)
    if match is None:
        openings = ", ".join(f"'{opening}'" for opening in REFINEMENT_OPENINGS)
        raise ExpressionError(
            f"a refinement must start with one of {openings}", text, len(text) - len(text.lstrip()) + 1
        )
    opening = " ".join(match.group(1).lower().split())
    term = " ".join(text[match.end():].split())
    if not term:
        raise ExpressionError(f"empty prompt: say what comes after {opening!r}", text, len(text.rstrip()) + 1)
    return REFINEMENT_OPENINGS[opening], term


_OPERATIONS = ("and_not", "and", "or")


def combine(operation: str, previous: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Apply a refinement operation to two HxW probability maps; returns HxW float32.

    ``and_not``: min(previous, 1 - new); ``and``: min(previous, new); ``or``: max(previous, new).
    """
    if operation not in _OPERATIONS:
        raise ValueError(f"operation must be one of {', '.join(map(repr, _OPERATIONS))}, got {operation!r}")
    previous = _as_map(previous, "previous")
    new = _as_map(new, "new")
    if previous.shape != new.shape:
        raise ValueError(f"previous and new maps differ in shape: {previous.shape} vs {new.shape}")
    if operation == "and_not":
        return np.minimum(previous, np.float32(1.0) - new)
    if operation == "and":
        return np.minimum(previous, new)
    return np.maximum(previous, new)
