"""A database of awkward objects that backup tools get wrong."""

AWKWARD_SQL = r"""
CREATE SCHEMA "Ünïcödé Schema";
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'שמח');
CREATE DOMAIN positive_amount AS numeric(12, 2) CHECK (VALUE >= 0);
CREATE TABLE "Ünïcödé Schema"."Weird ""Quoted"" Table" (
    "Column With Space" text, "שם" text, mood mood, amount positive_amount
);
INSERT INTO "Ünïcödé Schema"."Weird ""Quoted"" Table"
VALUES ('a b', 'ברכה והצלחה', 'שמח', 1.50), (NULL, '', 'ok', 0), ('tab	and
newline', 'x', NULL, NULL);
CREATE TABLE floats (id int, f float8, r real, n numeric);
INSERT INTO floats VALUES (1, 'NaN', 'NaN', 'NaN'), (2, 'Infinity', '-Infinity', 'Infinity'),
    (3, -0.0, 1e-38, 123456789012345678901234567890.123456789), (4, 0.1, 0.1, -1);
CREATE TABLE arrays_and_bytes (id int, a int[], t text[], b bytea, j jsonb, nested int[][]);
INSERT INTO arrays_and_bytes VALUES
    (1, '{1,2,NULL}', '{"a,b","c\"d",NULL}', '\x00ff00deadbeef', '{"k": [1, 2, {"x": null}]}', '{{1,2},{3,4}}'),
    (2, '{}', '{}', '', 'null', NULL);
CREATE TABLE dupes (v text, n int);
INSERT INTO dupes VALUES ('same', 1), ('same', 1), ('same', 1), ('other', 2);
CREATE TABLE empty_table (id int PRIMARY KEY, note text);
CREATE UNLOGGED TABLE unlogged_cache (k text PRIMARY KEY, v jsonb);
INSERT INTO unlogged_cache SELECT 'k' || g, jsonb_build_object('g', g) FROM generate_series(1, 50) g;
CREATE TABLE measurements (id bigint, at timestamptz, v float8) PARTITION BY RANGE (at);
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO measurements SELECT g, timestamptz '2025-06-01' + g * interval '1 day', g / 3.0 FROM generate_series(1, 400) g;
CREATE TABLE times (t timestamptz, d date, i interval, tt time with time zone);
INSERT INTO times VALUES ('infinity', '-infinity', '1 year 2 mons 3 days 04:05:06.789', '12:00+03'),
    ('2026-11-27 02:00:00.123456+02', '2028-02-29'::date, '-1 day', '00:00Z');
CREATE MATERIALIZED VIEW mood_counts AS SELECT mood, count(*) FROM "Ünïcödé Schema"."Weird ""Quoted"" Table" GROUP BY 1;
SELECT lo_from_bytea(0, '\x48656c6c6f2c206c6f7474657279');
SELECT lo_from_bytea(0, '');
"""
