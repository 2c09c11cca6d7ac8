"""OpenAPI post-processing: document the error answers every management-API operation can give.

drf-spectacular documents success responses only; clients (and the schemathesis run in the tests) also
need to know that 400 carries field-keyed messages and 401/403/404 a `detail` string.
"""

ERROR_RESPONSES = {
    "400": ("Invalid input: messages keyed by field (or non_field_errors)", "ValidationErrors"),
    "401": ("No or invalid credentials", "ErrorDetail"),
    "403": ("Your role does not allow this", "ErrorDetail"),
    "404": ("Not found, or not yours to see", "ErrorDetail"),
}
COMPONENTS = {
    "ErrorDetail": {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]},
    "ValidationErrors": {"type": "object", "additionalProperties": {}},
}
METHODS = ("get", "post", "put", "patch", "delete")


def add_error_responses(result: dict, generator, request, public) -> dict:
    """A drf-spectacular POSTPROCESSING_HOOKS entry."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(COMPONENTS)
    for path, item in result.get("paths", {}).items():
        if not path.startswith("/api/") or path == "/api/schema/":
            continue
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status, (description, component) in ERROR_RESPONSES.items():
                responses.setdefault(status, {
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}},
                })
    return result
