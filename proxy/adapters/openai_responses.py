"""OpenAI Responses: the inbound protocol (`POST /v1/responses`).

Input items (messages, function calls and their outputs, reasoning items) become one canonical
conversation; the Response object and its stream events are built in `openai_responses_output`.
Features that need OpenAI-side state or built-in tools (previous_response_id, conversations,
background runs, file inputs, web/file search) are refused with a 400 naming the field: a gateway in
front of other providers cannot honour them, and silently dropping them would change the answer.
"""

from dataclasses import dataclass
from typing import Any

import orjson

from proxy.adapters import register_client
from proxy.adapters.base import ClientProtocol, InboundCall, StreamEncoder
from proxy.adapters.openai_chat import PASSTHROUGH, openai_error_body
from proxy.adapters.openai_responses_output import ResponsesEncoder, render_response
from proxy.adapters.validation import (
    check_bool,
    check_number,
    check_positive_int,
    require_dict,
    require_list,
    require_str,
)
from proxy.canonical import (
    CanonicalRequest,
    CanonicalResponse,
    GatewayError,
    ImagePart,
    Message,
    ReasoningConfig,
    ReasoningPart,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)

# Request fields that only make sense against OpenAI's own stored state or hosted tools.
REFUSED_FIELDS = {
    "previous_response_id": "send the whole conversation in 'input' instead",
    "conversation": "send the whole conversation in 'input' instead",
    "background": "background responses are not supported by this gateway",
    "prompt": "stored prompt templates are not supported by this gateway",
}
# Echoed back in the Response object the way OpenAI echoes them.
ECHOED = ("instructions", "max_output_tokens", "metadata", "parallel_tool_calls", "reasoning", "store",
          "temperature", "text", "tool_choice", "top_p", "truncation", "user", "service_tier")


def _bad(param: str, message: str) -> GatewayError:
    return GatewayError("invalid_request", message, param=param)


