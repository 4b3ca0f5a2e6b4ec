-- When each stage finished, for per-stage latency (metrics, the benchmark).
alter table matches add column generated_at timestamptz, add column judged_at timestamptz;
