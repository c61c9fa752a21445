"""Safe column expressions for `clipscale fit` (--C/--N/--D/--U/--S/--y/--where/--holdout).

Tables and the commands around them are shared between colleagues, so an expression must never run
code: `DataFrame.eval`/`query` resolve `@name` locals and method calls (`@pd.io.common.os.system(..)`).
Here an expression is parsed with `ast` and checked against a small grammar before anything is
evaluated, then interpreted node by node (never `eval`/`compile`d):

* column names: bare identifiers or pandas-style `backtick quoted` names with spaces/symbols;
* numbers, strings, True/False;
* arithmetic `+ - * / // % **`, unary `- +`; comparisons (chained too); `and/or/not`, elementwise,
  also spelt `& | ~` (`&`/`|` with the precedence of and/or, as in pandas); `in`/`not in` with a
  literal list or tuple;
* calls of the numeric functions in `FUNCTIONS` (elementwise, numpy): log, log10, exp, sqrt, abs,
  where(cond, a, b), min/max (one argument: the column's min/max; two or more: elementwise).

Anything else (attributes, `@` locals, subscripts, lambdas, comprehensions, other calls, keyword
arguments, dunder names, ...) raises `ExpressionError` with one line naming the construct.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from clipscale.errors import ClipscaleError

MAX_LENGTH = 4000  # characters: far beyond any column formula, short of parser/recursion limits


class ExpressionError(ClipscaleError):
    """An expression outside the allowed grammar, or one that cannot be evaluated."""


LISTED_COLUMNS = 20  # an unknown-column error lists this many of the table's columns, then "… and K more"


def unknown_column(name: str, columns: Iterable[Any]) -> str:
    """"unknown column 'X' (did you mean 'Y'?); columns are: …": the close matches (difflib) first, so a
    typo's column is named even in a wide table, then the columns, the rest counted."""
    import difflib

    cols = [str(c) for c in columns]
    close = difflib.get_close_matches(str(name), cols, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    listed = ", ".join(cols[:LISTED_COLUMNS])
    if len(cols) > LISTED_COLUMNS:
        listed += f" … and {len(cols) - LISTED_COLUMNS} more"
    return f"unknown column {str(name)!r}{hint}; columns are: {listed}"


def _minmax(reduce: Callable[..., Any], elementwise: Any) -> Callable[..., Any]:
    def fn(*args: Any) -> Any:
        if len(args) == 1:
            return reduce(np.asarray(args[0], dtype=float))
        out = args[0]
        for a in args[1:]:
            out = elementwise(out, a)
        return out

    return fn


def _where(cond: Any, a: Any, b: Any) -> Any:
    return np.where(np.asarray(cond, dtype=bool), a, b)


FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {  # name -> (fn, min args, max args)
    "log": (np.log, 1, 1),
    "log10": (np.log10, 1, 1),
    "exp": (np.exp, 1, 1),
    "sqrt": (np.sqrt, 1, 1),
    "abs": (np.abs, 1, 1),
    "where": (_where, 3, 3),
    "min": (_minmax(np.nanmin, np.fmin), 1, 64),
    "max": (_minmax(np.nanmax, np.fmax), 1, 64),
}

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.Pow: lambda a, b: np.power(_as_float(a), b),  # floats: `9**9**9` is inf, not a hang
    ast.BitAnd: lambda a, b: np.logical_and(a, b),
    ast.BitOr: lambda a, b: np.logical_or(a, b),
}
_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}
_UNARY = (ast.USub, ast.UAdd, ast.Not, ast.Invert)

# What a refused node is called in the one-line error.
_CONSTRUCTS: dict[type, str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "a subscript",
    ast.Slice: "a slice",
    ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.NamedExpr: "assignment (:=)",
    ast.IfExp: "a conditional expression (use where(cond, a, b))",
    ast.Dict: "a dict literal",
    ast.Set: "a set literal",
    ast.JoinedStr: "an f-string",
    ast.FormattedValue: "an f-string",
    ast.Starred: "a starred argument",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.List: "a list outside `in [...]`",
    ast.Tuple: "a tuple outside `in (...)`",
}