def _text_of(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _bad(path, f"{path} must be a string")
    return value


def _content_parts(content: Any, path: str) -> list:
    """Message content: a string or a list of input_text / input_image / output_text / refusal parts."""
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    parts: list = []
    for i, raw in enumerate(require_list(content, path)):
        item_path = f"{path}[{i}]"
        raw = require_dict(raw, item_path)
        kind = raw.get("type")
        if kind in ("input_text", "output_text", "text", "summary_text"):
            parts.append(TextPart(_text_of(raw.get("text"), f"{item_path}.text")))
        elif kind == "refusal":
            parts.append(TextPart(_text_of(raw.get("refusal", ""), f"{item_path}.refusal")))
        elif kind == "input_image":
            url = raw.get("image_url")
            if not isinstance(url, str) or not url:
                # file_id images live in OpenAI's file store, which no other provider can read.
                raise _bad(f"{item_path}.image_url", "input_image needs an image_url (file_id is not supported)")
            detail = raw.get("detail")
            parts.append(ImagePart.from_url(url, detail if detail in ("low", "high", "auto") else None))
        else:
            raise _bad(f"{item_path}.type", f"unsupported content part type {kind!r}")
    return parts


class _Conversation:
    """Folds the flat Responses item list into alternating canonical messages."""

    def __init__(self) -> None:
        self.system: list[str] = []
        self.messages: list[Message] = []
        self.call_names: dict[str, str] = {}  # call_id -> function name, for providers that need it

    def _append(self, role: str, part: Any) -> None:
        last = self.messages[-1] if self.messages else None
        # Tool results join only other tool results, so a user's own text stays its own message.
        joinable = last is not None and last.role == role and (
            role == "assistant" or isinstance(part, ToolResult) == all(isinstance(p, ToolResult) for p in last.parts)
        )
        if joinable:
            last.parts.append(part)
        else:
            self.messages.append(Message(role, [part]))  # type: ignore[arg-type]

    def message(self, raw: dict, path: str) -> None:
        role = raw.get("role")
        parts = _content_parts(raw.get("content"), f"{path}.content")
        if role in ("system", "developer"):
            self.system.extend(p.text for p in parts if isinstance(p, TextPart))
        elif role in ("user", "assistant"):
            if role == "assistant" and any(isinstance(p, ImagePart) for p in parts):
                raise _bad(f"{path}.content", "assistant messages cannot contain images")
            if role == "user" and not parts:
                return
            if role == "user":
                self.messages.append(Message("user", parts))
            else:
                for part in parts:
                    self._append("assistant", part)
        else:
            raise _bad(f"{path}.role", f"unknown message role {role!r}")

    def function_call(self, raw: dict, path: str) -> None:
        call_id = require_str(raw.get("call_id"), f"{path}.call_id")
        name = require_str(raw.get("name"), f"{path}.name")
        arguments = raw.get("arguments") or "{}"
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        self.call_names[call_id] = name
        self._append("assistant", ToolCall(call_id, name, arguments))

    def function_call_output(self, raw: dict, path: str) -> None:
        call_id = require_str(raw.get("call_id"), f"{path}.call_id")
        output = raw.get("output")
        content = _content_parts(output if output is not None else "", f"{path}.output")
        self._append("user", ToolResult(call_id, content, name=self.call_names.get(call_id)))

    def reasoning(self, raw: dict, path: str) -> None:
        texts = [s.get("text", "") for s in raw.get("summary") or [] if isinstance(s, dict)]
        texts += [c.get("text", "") for c in raw.get("content") or [] if isinstance(c, dict)]
        signature = raw.get("encrypted_content") if isinstance(raw.get("encrypted_content"), str) else None
        if any(texts) or signature:
            self._append("assistant", ReasoningPart("\n\n".join(t for t in texts if t), signature=signature))


def _parse_input(body: dict) -> tuple[str | None, list[Message]]:
    conversation = _Conversation()
    instructions = body.get("instructions")
    if instructions is not None:
        conversation.system.append(_text_of(instructions, "instructions"))
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        conversation.messages.append(Message("user", [TextPart(raw_input)]))
    else:
        for i, raw in enumerate(require_list(raw_input, "input", non_empty=True)):
            path = f"input[{i}]"
            raw = require_dict(raw, path)
            kind = raw.get("type", "message")
            if kind == "message":
                conversation.message(raw, path)
            elif kind == "function_call":
                conversation.function_call(raw, path)
            elif kind == "function_call_output":
                conversation.function_call_output(raw, path)
            elif kind == "reasoning":
                conversation.reasoning(raw, path)
            else:
                raise _bad(f"{path}.type", f"unsupported input item type {kind!r}")
    if not conversation.messages:
        raise _bad("input", "input must contain at least one user message or function call output")
    system = "\n\n".join(s for s in conversation.system if s) or None
    return system, conversation.messages


def _parse_tools(body: dict) -> tuple[list[Tool], ToolChoice | None]:
    tools = []
    for i, raw in enumerate(require_list(body.get("tools") or [], "tools")):
        raw = require_dict(raw, f"tools[{i}]")
        if raw.get("type") != "function":
            raise _bad(f"tools[{i}].type", f"unsupported tool type {raw.get('type')!r}: only function tools are supported")
        tools.append(Tool(require_str(raw.get("name"), f"tools[{i}].name"), raw.get("description") or "",
                          raw.get("parameters") or {"type": "object", "properties": {}}))
    choice = body.get("tool_choice")
    if choice is None:
        return tools, None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise _bad("tool_choice", "tool_choice must be auto, none, required or a function")
        return tools, ToolChoice(choice)
    choice = require_dict(choice, "tool_choice")
    if choice.get("type") != "function":
        raise _bad("tool_choice.type", f"unsupported tool_choice type {choice.get('type')!r}")
    return tools, ToolChoice("tool", require_str(choice.get("name"), "tool_choice.name"))


def _parse_text_format(text: Any) -> ResponseFormat | None:
    if text is None:
        return None
    fmt = require_dict(text, "text").get("format")
    if fmt is None:
        return None
    fmt = require_dict(fmt, "text.format")
    kind = fmt.get("type")
    if kind == "json_schema":
        return ResponseFormat("json_schema", require_dict(fmt.get("schema"), "text.format.schema"),
                              fmt.get("name"), fmt.get("strict"))
    if kind in ("json_object", "text"):
        return ResponseFormat(kind)
    raise _bad("text.format.type", f"unsupported text.format type {kind!r}")


def _parse_reasoning(raw: Any) -> ReasoningConfig | None:
    if raw is None:
        return None
    effort = require_dict(raw, "reasoning").get("effort")
    if effort is None:
        return None
    if effort not in ("none", "minimal", "low", "medium", "high", "xhigh"):
        raise _bad("reasoning.effort", "reasoning.effort must be none, minimal, low, medium, high or xhigh")
    return ReasoningConfig(effort=effort)


@dataclass(slots=True)
class ResponsesCall(InboundCall):
    """The URL-level facts of a Responses call, plus the caller's team (for `store: true`)."""

    team_id: int | None = None


class OpenAIResponsesClient(ClientProtocol):
    name = "openai_responses"

    def parse_request(self, body: Any, call: InboundCall) -> CanonicalRequest:
        body = require_dict(body, "body")
        for field, hint in REFUSED_FIELDS.items():
            if body.get(field):
                raise _bad(field, f"{field} is not supported: {hint}")
        system, messages = _parse_input(body)
        tools, tool_choice = _parse_tools(body)
        store = check_bool(body.get("store"), "store") or False
        extra: dict[str, Any] = {key: body[key] for key in PASSTHROUGH if key in body and key != "n"}
        extra["openai_max_field"] = "max_completion_tokens"
        extra["responses_echo"] = {key: body[key] for key in ECHOED if key in body}
        extra["responses_echo"]["tools"] = body.get("tools") or []
        if store:
            extra["responses_store_team"] = getattr(call, "team_id", None)
        return CanonicalRequest(
            model=require_str(body.get("model"), "model"),
            messages=messages,
            system=system,
            stream=check_bool(body.get("stream"), "stream") or False,
            max_tokens=check_positive_int(body.get("max_output_tokens"), "max_output_tokens"),
            temperature=check_number(body.get("temperature"), "temperature", 0, 2),
            top_p=check_number(body.get("top_p"), "top_p", 0, 1),
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=check_bool(body.get("parallel_tool_calls"), "parallel_tool_calls"),
            response_format=_parse_text_format(body.get("text")),
            reasoning=_parse_reasoning(body.get("reasoning")),
            include_usage=True,
            user=body.get("user") if isinstance(body.get("user"), str) else None,
            extra=extra,
        )

    def render_response(self, response: CanonicalResponse, request: CanonicalRequest) -> dict:
        return render_response(response, request)

    def stream_encoder(self, request: CanonicalRequest, call: InboundCall) -> StreamEncoder:
        return ResponsesEncoder(request)

    def render_error(self, err: GatewayError) -> dict:
        return openai_error_body(err)


register_client(OpenAIResponsesClient())
