"""Chat template selection, rendering of the built-ins and the real SmolLM2 template, and errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from core.chat.templates import (
    BUILTIN_TEMPLATES,
    fallback_name,
    render_chat,
    select_template,
)
from core.chat.types import ChatMessage
from core.errors import InvalidRequest

SYS_USER = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi!")]
MULTI_TURN = [
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "Hi!"),
    ChatMessage("assistant", "Hello."),
    ChatMessage("user", "Bye?"),
]


@pytest.fixture(scope="session")
def smollm2_template(default_model_path: Path) -> str:
    from gguf import GGUFReader

    field = GGUFReader(default_model_path).fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def render(
    messages: list[ChatMessage],
    *,
    model_template: str | None = None,
    architecture: str = "llama",
    override: str | None = None,
    add_generation_prompt: bool = True,
) -> str:
    return render_chat(
        messages,
        model_template=model_template,
        architecture=architecture,
        override=override,
        bos_token="<s>",
        eos_token="</s>",
        add_generation_prompt=add_generation_prompt,
    )


def test_smollm2_template_system_and_user(smollm2_template: str) -> None:
    text = render(SYS_USER, model_template=smollm2_template)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_smollm2_template_adds_its_default_system_prompt(smollm2_template: str) -> None:
    text = render([ChatMessage("user", "Hi!")], model_template=smollm2_template)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")


def test_smollm2_template_without_generation_prompt(smollm2_template: str) -> None:
    text = render(SYS_USER, model_template=smollm2_template, add_generation_prompt=False)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"


BUILTIN_CASES = [
    (
        "chatml",
        MULTI_TURN,
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\nBye?<|im_end|>\n"
        "<|im_start|>assistant\n",
    ),
    (
        "gemma",
        MULTI_TURN,
        "<s><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nBye?<end_of_turn>\n"
        "<start_of_turn>model\n",
    ),
    (
        "gemma",
        [ChatMessage("system", "Only this.")],
        "<s><start_of_turn>user\nOnly this.<end_of_turn>\n<start_of_turn>model\n",
    ),
    (
        "llama3",
        MULTI_TURN,
        "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    (
        "llama2",
        MULTI_TURN,
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] Bye? [/INST]",
    ),
    ("llama2", [ChatMessage("user", "Hi!")], "<s>[INST] Hi! [/INST]"),
]


@pytest.mark.parametrize(("name", "messages", "expected"), BUILTIN_CASES)
def test_builtin_renders_exactly(name: str, messages: list[ChatMessage], expected: str) -> None:
    assert render(messages, override=name) == expected


@pytest.mark.parametrize(
    ("name", "expected_tail"),
    [
        ("chatml", "<|im_end|>\n"),
        ("gemma", "<end_of_turn>\n"),
        ("llama3", "<|eot_id|>"),
    ],
)
def test_builtin_without_generation_prompt(name: str, expected_tail: str) -> None:
    text = render(SYS_USER, override=name, add_generation_prompt=False)
    assert text.endswith("Hi!" + expected_tail)


def test_llama2_rejects_non_alternating_roles() -> None:
    messages = [ChatMessage("user", "a"), ChatMessage("user", "b")]
    with pytest.raises(InvalidRequest, match="roles must alternate") as info:
        render(messages, override="llama2")
    assert info.value.param == "messages"


@pytest.mark.parametrize(
    ("architecture", "name"),
    [
        ("qwen2", "chatml"),
        ("qwen3moe", "chatml"),
        ("smollm3", "chatml"),
        ("gemma3", "gemma"),
        ("Gemma2", "gemma"),
        ("llama", "llama3"),
        ("mistral3", "chatml"),
        ("", "chatml"),
    ],
)
def test_fallback_by_architecture(architecture: str, name: str) -> None:
    assert fallback_name(architecture) == name
    source = select_template(model_template=None, architecture=architecture, override=None)
    assert source == BUILTIN_TEMPLATES[name]


CUSTOM = "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"


@pytest.mark.parametrize(
    ("model_template", "architecture", "override", "expected"),
    [
        # The override wins over the model's template, by built-in name or as Jinja source.
        ("MODEL", "gemma3", "chatml", BUILTIN_TEMPLATES["chatml"]),
        ("MODEL", "gemma3", CUSTOM, CUSTOM),
        # Then the model's own template, whatever the architecture.
        ("MODEL", "gemma3", None, "MODEL"),
        ("MODEL", "llama", None, "MODEL"),
        # Then the architecture's built-in.
        (None, "gemma3", None, BUILTIN_TEMPLATES["gemma"]),
        ("", "qwen2", "", BUILTIN_TEMPLATES["chatml"]),
    ],
)
def test_template_precedence(
    model_template: str | None, architecture: str, override: str | None, expected: str
) -> None:
    got = select_template(
        model_template=model_template, architecture=architecture, override=override
    )
    assert got == expected


def test_override_template_string_renders(smollm2_template: str) -> None:
    text = render(SYS_USER, model_template=smollm2_template, override=CUSTOM)
    assert text == "[system:Be brief.][user:Hi!]"


def test_variables_passed_to_templates() -> None:
    template = (
        "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|"
        "{% for m in messages %}{{ m.role }}={{ m.name | default('-') }};{% endfor %}"
    )
    messages = [
        ChatMessage("developer", "rules"),
        ChatMessage("user", "q", name="ann"),
        ChatMessage("tool", "42"),
        ChatMessage("assistant", ""),
    ]
    text = render(messages, override=template, add_generation_prompt=False)
    # A template that shows no tool turns gets a tool result as a user turn, joined with the
    # user turn before it (templates may insist on alternating roles).
    assert text == "<s>|</s>|False|system=-;user=-;assistant=-;"


def test_trim_and_lstrip_blocks_like_transformers() -> None:
    template = (
        "{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}"
    )
    assert render(SYS_USER, override=template) == "Be brief.\nHi!\n"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ messages[1] | tojson }}", '{"role": "user", "content": "Hi!"}'),
        ("{{ '<é>' | tojson }}", '"<é>"'),
        ("{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}", '{"a": 2, "b": 1}'),
        ("{{ [1, 2] | tojson(indent=2) }}", "[\n  1,\n  2\n]"),
        ("{{ strftime_now('%Y') | length }}", "4"),
        (
            "{% for m in messages %}{% if loop.first %}{% continue %}{% endif %}"
            "{{ m.content }}{% endfor %}",
            "Hi!",
        ),
    ],
)
def test_helpers_available_to_templates(template: str, expected: str) -> None:
    assert render(SYS_USER, override=template) == expected


def test_raise_exception_becomes_invalid_request() -> None:
    template = (
        "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}"
    )
    with pytest.raises(InvalidRequest) as info:
        render(SYS_USER, override=template)
    assert info.value.param == "messages"
    assert "first must be user" in info.value.message


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__.__init__.__globals__ }}",
        "{{ raise_exception.__globals__['__builtins__'] }}",
        "{% set _ = messages.append({'role': 'x'}) %}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    ],
)
def test_sandbox_escape_becomes_invalid_request(template: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        render(SYS_USER, override=template)
    assert info.value.param == "messages"
    assert "unsafe" in info.value.message


def test_syntax_error_becomes_invalid_request() -> None:
    with pytest.raises(InvalidRequest) as info:
        render(SYS_USER, override="{% for m in messages %}{{ m.content }}")
    assert info.value.param == "messages"
    assert "syntax error" in info.value.message


def test_other_render_error_becomes_invalid_request() -> None:
    with pytest.raises(InvalidRequest) as info:
        render(SYS_USER, override="{{ 1 // 0 }}")
    assert info.value.param == "messages"
    assert "ZeroDivisionError" in info.value.message


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([], "messages must not be empty"),
        ([ChatMessage("wizard", "x")], "'wizard' is not one of"),
        ([ChatMessage("user", "a"), ChatMessage("User", "b")], "messages[1].role 'User'"),
        ([ChatMessage("user", "")], "messages[0].content must not be empty"),
        ([ChatMessage("system", "")], "messages[0].content must not be empty"),
        ([ChatMessage("user", 5)], "messages[0].content must be a string"),  # type: ignore[arg-type]
    ],
)
def test_invalid_messages(messages: list[ChatMessage], fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        render(messages, override="chatml")
    assert info.value.param == "messages"
    assert fragment in info.value.message


def test_empty_assistant_content_is_allowed() -> None:
    messages = [ChatMessage("user", "Hi!"), ChatMessage("assistant", "")]
    text = render(messages, override="chatml", add_generation_prompt=False)
    assert text == "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"


def test_concurrent_renders_agree() -> None:
    results: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        text = render(
            [ChatMessage("user", f"n{i}")], override=f"{{{{ messages[0].content }}}}-{i % 3}"
        )
        with lock:
            results.append(text)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(f"n{i}-{i % 3}" for i in range(24))
