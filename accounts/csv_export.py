"""CSV downloads of dashboard tables."""

import csv
from collections.abc import Iterable

from django.http import HttpResponse


def safe_cell(value: object) -> object:
    # Names are user-chosen: keep a spreadsheet from reading "=..." (or + - @) as a formula.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def csv_response(filename: str, header: list[str], rows: Iterable[Iterable[object]]) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(header)
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return response
