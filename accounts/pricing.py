"""The per-model price table and the cost of one usage row.

Prices are USD per million tokens. A row is priced by its upstream model (what the provider bills),
falling back to the client's model name; an exact name beats a glob, and a longer glob beats a shorter
one ("gpt-4o-mini*" over "gpt-4o*" over "*"). Rows with no matching price cost nothing.

Costs are computed when the usage writer stores a batch of rows, off the request path, with one
small query for the table per batch.
"""

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts import audit
from accounts.models import ModelPrice

PER = Decimal(1_000_000)
COST_PLACES = Decimal("0.00000001")  # UsageRecord.cost_usd has 8 decimal places
PRICE_FIELDS = ("input_per_mtok", "cached_input_per_mtok", "output_per_mtok", "reasoning_per_mtok")


@dataclass(frozen=True, slots=True)
class Price:
    input: Decimal
    cached_input: Decimal
    output: Decimal
    reasoning: Decimal

    @classmethod
    def from_row(cls, row: ModelPrice) -> "Price":
        cached = row.cached_input_per_mtok if row.cached_input_per_mtok is not None else row.input_per_mtok
        reasoning = row.reasoning_per_mtok if row.reasoning_per_mtok is not None else row.output_per_mtok
        return cls(row.input_per_mtok, cached, row.output_per_mtok, reasoning)

    def cost(self, *, input_tokens: int, cached_tokens: int, output_tokens: int, reasoning_tokens: int) -> Decimal:
        # input_tokens counts cached ones too and output_tokens counts reasoning ones (canonical Usage).
        cached = min(cached_tokens, input_tokens)
        reasoning = min(reasoning_tokens, output_tokens)
        total = (
            (input_tokens - cached) * self.input
            + cached * self.cached_input
            + (output_tokens - reasoning) * self.output
            + reasoning * self.reasoning
        )
        return (total / PER).quantize(COST_PLACES)


class PriceTable:
    def __init__(self, rows: Iterable[ModelPrice]) -> None:
        self._exact: dict[str, Price] = {}
        globs: list[tuple[str, Price]] = []
        for row in rows:
            price = Price.from_row(row)
            if any(ch in row.model for ch in "*?["):
                globs.append((row.model, price))
            else:
                self._exact[row.model] = price
        globs.sort(key=lambda item: len(item[0]), reverse=True)
        self._globs = [(re.compile(fnmatch.translate(pattern)), price) for pattern, price in globs]

    def lookup(self, *models: str) -> Price | None:
        for model in models:
            if model and model in self._exact:
                return self._exact[model]
        for model in models:
            if model:
                for pattern, price in self._globs:
                    if pattern.match(model):
                        return price
        return None


def load_table() -> PriceTable:
    return PriceTable(ModelPrice.objects.all())


def apply_costs(rows: Iterable, table: PriceTable | None = None) -> None:
    """Set `cost_usd` on unsaved UsageRecord rows (called by the usage writer before it stores them)."""
    rows = list(rows)
    if not rows:
        return
    table = table or load_table()
    for row in rows:
        price = table.lookup(row.upstream_model, row.client_model)
        if price is not None:
            row.cost_usd = price.cost(input_tokens=row.input_tokens, cached_tokens=row.cached_tokens,
                                      output_tokens=row.output_tokens, reasoning_tokens=row.reasoning_tokens)


# --- writes ----------------------------------------------------------------------------------------


def _check_fields(fields: dict, allowed: set[str]) -> None:
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"not price fields: {', '.join(sorted(unknown))}")


@transaction.atomic
def create_price(model: str, *, actor=None, actor_label: str = "", **prices) -> ModelPrice:
    _check_fields(prices, set(PRICE_FIELDS))
    if ModelPrice.objects.filter(model=model).exists():
        raise ValidationError({"model": f"{model!r} already has a price"})
    row = ModelPrice.objects.create(model=model, **prices)
    audit.record("price.create", row, actor=actor, actor_label=actor_label,
                 details={k: str(v) for k, v in prices.items()})
    return row


@transaction.atomic
def update_price(row: ModelPrice, *, actor=None, actor_label: str = "", **fields) -> ModelPrice:
    """Change a price row, including its model pattern. Rows already stored keep their cost."""
    _check_fields(fields, {*PRICE_FIELDS, "model"})
    if "model" in fields and ModelPrice.objects.filter(model=fields["model"]).exclude(pk=row.pk).exists():
        raise ValidationError({"model": f"{fields['model']!r} already has a price"})
    for name, value in fields.items():
        setattr(row, name, value)
    row.save()
    audit.record("price.update", row, actor=actor, actor_label=actor_label,
                 details={k: str(v) for k, v in fields.items()})
    return row


@transaction.atomic
def delete_price(row: ModelPrice, *, actor=None, actor_label: str = "") -> None:
    audit.record("price.delete", row, actor=actor, actor_label=actor_label)
    row.delete()
