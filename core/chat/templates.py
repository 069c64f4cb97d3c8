"""Chat templates: pick a Jinja template for a model and render a conversation in a sandbox."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jinja2 import Template, TemplateError, TemplateSyntaxError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from core.chat.sandbox import (
    LIMITS,
    MAX_OUTPUT_CHARS,
    RENDER_TIMEOUT_S,
    LimitedEnvironment,
    LimitExceeded,
    Limits,
    joined,
    limited_filter,
)
from core.chat.tools.prompt import prepare
from core.chat.tools.syntax import ToolSyntax, detect
from core.chat.tools.validate import call_arguments, check_tool_messages
from core.chat.types import ChatMessage
from core.errors import InvalidRequest

log = logging.getLogger(__name__)

ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
# OpenAI's "developer" role is its newer name for "system"; no model template knows it.
_ROLE_ALIASES = {"developer": "system"}
_PARAM = "messages"
_CACHE_SIZE = 64

CHATML = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Gemma has no system role: a leading system message is merged into the first user turn
# (as Gemma's own template does), any other one becomes a user turn.
GEMMA = (
    "{{- bos_token -}}"
    "{%- set ns = namespace(prefix='') -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message.role == 'system' and not loop.last"
    " and messages[1].role == 'user' -%}"
    "{%- set ns.prefix = message.content | trim + '\\n\\n' -%}"
    "{%- else -%}"
    "{%- set role = 'model' if message.role == 'assistant' else 'user' -%}"
    "{{- '<start_of_turn>' + role + '\\n' + ns.prefix + message.content | trim"
    " + '<end_of_turn>\\n' -}}"
    "{%- set ns.prefix = '' -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)

LLAMA3 = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n'"
    " + message.content | trim + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
    "{%- endif -%}"
)

# Llama 2's [INST] format ends every user turn with "[/INST]", which is itself the
# generation prompt, so add_generation_prompt changes nothing here.
LLAMA2 = (
    "{%- if messages[0].role == 'system' -%}"
    "{%- set system = '<<SYS>>\\n' + messages[0].content | trim + '\\n<</SYS>>\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message.role == 'assistant') != (loop.index0 % 2 == 1) -%}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}"
    "{%- endif -%}"
    "{%- if message.role == 'assistant' -%}"
    "{{- ' ' + message.content | trim + ' ' + eos_token -}}"
    "{%- else -%}"
    "{{- bos_token + '[INST] ' + (system if loop.first else '') + message.content | trim"
    " + ' [/INST]' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": CHATML,
    "gemma": GEMMA,
    "llama3": LLAMA3,
    "llama2": LLAMA2,
}

# Architecture name prefixes (GGUF general.architecture) -> built-in; anything else is chatml.
_ARCH_FALLBACKS: tuple[tuple[str, str], ...] = (
    ("gemma", "gemma"),
    ("llama", "llama3"),
    ("qwen", "chatml"),
    ("smollm", "chatml"),
)


class _TemplateRaised(TemplateError):
    """A template called raise_exception(): its message is meant for the client."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # As HF transformers: Jinja's own tojson escapes HTML characters, which templates don't expect.
    encoder = json.JSONEncoder(
        ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
    # Streamed: indentation grows with depth, so the text can be far larger than the value.
    return joined(encoder.iterencode(value))


def _make_environment() -> ImmutableSandboxedEnvironment:
    # The same settings HF transformers uses, so model templates render as their authors tested.
    env = LimitedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = limited_filter("tojson", _tojson)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _make_environment()


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile(source: str) -> Template:
    # lru_cache is thread-safe; a concurrent miss at worst compiles the same template twice.
    return _ENV.from_string(source)


def select_template(*, model_template: str | None, architecture: str, override: str | None) -> str:
    """The template source to use: override, then the model's own, then a built-in."""
    if override:
        return BUILTIN_TEMPLATES.get(override, override)
    if model_template:
        return model_template
    return BUILTIN_TEMPLATES[fallback_name(architecture)]


def fallback_name(architecture: str) -> str:
    """The built-in template for a model without one, by architecture."""
    arch = architecture.lower()
    for prefix, name in _ARCH_FALLBACKS:
        if arch.startswith(prefix):
            return name
    return "chatml"


def render_chat(
    messages: Sequence[ChatMessage],
    *,
    model_template: str | None,
    architecture: str,
    override: str | None,
    bos_token: str,
    eos_token: str,
    functions: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    timeout_s: float = RENDER_TIMEOUT_S,
    max_chars: int = MAX_OUTPUT_CHARS,
) -> str:
    """Render a conversation to prompt text; InvalidRequest on bad messages or template errors.

    `functions` are the tools offered (checked, see core.chat.tools.validate), None for none.
    Blocking and thread-safe: run it in a worker thread. A render that takes longer than
    timeout_s or makes more than max_chars characters is stopped with InvalidRequest.
    """
    source = select_template(
        model_template=model_template, architecture=architecture, override=override
    )
    return render_source(
        source,
        messages,
        syntax=detect(source),
        functions=functions,
        bos_token=bos_token,
        eos_token=eos_token,
        add_generation_prompt=add_generation_prompt,
        timeout_s=timeout_s,
        max_chars=max_chars,
    )


def render_source(
    source: str,
    messages: Sequence[ChatMessage],
    *,
    syntax: ToolSyntax,
    functions: list[dict[str, Any]] | None,
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool = True,
    timeout_s: float = RENDER_TIMEOUT_S,
    max_chars: int = MAX_OUTPUT_CHARS,
) -> str:
    """render_chat for a template already chosen, whose tool syntax is `syntax`."""
    limits = Limits(time.monotonic() + timeout_s, timeout_s, max_chars)
    shown, tools = prepare(validate_messages(messages), syntax, functions, source)
    context: dict[str, Any] = {
        "messages": shown,
        "bos_token": bos_token,
        "eos_token": eos_token,
        "add_generation_prompt": add_generation_prompt,
    }
    if tools is not None:  # templates test `tools is defined` / `if tools`
        context["tools"] = tools
    return _render(source, limits, **context)


def validate_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Check roles, contents and tool calls; return the messages as the dicts templates expect."""
    if not messages:
        raise InvalidRequest("messages must not be empty", param=_PARAM)
    check_tool_messages(messages)
    return [_message_dict(i, m) for i, m in enumerate(messages)]


def _message_dict(index: int, message: ChatMessage) -> dict[str, Any]:
    if message.role not in ROLES:
        allowed = ", ".join(sorted(ROLES))
        raise InvalidRequest(
            f"messages[{index}].role {message.role!r} is not one of: {allowed}", param=_PARAM
        )
    if not isinstance(message.content, str):
        raise InvalidRequest(f"messages[{index}].content must be a string", param=_PARAM)
    # An assistant turn may only call tools; a tool may answer with nothing.
    if not message.content and message.role not in ("assistant", "tool"):
        raise InvalidRequest(
            f"messages[{index}].content must not be empty for role {message.role!r}",
            param=_PARAM,
        )
    out: dict[str, Any] = {
        "role": _ROLE_ALIASES.get(message.role, message.role),
        "content": message.content,
    }
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call_arguments(
                        call.arguments, f"messages[{index}].tool_calls[{j}]"
                    ),
                },
            }
            for j, call in enumerate(message.tool_calls)
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def _render(source: str, limits: Limits, **context: Any) -> str:
    token = LIMITS.set(limits)
    try:
        # Streamed, so an oversized output is stopped as it grows rather than once it is built.
        return joined(_compile(source).generate(**context))
    except LimitExceeded as exc:
        raise InvalidRequest(str(exc), param=_PARAM) from exc
    except TemplateSyntaxError as exc:
        raise InvalidRequest(
            f"chat template has a syntax error (line {exc.lineno}): {exc.message}", param=_PARAM
        ) from exc
    except _TemplateRaised as exc:
        raise InvalidRequest(f"chat template rejected the messages: {exc}", param=_PARAM) from exc
    except SecurityError as exc:
        raise InvalidRequest(
            f"chat template attempted an unsafe operation: {exc}", param=_PARAM
        ) from exc
    except Exception as exc:
        # Templates are arbitrary programs; whatever they break on is a property of this request.
        log.info("chat template failed", exc_info=True)
        raise InvalidRequest(
            f"chat template failed: {type(exc).__name__}: {exc}", param=_PARAM
        ) from exc
    finally:
        LIMITS.reset(token)
