"""Hostile chat templates: each runs into a time or size limit and fails fast with InvalidRequest."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from core.chat.sandbox import MAX_OUTPUT_CHARS
from core.chat.templates import BUILTIN_TEMPLATES, render_chat, validate_messages
from core.chat.types import ChatMessage
from core.errors import InvalidRequest

SYS_USER = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi!")]
DEADLINE_S = 0.3
# Far above DEADLINE_S, far below what any of these templates would take unchecked.
BOUND_S = 5.0
BIG = "{% set s = 'a' * 4000000 %}"


def render(template: str, **limits: Any) -> str:
    return render_chat(
        SYS_USER,
        model_template=None,
        architecture="llama",
        override=template,
        bos_token="<s>",
        eos_token="</s>",
        **limits,
    )


def refused(template: str, **limits: Any) -> tuple[str, float]:
    """The InvalidRequest message for a template that must be refused, and how long it took."""
    start = time.monotonic()
    with pytest.raises(InvalidRequest) as info:
        render(template, **limits)
    elapsed = time.monotonic() - start
    assert info.value.param == "messages"
    return info.value.message, elapsed


SLOW = {
    "nested ranges": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "nested loops over a string": BIG + "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "nested loops over messages": (
        "{% for a in messages %}{% for b in messages %}{% for c in range(100000) %}"
        "{% for d in range(100000) %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}"
    ),
    "exponential macro recursion": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}"
    ),
    "a filter over a long range, nested": (
        "{% for i in range(100000) %}{{ range(100000) | sum }}{% endfor %}"
    ),
}


@pytest.mark.parametrize("template", SLOW.values(), ids=SLOW.keys())
def test_slow_templates_stop_at_the_deadline(template: str) -> None:
    message, elapsed = refused(template, timeout_s=DEADLINE_S)
    assert message == f"chat template took longer than {DEADLINE_S} s"
    assert DEADLINE_S <= elapsed < BOUND_S


def test_the_default_deadline_is_two_seconds() -> None:
    message, elapsed = refused(SLOW["nested ranges"])
    assert message == "chat template took longer than 2.0 s"
    assert elapsed < 2.0 + BOUND_S


HUGE = {
    "string repetition": ("{{ 'a' * 10**9 }}", "value exceeds"),
    "list repetition": ("{% set x = [0] * 10**9 %}", "value exceeds"),
    "repetition, number first": ("{% set x = 10**9 * 'ab' %}", "value exceeds"),
    "big power": ("{{ 10 ** (10 ** 9) }}", "computes a number over 4096 bits"),
    "repeated squaring": (
        "{% set ns = namespace(n=3) %}{% for i in range(64) %}{% set ns.n = ns.n * ns.n %}"
        "{% endfor %}",
        "computes a number over 4096 bits",
    ),
    "doubling with ~": (
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}",
        "value exceeds",
    ),
    "doubling with +": (
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}",
        "value exceeds",
    ),
    "streamed output": (
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        "output exceeds",
    ),
    "buffered macro output": (
        "{% macro m() %}{% for i in range(100000) %}" + "x" * 100 + "{% endfor %}{% endmacro %}"
        "{% set y = m() %}",
        "output exceeds",
    ),
    "shared lists expanded by str()": (
        "{% set a = ['a' * 1000] * 4 %}{% set b = [a, a, a, a] %}{% set c = [b, b, b, b] %}"
        "{% set d = [c, c, c, c] %}{% set e = [d, d, d, d] %}{% set f = [e, e, e, e] %}"
        "{% set g = [f, f, f, f] %}{% set h = [g, g, g, g] %}{{ h }}",
        "output exceeds",
    ),
    "shared lists expanded by ~": (
        "{% set a = ['a' * 1000] * 4 %}{% set b = [a, a, a, a] %}{% set c = [b, b, b, b] %}"
        "{% set d = [c, c, c, c] %}{% set e = [d, d, d, d] %}{% set f = [e, e, e, e] %}"
        "{% set g = [f, f, f, f] %}{% set h = [g, g, g, g] %}{{ '' ~ h }}",
        "value exceeds",
    ),
    "center filter width": ("{{ 'a' | center(1000000000) }}", "passes a number over"),
    "indent filter": (BIG + "{{ ('\n' * 1000) | indent(s) }}", "value exceeds"),
    "ljust width": ("{{ 'a'.ljust(1000000000) }}", "passes a number over"),
    "replace method": (BIG + "{{ s.replace('a', s) }}", "value exceeds"),
    "replace filter": (BIG + "{{ s | replace('a', s) }}", "value exceeds"),
    "join method": (BIG + "{{ s.join(s) }}", "value exceeds"),
    "join filter": (BIG + "{{ s | list | join(s) }}", "value exceeds"),
    "expandtabs": ("{{ ('\t' * 1000).expandtabs(4000000) }}", "value exceeds"),
    "printf width": ("{{ '%1000000000s' % 'x' }}", "value exceeds"),
    "printf star width": ("{{ '%*s' % (1000000000, 'x') }}", "value exceeds"),
    "format filter width": ("{{ '%1000000000s' | format('x') }}", "value exceeds"),
    "str.format width": ("{{ '{:1000000000}'.format('x') }}", "value exceeds"),
    "str.format nested width": ("{{ '{:{}}'.format('x', 1000000000) }}", "passes a number"),
    "tojson indent of a deep list": (
        "{% set x = [[[[[[[[[[ range(100000) | list ]]]]]]]]]] %}{{ x | tojson(indent=1000) }}",
        "output exceeds",
    ),
}


@pytest.mark.parametrize(("template", "fragment"), HUGE.values(), ids=HUGE.keys())
def test_huge_values_are_refused_before_they_are_built(template: str, fragment: str) -> None:
    # A generous deadline: these must be stopped by a size check, not by the clock.
    message, elapsed = refused(template, timeout_s=60.0)
    assert fragment in message
    assert elapsed < BOUND_S


def test_the_default_output_limit_is_four_mib_of_characters() -> None:
    message, _ = refused("{% for i in range(5000) %}{{ 'x' * 1000 }}{% endfor %}")
    assert message == f"chat template output exceeds {MAX_OUTPUT_CHARS} characters"
    assert MAX_OUTPUT_CHARS == 4 * 2**20
    assert len(render("{% for i in range(4000) %}{{ 'x' * 1000 }}{% endfor %}")) == 4_000_000


def test_output_limit_is_enforced_while_streaming() -> None:
    # Unchecked, this would write 10**13 characters: stopped as soon as it passes the limit.
    template = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
    message, elapsed = refused(template, timeout_s=60.0, max_chars=1000)
    assert message == "chat template output exceeds 1000 characters"
    assert elapsed < BOUND_S


def test_lipsum_is_not_available() -> None:
    message, elapsed = refused("{{ lipsum(1000000) }}", timeout_s=60.0)
    assert "lipsum" in message
    assert elapsed < BOUND_S


def test_a_render_after_a_refused_one_is_unaffected() -> None:
    refused(SLOW["nested ranges"], timeout_s=DEADLINE_S)
    assert render("chatml") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_each_thread_keeps_its_own_deadline() -> None:
    # A hostile render in one thread must not cut short, or extend, renders in others.
    outcomes: dict[str, object] = {}

    def hostile() -> None:
        try:
            render(SLOW["nested ranges"], timeout_s=DEADLINE_S)
        except InvalidRequest as exc:
            outcomes["hostile"] = exc.message

    def normal(i: int) -> None:
        outcomes[f"normal{i}"] = render("{% for i in range(20000) %}{% endfor %}ok", timeout_s=60.0)

    threads = [threading.Thread(target=hostile)]
    threads += [threading.Thread(target=normal, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND_S * 2)
    assert outcomes == {
        "hostile": f"chat template took longer than {DEADLINE_S} s",
        **{f"normal{i}": "ok" for i in range(4)},
    }


# Features real templates use, exercising every hook: must render as Jinja's own sandbox does.
FEATURES = (
    "{%- set ns = namespace(count=0, text='') -%}"
    "{%- macro turn(m) -%}[{{ m.role | upper }}] {{ m.content | trim }}{%- endmacro -%}"
    "{%- for m in messages if m.role != 'tool' -%}"
    "{{ loop.index }}/{{ loop.length }}{{ ' last' if loop.last }}: {{ turn(m) }}\n"
    "{%- set ns.count = ns.count + 1 -%}{%- set ns.text = ns.text ~ m.role[:1] -%}"
    "{%- endfor -%}"
    "{{ ns.count }} {{ ns.text }} {{ range(5) | list }} {{ range(10)[2:5] | list }} "
    "{{ range(3) | length }} {{ 4 in range(5) }} {{ range(4) | reverse | join(',') }} "
    "{{ '%5s|%-3d|%.2f' % ('x', 7, 3.14159) }} {{ '{:>4}|{}'.format('y', 2) }} "
    "{{ 'ab' * 3 }} {{ [1, 2] * 2 }} {{ 2 ** 10 }} {{ 7 % 3 }} {{ 'a,b'.split(',') }} "
    "{{ messages | map(attribute='role') | join('+') }} {{ messages | tojson(indent=2) }} "
    "{{ 'x\ny' | indent(2, first=true) }} {{ 'hello' | replace('l', 'L') }} "
    "{{ '%s-%s' | format('p', 'q') }} {{ 'abc' | center(9) }} "
    "{%- set block %}{% for i in range(3) %}<{{ i }}>{% endfor %}{% endset %} {{ block }}"
    "{%- for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor -%}"
    "{%- for i in [] %}never{% else %} empty{% endfor %}"
)


@pytest.mark.parametrize(
    "source",
    [FEATURES, *BUILTIN_TEMPLATES.values()],
    ids=["features", *BUILTIN_TEMPLATES.keys()],
)
def test_renders_as_the_stock_sandbox(source: str) -> None:
    messages = [
        ChatMessage("system", " Be brief. "),
        *[ChatMessage("user" if i % 2 == 0 else "assistant", f"turn {i}") for i in range(41)],
    ]
    stock = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    stock.filters["tojson"] = lambda value, indent=None: json.dumps(
        value, ensure_ascii=False, indent=indent
    )
    context: dict[str, Any] = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "add_generation_prompt": True,
    }
    expected = stock.from_string(source).render(messages=validate_messages(messages), **context)
    got = render_chat(
        messages, model_template=None, architecture="llama", override=source, **context
    )
    assert got == expected