def _as_float(a: Any) -> Any:
    return float(a) if isinstance(a, (int, bool)) else a


def _plain_literal(value: object) -> bool:
    return isinstance(value, bool) or type(value) in (int, float, str)


def _refuse(what: str, hint: str = "") -> ExpressionError:
    return ExpressionError(f"{what} is not allowed in expressions{hint}")


@dataclass(frozen=True)
class Expression:
    """A checked expression: `names` are the columns it reads (backtick names unquoted)."""

    source: str
    tree: ast.Expression
    names: frozenset[str]
    aliases: Mapping[str, str]  # placeholder identifier -> backtick column name

    def evaluate(self, columns: Mapping[str, Any]) -> Any:
        """Interpret over `columns` (a DataFrame or a mapping of name -> array/Series)."""
        keys = set(columns.keys())
        missing = sorted(n for n in self.names if n not in keys)
        if missing:
            raise ExpressionError(unknown_column(missing[0], list(columns.keys())))
        with np.errstate(all="ignore"):
            try:
                return _Interpreter(columns, self.aliases).visit(self.tree.body)
            except ExpressionError:
                raise
            except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
                msg = str(exc).splitlines()[0] if str(exc) else ""
                raise ExpressionError(f"cannot evaluate: {type(exc).__name__}: {msg}") from None


def parse(source: str) -> Expression:
    """Check `source` against the grammar (module docstring); nothing is evaluated."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("an expression must be a non-empty string")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
    text, aliases = _replace_backticks(source)
    names: set[str] = set()
    try:
        tree = ast.parse(text.strip(), mode="eval")
        _check(tree.body, names, aliases)
    except SyntaxError as exc:
        raise ExpressionError(f"not a valid expression ({exc.msg})") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError("expression nested too deeply or too large") from None
    return Expression(source, tree, frozenset(names), dict(aliases))


def evaluate(source: str, columns: Mapping[str, Any]) -> Any:
    """`parse(source).evaluate(columns)`."""
    return parse(source).evaluate(columns)


def _replace_backticks(source: str) -> tuple[str, dict[str, str]]:
    """Swap each `quoted name` for a fresh identifier, `&`/`|` for and/or (as pandas does); refuse
    `@` (pandas' local references)."""
    prefix = "_clipscale_col"
    while prefix in source:
        prefix += "_"
    out: list[str] = []
    aliases: dict[str, str] = {}
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch in "'\"":
            j = i + 1
            while j < n and source[j] != ch:
                j += 2 if source[j] == "\\" else 1
            out.append(source[i : j + 1])
            i = j + 1
        elif ch == "`":
            j = source.find("`", i + 1)
            if j < 0:
                raise ExpressionError("unterminated `backtick` column name")
            name = source[i + 1 : j]
            if not name:
                raise ExpressionError("empty `backtick` column name")
            alias = next((a for a, v in aliases.items() if v == name), f"{prefix}{len(aliases)}")
            aliases[alias] = name
            out.append(f" {alias} ")
            i = j + 1
        elif ch == "@":
            raise _refuse("`@` local variable reference")
        elif ch in "&|":  # pandas' precedence: `a > 1 & b < 2` means `(a > 1) and (b < 2)`
            out.append(" and " if ch == "&" else " or ")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out), aliases


def _check(node: ast.AST, names: set[str], aliases: Mapping[str, str]) -> None:
    """Raise on the first node outside the grammar; collect column names."""
    if isinstance(node, ast.Constant):
        if _plain_literal(node.value):
            return
        raise _refuse(f"a {type(node.value).__name__} literal")
    if isinstance(node, ast.Name):
        if node.id.startswith("__"):
            raise _refuse(f"dunder name {node.id!r}")
        names.add(aliases.get(node.id, node.id))
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise _refuse(f"operator {type(node.op).__name__}")
        if any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in (node.left, node.right)):
            raise _refuse("arithmetic on a string")
        _check(node.left, names, aliases)
        _check(node.right, names, aliases)
        return
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, _UNARY):
            raise _refuse(f"operator {type(node.op).__name__}")
        _check(node.operand, names, aliases)
        return
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            _check(v, names, aliases)
        return
    if isinstance(node, ast.Compare):
        _check_compare(node, names, aliases)
        return
    if isinstance(node, ast.Call):
        _check_call(node, names, aliases)
        return
    raise _refuse(_CONSTRUCTS.get(type(node), f"a {type(node).__name__} expression"))


