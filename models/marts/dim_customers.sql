with order_totals as (
    select
        customer_id,
        count(*) as order_count,
        min(placed_at) as first_order_at,
        max(placed_at) as last_order_at,
        sum(case when status not in ('cancelled', 'refunded') then total else 0 end) as lifetime_value
    from {{ ref('stg_orders') }}
    group by customer_id
)
select
    c.customer_id,
    c.email,
    c.full_name,
    c.country,
    c.created_at,
    c.marketing_opt_in,
    c.loyalty_points,
    coalesce(o.order_count, 0) as order_count,
    o.first_order_at,
    o.last_order_at,
    coalesce(o.lifetime_value, 0) as lifetime_value
from {{ ref('stg_customers') }} c
left join order_totals o on o.customer_id = c.customer_id
