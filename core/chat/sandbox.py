"""A hardened Jinja sandbox: chat templates render under a deadline and size limits."""

from __future__ import annotations

import copy
import functools
import math
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeGuard

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

# Templates come from model files, so they are hostile input: these bound one render.
RENDER_TIMEOUT_S = 2.0
MAX_OUTPUT_CHARS = 4 * 2**20
_MAX_INT_BITS = 4096  # for * and ** on integers: Python's big ints would compute for ever
_RANGE_CHECK_EVERY = 256


class LimitExceeded(Exception):
    """A render went over its time or size limit."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one render."""

    deadline: float  # time.monotonic() value
    timeout_s: float
    max_chars: int


# Set per render, so renders in concurrent worker threads each keep their own deadline.
LIMITS: ContextVar[Limits] = ContextVar(
    "chat_template_limits",
    default=Limits(math.inf, math.inf, MAX_OUTPUT_CHARS),  # noqa: B039 (frozen: safe to share)
)


def _check_time() -> None:
    limits = LIMITS.get()
    if time.monotonic() > limits.deadline:
        raise LimitExceeded(f"chat template took longer than {limits.timeout_s} s")


def _check_size(size: int, what: str = "value") -> None:
    cap = LIMITS.get().max_chars
    if size > cap:
        raise LimitExceeded(f"chat template {what} exceeds {cap} characters")


def _check_numbers(values: Iterable[object]) -> None:
    """Refuse widths and counts that would pad a string past the output limit in one call."""
    cap = LIMITS.get().max_chars
    if any(_is_int(v) and abs(v) > cap for v in values):
        raise LimitExceeded(f"chat template passes a number over {cap} to a string operation")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int)


def _footprint(value: object, limit: int | None = None) -> int:
    """About len(str(value)), counted without building it; stops soon after passing limit."""
    if isinstance(value, str):
        return len(value)  # the common case, on every + and filter call
    limit = LIMITS.get().max_chars if limit is None else limit
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset | dict):
            # Shared items count once per reference: str() expands every one of them.
            total += 2 + 2 * len(item)
            if total <= limit:
                stack.extend(item.items() if isinstance(item, dict) else item)
        else:
            total += 1
    return total


