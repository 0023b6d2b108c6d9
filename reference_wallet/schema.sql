-- The Wallex schema from shared/wallet-api-contract.md, plus two tables of the reference
-- implementation's own (events, outbox_pending). Idempotent: applied at every start-up.

DO $$ BEGIN
    CREATE TYPE wallets_status_enum AS ENUM ('ACTIVE', 'SUSPENDED', 'CLOSED');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

DO $$ BEGIN
    CREATE TYPE ledger_entries_transactiontype_enum AS ENUM ('CREDIT', 'DEBIT', 'TRANSFER_OUT', 'TRANSFER_IN');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- Write side, updated by the command handlers in the same transaction as the events.
CREATE TABLE IF NOT EXISTS wallets (
    id                varchar(255) PRIMARY KEY,
    owner_id          varchar(255) NOT NULL,
    balance           numeric(19, 4) NOT NULL DEFAULT 0,
    held_balance      numeric(19, 4) NOT NULL DEFAULT 0,
    available_balance numeric(19, 4) NOT NULL DEFAULT 0,
    status            wallets_status_enum NOT NULL DEFAULT 'ACTIVE',
    version           integer NOT NULL DEFAULT 0,
    currency          varchar(3) NOT NULL DEFAULT 'USD',
    metadata          jsonb,
    created_at        timestamp NOT NULL DEFAULT now(),
    updated_at        timestamp NOT NULL DEFAULT now()
);

-- The event store. The real service keeps its events in KurrentDB; the reference keeps them here.
-- UNIQUE (stream_id, version) is the expected-version check: a stale writer cannot append.
CREATE TABLE IF NOT EXISTS events (
    id         uuid PRIMARY KEY,
    stream_id  varchar(255) NOT NULL,
    version    integer NOT NULL,
    event_type varchar(64) NOT NULL,
    payload    jsonb NOT NULL,
    metadata   jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, version)
);

CREATE TABLE IF NOT EXISTS wallets_read_model (
    id         varchar(255) PRIMARY KEY,
    owner_id   varchar(255) NOT NULL,
    balance    numeric(20, 2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ledger_entries (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "walletId"        varchar NOT NULL,
    "transactionType" ledger_entries_transactiontype_enum NOT NULL,
    amount            numeric(20, 2) NOT NULL,
    "balanceBefore"   numeric(20, 2) NOT NULL,
    "balanceAfter"    numeric(20, 2) NOT NULL,
    description       varchar,
    "referenceId"     varchar NOT NULL UNIQUE,
    "relatedWalletId" varchar,
    metadata          jsonb,
    "createdAt"       timestamp NOT NULL DEFAULT now()
);
-- The ledger projector finds a wallet's last entry by event version; so does the checker.
CREATE INDEX IF NOT EXISTS ledger_entries_wallet_version_idx
    ON ledger_entries ("walletId", ((metadata ->> 'eventVersion')::integer));

CREATE TABLE IF NOT EXISTS outbox (
    id            bigserial PRIMARY KEY,
    aggregate_id  varchar(255) NOT NULL,
    event_type    varchar(64) NOT NULL,
    event_version integer NOT NULL,
    payload       jsonb NOT NULL,
    metadata      jsonb,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    processed_at  timestamptz,
    consumer      varchar(64),
    UNIQUE (aggregate_id, event_version, event_type)
);

CREATE TABLE IF NOT EXISTS outbox_consumer_processing (
    id              bigserial PRIMARY KEY,
    outbox_event_id bigint NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    consumer_name   text NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (outbox_event_id, consumer_name)
);

CREATE TABLE IF NOT EXISTS projector_checkpoints (
    projector_name         varchar(64) PRIMARY KEY,
    aggregate_id           varchar(255),
    last_processed_version integer,
    last_processed_id      bigint,
    last_processed_at      timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    metadata               jsonb
);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    key          varchar(255) PRIMARY KEY,
    request_hash varchar(64) NOT NULL,
    response     jsonb,
    status       varchar(16) NOT NULL CHECK (status IN ('pending', 'completed', 'failed')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL DEFAULT now() + interval '24 hours'
);
-- The reference's own: the backend pid of the connection a pending key was claimed on, so that a
-- retry after the claimant died (its process killed, the database restarted) need not wait.
-- (Looked up first: ALTER TABLE would lock the table against a running service at every start.)
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name = 'idempotency_keys'
                      AND column_name = 'claimed_by') THEN
        ALTER TABLE idempotency_keys ADD COLUMN claimed_by integer;
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS holds (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    wallet_id  varchar(255) NOT NULL REFERENCES wallets (id) ON DELETE CASCADE,
    amount     numeric(19, 4) NOT NULL,
    status     varchar(16) NOT NULL DEFAULT 'ACTIVE',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The reference's own work queue: one row per outbox event per consumer, written with the outbox
-- row and deleted when that consumer claims it. Claiming from here stays cheap however long the
-- outbox grows, where an anti-join against outbox_consumer_processing would not.
CREATE TABLE IF NOT EXISTS outbox_pending (
    consumer_name   text NOT NULL,
    outbox_event_id bigint NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    PRIMARY KEY (consumer_name, outbox_event_id)
);