def _check_compare(node: ast.Compare, names: set[str], aliases: Mapping[str, str]) -> None:
    _check(node.left, names, aliases)
    for op, right in zip(node.ops, node.comparators):
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right, (ast.List, ast.Tuple)):
                raise _refuse("`in` with anything but a literal list or tuple")
            for elt in right.elts:
                _literal(elt)
        elif type(op) in _CMPOPS:
            _check(right, names, aliases)
        else:
            raise _refuse(f"comparison {type(op).__name__}")


def _check_call(node: ast.Call, names: set[str], aliases: Mapping[str, str]) -> None:
    func = node.func
    if not isinstance(func, ast.Name):
        raise _refuse(_CONSTRUCTS.get(type(func), "calling anything but a named function"))
    if func.id not in FUNCTIONS or func.id in aliases:
        raise _refuse(f"calling {aliases.get(func.id, func.id)!r}", f" (functions: {', '.join(FUNCTIONS)})")
    if node.keywords:
        raise _refuse("a keyword argument")
    _, lo, hi = FUNCTIONS[func.id]
    if not lo <= len(node.args) <= hi:
        raise ExpressionError(f"{func.id}() takes {lo if lo == hi else f'{lo} or more'} argument(s)")
    for a in node.args:
        _check(a, names, aliases)


def _literal(node: ast.AST) -> Any:
    """An element of an `in` list: a number, string or bool, optionally negated."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, str):
            raise _refuse("a signed string")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Constant) and _plain_literal(node.value):
        return node.value
    raise _refuse("anything but numbers and strings in an `in` list")


class _Interpreter:
    """Evaluates a tree that `_check` accepted; nothing here resolves names outside `columns`."""

    def __init__(self, columns: Mapping[str, Any], aliases: Mapping[str, str]) -> None:
        self.columns = columns
        self.aliases = aliases

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.columns[self.aliases.get(node.id, node.id)]
        if isinstance(node, ast.BinOp):
            left, right = self.visit(node.left), self.visit(node.right)
            if not isinstance(node.op, (ast.BitAnd, ast.BitOr)) and (_is_text(left) or _is_text(right)):
                raise ExpressionError("arithmetic on text (a string column) is not allowed in expressions")
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp):
            return self._unary(node.op, self.visit(node.operand))
        if isinstance(node, ast.BoolOp):
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = self.visit(node.values[0])
            for v in node.values[1:]:
                out = combine(out, self.visit(v))
            return out
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            return FUNCTIONS[node.func.id][0](*(self.visit(a) for a in node.args))
        raise _refuse(type(node).__name__)  # unreachable after _check

    @staticmethod
    def _unary(op: ast.unaryop, v: Any) -> Any:
        if isinstance(op, ast.USub):
            return -v
        if isinstance(op, ast.UAdd):
            return +v
        return np.logical_not(v)

    def _compare(self, node: ast.Compare) -> Any:
        left = self.visit(node.left)
        out: Any = True
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                assert isinstance(right, (ast.List, ast.Tuple))
                values = [_literal(e) for e in right.elts]
                part = _isin(left, values)
                if isinstance(op, ast.NotIn):
                    part = np.logical_not(part)
                out = np.logical_and(out, part)
                continue
            r = self.visit(right)
            out = np.logical_and(out, _CMPOPS[type(op)](left, r))
            left = r
        return out


def _is_text(v: Any) -> bool:
    """Strings repeat (`col * 10**9`) and %-format: arithmetic is for numbers and booleans only."""
    return isinstance(v, str) or (isinstance(v, (pd.Series, np.ndarray)) and v.dtype.kind in "OSU")


def _isin(left: Any, values: list[Any]) -> Any:
    if isinstance(left, pd.Series):
        return left.isin(values)
    if isinstance(left, np.ndarray):
        return np.isin(left, values)
    return left in values
