-- One row per calendar day, generated (no source table): DataFusion's generate_series
-- over dates includes both ends.
with days as (
    select unnest(generate_series(
        DATE '{{ var("date_spine_start") }}',
        DATE '{{ var("date_spine_end") }}',
        INTERVAL '1 day'
    )) as date_day
)
select
    date_day,
    cast(date_part('year', date_day) as int) as year,
    cast(date_part('quarter', date_day) as int) as quarter,
    cast(date_part('month', date_day) as int) as month,
    cast(date_part('day', date_day) as int) as day_of_month,
    cast(date_part('dow', date_day) as int) as day_of_week,
    date_part('dow', date_day) in (0, 6) as is_weekend,
    cast(date_trunc('month', date_day) as date) as month_start
from days