def joined(chunks: Iterable[str]) -> str:
    """The chunks joined, checking the time and the size as they arrive."""
    cap = LIMITS.get().max_chars
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > cap:
            raise LimitExceeded(f"chat template output exceeds {cap} characters")
        _check_time()
        parts.append(chunk)
    return "".join(parts)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too large, before computing it."""
    if operator == "+":
        _check_size(_footprint(left) + _footprint(right))
    elif operator == "*" and _is_int(left) and _is_int(right):
        _check_int_bits(abs(left).bit_length() + abs(right).bit_length())
    elif operator == "*":
        count, sequence = (left, right) if _is_int(left) else (right, left)
        if _is_int(count) and count > 0:
            limit = LIMITS.get().max_chars // count
            _check_size(_footprint(sequence, limit) * count)
    elif operator == "**" and _is_int(left) and _is_int(right) and right > 0:
        _check_int_bits(right * abs(left).bit_length())
    elif operator == "%" and isinstance(left, str):
        _check_size(_printf_size(left, right))


def _check_int_bits(bits: int) -> None:
    if bits > _MAX_INT_BITS:
        raise LimitExceeded(f"chat template computes a number over {_MAX_INT_BITS} bits")


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _width(digits: str) -> int:
    # int() refuses over 4,300 digits; anything past nine is over every limit anyway.
    return int(digits) if len(digits) < 10 else 10**9


def _largest_int(values: Iterable[object]) -> int:
    return max((abs(v) for v in values if _is_int(v)), default=0)


def _printf_size(fmt: str, values: Any) -> int:
    """An upper bound on len(fmt % values): each width and precision may pad the output."""
    args = values if isinstance(values, tuple) else (values,)
    star = _largest_int(args)
    groups = (g for m in _PRINTF_SPEC.finditer(fmt.replace("%%", "")) for g in m.groups() if g)
    padding = sum(star if g == "*" else _width(g) for g in groups)
    return len(fmt) + padding + _footprint(values)


def _format_size(fmt: str, args: Sequence[Any], named: Mapping[Any, Any]) -> int:
    """An upper bound on len(fmt.format(...)), as _printf_size for str.format."""
    nested = _largest_int([*args, *named.values()])
    padding = 0
    for _text, _field, spec, _conversion in string.Formatter().parse(fmt):
        if spec:
            padding += nested if "{" in spec else sum(map(_width, _DIGITS.findall(spec)))
    return len(fmt) + padding + _footprint((args, named))


def _replace_size(s: Any, old: Any, new: Any, count: Any = None) -> int:
    if not (isinstance(old, str) and isinstance(new, str)):
        return 0
    length = len(s) if isinstance(s, str) else _footprint(s)
    hits = (s.count(old) if old else length + 1) if isinstance(s, str) else length + 1
    if _is_int(count) and count >= 0:
        hits = min(hits, count)
    return length + hits * len(new)


def _join_size(separator: Any, items: Any) -> int:
    if not isinstance(items, Sized):
        return 0  # a generator (from map, select...): it cannot be measured without consuming it
    return _footprint(separator) * len(items) + _footprint(items)


def _indent_size(s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> int:
    lines = s.count("\n") + 1 if isinstance(s, str) else _footprint(s)
    return _footprint(s) + lines * (width if _is_int(width) else _footprint(width))


def _wordwrap_size(
    s: Any,
    width: Any = 79,
    break_long_words: Any = True,
    wrapstring: Any = None,
    break_on_hyphens: Any = True,
) -> int:
    return _footprint(s) * (1 + _footprint(wrapstring or "\n"))


_Estimator = Callable[[Any, tuple[Any, ...], dict[str, Any]], int]

# Calls that can make a result far larger than their arguments, keyed by method or filter name:
# (the string or filtered value, the other arguments, keyword arguments) -> result size bound.
_METHOD_SIZES: dict[str, _Estimator] = {
    "replace": lambda s, a, k: _replace_size(s, *a, **k),
    "join": lambda s, a, k: _join_size(s, *a),
    "expandtabs": lambda s, a, k: len(s) * max(1, *a, *k.values()),
    "format": lambda s, a, k: _format_size(s, a, k),
    "format_map": lambda s, a, k: _format_size(s, (), *a),
}
_FILTER_SIZES: dict[str, _Estimator] = {
    "replace": _METHOD_SIZES["replace"],
    "join": lambda v, a, k: _join_size(a[0] if a else k.get("d", ""), v),
    "indent": lambda v, a, k: _indent_size(v, *a, **k),
    "wordwrap": lambda v, a, k: _wordwrap_size(v, *a, **k),
    "format": lambda v, a, k: _printf_size(v, k or a) if isinstance(v, str) else 0,
}
# Filters that never turn their input into text, so need no size check before they run.
_CONTAINER_FILTERS = frozenset(
    "abs attr batch bool count d default dictsort first float groupby int items last length "  # noqa: SIM905
    "list map max min random reject rejectattr reverse round select selectattr slice sort "
    "sum unique".split()
)
# Keyword arguments Jinja adds to calls inside loops and blocks; not the template's own.
_JINJA_KWARGS = frozenset({"_loop_vars", "_block_vars"})


def _check_estimate(
    estimate: _Estimator, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    try:
        size = estimate(value, args, kwargs)
    except (TypeError, ValueError, IndexError, AttributeError):
        return  # arguments the real call will reject with its own error
    _check_size(size)


def _str_method(obj: Any) -> tuple[str, str] | None:
    """(the string, the method name) when obj is a bound str method (or the sandbox's format)."""
    target = getattr(obj, "__wrapped__", obj)
    owner = getattr(target, "__self__", None)
    return (owner, target.__name__) if isinstance(owner, str) else None


def limited_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """func with the render's limits checked before each call."""
    skip = 1 if hasattr(func, "jinja_pass_arg") else 0  # the context Jinja passes first
    estimate = _FILTER_SIZES.get(name)
    to_text = name not in _CONTAINER_FILTERS

    @functools.wraps(func)
    def limited(*args: Any, **kwargs: Any) -> Any:
        _check_time()
        value, params = (args[skip] if len(args) > skip else None), args[skip + 1 :]
        _check_numbers([*params, *kwargs.values()])
        if to_text:
            _check_size(_footprint((value, params, kwargs)))
        if estimate is not None:
            _check_estimate(estimate, value, params, kwargs)
        return func(*args, **kwargs)

    return limited


class _LimitedRange(Sequence[int]):
    """range() for templates: at most MAX_RANGE items, iterated lazily with deadline checks."""

    def __init__(self, items: range) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: Any) -> Any:
        item = self._items[index]
        return _LimitedRange(item) if isinstance(item, range) else item

    def __contains__(self, value: object) -> bool:
        return value in self._items

    def __iter__(self) -> Iterator[int]:
        for count, item in enumerate(self._items):
            if count % _RANGE_CHECK_EVERY == 0:
                _check_time()
            yield item

    def __repr__(self) -> str:
        return repr(self._items)


def _limited_range(*args: int) -> _LimitedRange:
    return _LimitedRange(safe_range(*args))


def _limited_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    """Every for loop iterates through this: no loop, however nested, outlives the deadline."""
    for item in iterable:
        _check_time()
        yield item


def _checked_parts(parts: tuple[Any, ...]) -> tuple[Any, ...]:
    _check_time()
    _check_size(_footprint(parts))
    return parts


def _checked_output(value: Any) -> Any:
    """Jinja's finalize: every {{ value }} is checked before str() expands it."""
    _check_time()
    _check_size(_footprint(value), "output")
    return value


class _LimitedCodeGenerator(CodeGenerator):
    """Compiles for loops and the ~ operator so that they check the render's limits."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # Loops over any iterable, not only range(), run no other hook when their body is empty.
        limited = copy.copy(node)
        iterate = nodes.EnvironmentAttribute("limited_iter", lineno=node.lineno)
        limited.iter = nodes.Call(iterate, [node.iter], [], None, None, lineno=node.lineno)
        super().visit_For(limited, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # As CodeGenerator.visit_Concat, with the parts checked before str() expands them.
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"{join}(environment.checked_parts((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write(")))")


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus a deadline and size limits checked from its hooks."""

    code_generator_class = _LimitedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})
    concat = staticmethod(joined)  # joins the output buffered by macros, blocks and set blocks

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_checked_output, **options)
        self.limited_iter = _limited_iter
        self.checked_parts = _checked_parts
        self.filters = {name: limited_filter(name, f) for name, f in self.filters.items()}
        self.globals["range"] = _limited_range
        del self.globals["lipsum"]  # generates text in one uninterruptible call

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_time()
        method = _str_method(__obj)
        if method is not None:
            named = {k: v for k, v in kwargs.items() if k not in _JINJA_KWARGS}
            _check_numbers([*args, *named.values()])
            estimate = _METHOD_SIZES.get(method[1])
            if estimate is not None:
                _check_estimate(estimate, method[0], args, named)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_time()
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_time()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _check_time()
        return super().getitem(obj, argument)
