"""Table and column names the consistency check reads: the contract's by default, each one
overridable (`--schema-overrides "ledger_entries=ledger,ledger_entries.balanceAfter=balance_after"`),
always quoted with psycopg.sql so a camelCase or reserved name is safe."""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql

# logical table -> {logical column: default physical name}
DEFAULT_SCHEMA: dict[str, dict[str, str]] = {
    "wallets": {"id": "id", "balance": "balance", "version": "version"},
    "wallets_read_model": {"id": "id", "balance": "balance"},
    "ledger_entries": {
        "id": "id",
        "walletId": "walletId",
        "transactionType": "transactionType",
        "amount": "amount",
        "description": "description",
        "balanceBefore": "balanceBefore",
        "balanceAfter": "balanceAfter",
        "referenceId": "referenceId",
        "relatedWalletId": "relatedWalletId",
        "metadata": "metadata",
        "createdAt": "createdAt",
    },
    "outbox": {
        "id": "id",
        "aggregate_id": "aggregate_id",
        "event_type": "event_type",
        "event_version": "event_version",
        "payload": "payload",
        "metadata": "metadata",
        "created_at": "created_at",
    },
    "outbox_consumer_processing": {
        "outbox_event_id": "outbox_event_id",
        "consumer_name": "consumer_name",
        "processed_at": "processed_at",
    },
    "projector_checkpoints": {
        "projector_name": "projector_name",
        "last_processed_id": "last_processed_id",
    },
}
CONSUMERS = ("read-model-projector", "ledger-projector")


class SchemaError(ValueError):
    pass


@dataclass(frozen=True)
class Schema:
    tables: dict[str, str] = field(default_factory=lambda: {t: t for t in DEFAULT_SCHEMA})
    columns: dict[str, dict[str, str]] = field(
        default_factory=lambda: {t: dict(cols) for t, cols in DEFAULT_SCHEMA.items()}
    )
    db_schema: str = "public"

    @classmethod
    def with_overrides(cls, text: str | None) -> Schema:
        """Parse 'table=name,table.column=name' pairs over the contract's defaults."""
        schema = cls()
        for item in (text or "").split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            if not sep or not value.strip():
                raise SchemaError(f"schema override {item!r} is not NAME=VALUE")
            table, _, column = key.strip().partition(".")
            if table not in DEFAULT_SCHEMA:
                raise SchemaError(f"schema override {item!r}: unknown table {table!r}")
            if column:
                if column not in DEFAULT_SCHEMA[table]:
                    raise SchemaError(f"schema override {item!r}: unknown column {column!r}")
                schema.columns[table][column] = value.strip()
            else:
                schema.tables[table] = value.strip()
        return schema

    def table(self, logical: str) -> sql.Identifier:
        return sql.Identifier(self.db_schema, self.tables[logical])

    def col(
        self, logical_table: str, logical_column: str, alias: str | None = None
    ) -> sql.Composable:
        name = sql.Identifier(self.columns[logical_table][logical_column])
        return sql.SQL("{}.{}").format(sql.Identifier(alias), name) if alias else name

    def physical(self, logical: str) -> str:
        return f"{self.db_schema}.{self.tables[logical]}"
