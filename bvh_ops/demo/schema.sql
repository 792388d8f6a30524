-- The BrachaVeHatzlacha lottery platform, as bvh-ops' sample: realistic types (numeric money,
-- timestamptz, jsonb, arrays, enums, a domain, bytea, inet, uuid), a partitioned table, an
-- unlogged table, a materialized view and sequences.
CREATE TYPE draw_status AS ENUM ('scheduled', 'open', 'closed', 'cancelled');
CREATE TYPE txn_kind AS ENUM ('deposit', 'withdrawal', 'ticket_purchase', 'prize', 'refund');
CREATE DOMAIN money_amount AS numeric(14, 2);

CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    display_name text NOT NULL,
    phone text,
    country char(2) NOT NULL,
    created_at timestamptz NOT NULL,
    is_active boolean NOT NULL DEFAULT true,
    preferences jsonb NOT NULL DEFAULT '{}',
    tags text[] NOT NULL DEFAULT '{}'
);

CREATE TABLE wallets (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL UNIQUE REFERENCES users (id),
    currency char(3) NOT NULL DEFAULT 'ILS',
    balance money_amount NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL
);

CREATE TABLE draws (
    id serial PRIMARY KEY,
    name text NOT NULL,
    status draw_status NOT NULL,
    draw_at timestamptz NOT NULL,
    jackpot money_amount NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE draw_results (
    draw_id integer PRIMARY KEY REFERENCES draws (id),
    winning_numbers smallint[] NOT NULL,
    bonus smallint NOT NULL,
    published_at timestamptz NOT NULL,
    result_hash bytea
);

CREATE TABLE tickets (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    draw_id integer NOT NULL REFERENCES draws (id),
    numbers smallint[] NOT NULL,
    price money_amount NOT NULL,
    purchased_at timestamptz NOT NULL,
    status text NOT NULL,
    prize money_amount
);
CREATE INDEX tickets_user_idx ON tickets (user_id);
CREATE INDEX tickets_draw_idx ON tickets (draw_id);

CREATE TABLE transactions (
    id bigserial PRIMARY KEY,
    wallet_id bigint NOT NULL REFERENCES wallets (id),
    kind txn_kind NOT NULL,
    amount money_amount NOT NULL,
    created_at timestamptz NOT NULL,
    reference text,
    metadata jsonb
);
CREATE INDEX transactions_wallet_idx ON transactions (wallet_id);
CREATE INDEX transactions_created_idx ON transactions (created_at);

CREATE TABLE payments (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    provider text NOT NULL,
    external_id uuid NOT NULL,
    amount money_amount NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL,
    raw_response jsonb
);

CREATE TABLE admin_actions (
    id bigserial PRIMARY KEY,
    admin_user text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    details jsonb,
    ip inet,
    created_at timestamptz NOT NULL
);

CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    actor text NOT NULL,
    event text NOT NULL,
    entity text NOT NULL,
    entity_id bigint,
    payload jsonb,
    row_hash bytea NOT NULL
);
CREATE INDEX audit_log_time_idx ON audit_log (occurred_at);

CREATE TABLE security_events (
    id bigserial PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    severity smallint NOT NULL,
    kind text NOT NULL,
    source_ip inet,
    user_id bigint,
    details jsonb
);

CREATE TABLE app_logs (
    id bigserial,
    logged_at timestamptz NOT NULL,
    level text NOT NULL,
    service text NOT NULL,
    message text NOT NULL,
    context jsonb,
    PRIMARY KEY (id, logged_at)
) PARTITION BY RANGE (logged_at);
CREATE TABLE app_logs_2026h1 PARTITION OF app_logs FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');
CREATE TABLE app_logs_2026h2 PARTITION OF app_logs FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');
CREATE TABLE app_logs_default PARTITION OF app_logs DEFAULT;

CREATE UNLOGGED TABLE performance_logs (
    id bigserial PRIMARY KEY,
    recorded_at timestamptz NOT NULL,
    endpoint text NOT NULL,
    duration_ms double precision NOT NULL,
    status_code integer NOT NULL
);
